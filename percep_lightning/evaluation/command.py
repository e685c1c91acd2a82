"""The ``evaluate`` and ``stats`` subcommands of ``percep-lightning`` (parsers here import no torch).

Exit status: 0 on success, 2 for bad input (the message says what and where) and for missing offline
weights. The output paths and every weights file are checked before any image is read or any network
built; nothing is written unless the whole evaluation succeeded, and the table is printed even when
writing a file fails afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from percep_lightning.evaluation.errors import EvaluationError
from percep_lightning.evaluation.table import METRICS, PRESETS, MetricSpec, resolve_metrics

__all__ = ["add_evaluate_parser", "add_stats_parser", "run_evaluate", "run_stats"]

_ALIASES = {"inception": "inception_fid"}
"""``--weights`` names that differ from the keys of :data:`~percep_lightning.backbones.WEIGHTS`."""
_WEIGHTS_HELP = (
    "weights files as NAME=PATH, for machines without the pretrained files in the cache: inception=, "
    "alexnet=, vgg16=, vgg19=, art_inception= (the names of `percep-lightning weights list`); NAME=random "
    "builds that network with random weights (smoke tests: its values are not comparable to published ones)"
)
STYLEID_NOTE = (
    "styleid reproduces StyleID's eval_artfid.py --mode art_fid (plain FID). StyleID's default mode, "
    "art_fid_inf, reports FID-infinity instead: with 5,000 or fewer stylized images every one of its "
    "subsets is the whole set, so its FID-infinity (and ArtFID_inf) equals this FID (and artfid); above "
    "5,000 it fits a line through 8 points (its num_workers lands in num_points) over unseeded shuffles, "
    "which no other run reproduces. This command has no FID-infinity row."
)
"""The note on StyleID's ``art_fid_inf`` mode shown under the presets in ``evaluate --help``."""


def default_num_workers(most: int = 4) -> int:
    """The default ``--num-workers``: ``most``, but no more than the CPU cores this process may use.

    PyTorch warns when a DataLoader has more workers than usable cores (``os.sched_getaffinity``, where
    the platform has it; ``os.cpu_count`` otherwise).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(most, cores))


def _weights_pairs(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or ():
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise EvaluationError(
                f"Expected --weights entries as NAME=PATH (e.g. inception=pt_inception.pth, or "
                f"alexnet=random), but got {item!r}."
            )
        out[name] = path
    return out


def _option_pairs(values: list[str] | None) -> dict[str, dict[str, object]]:
    """``{metric: {key: value}}`` from ``--option METRIC.KEY=VALUE`` entries (the registry checks the values).

    Example:
        >>> _option_pairs(["prdc.k=3", "prdc.features=clip", "fd_dinov2_inf.min_samples=none"])
        {'prdc': {'k': 3, 'features': 'clip'}, 'fd_dinov2_inf': {'min_samples': None}}
    """
    out: dict[str, dict[str, object]] = {}
    for item in values or ():
        key, sep, text = item.partition("=")
        metric, dot, option = key.partition(".")
        if not (sep and dot and metric and option and text):
            raise EvaluationError(
                f"Expected --option entries as METRIC.KEY=VALUE (e.g. prdc.k=3), but got {item!r}."
            )
        value: object = text
        if text.lower() in ("none", "null"):
            value = None
        elif text.lstrip("-").isdigit():
            value = int(text)
        out.setdefault(metric, {})[option] = value
    return out


def check_output_path(path: str | os.PathLike[str], flag: str) -> None:
    """Check, before any work, that a file can be written at ``path``: an existing, writable folder.

    Args:
        path: the file the command will write at the end.
        flag: the option that named it, for the message (``--json``, ``--per-image``, ``-o``).

    Raises:
        EvaluationError: if ``path`` is a folder, its folder does not exist or is not a folder, or the
            folder is not writable.
    """
    target = Path(path).expanduser()
    folder = target.resolve().parent
    where = f"Cannot write {flag} {str(path)!r}"
    if target.is_dir():
        raise EvaluationError(f"{where}: it is a folder; give the name of a file to write.")
    if not folder.is_dir():
        raise EvaluationError(f"{where}: folder {str(folder)!r} does not exist.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EvaluationError(f"{where}: folder {str(folder)!r} is not writable.")


def _check_outputs(outputs: Mapping[str, str | None]) -> None:
    """:func:`check_output_path` for each given ``{flag: path}``, and no two flags on one file."""
    given = {flag: path for flag, path in outputs.items() if path}
    seen: dict[Path, str] = {}
    for flag, path in given.items():
        check_output_path(path, flag)
        resolved = Path(path).expanduser().resolve()
        if resolved in seen:
            raise EvaluationError(f"{seen[resolved]} and {flag} name the same file {str(path)!r}.")
        seen[resolved] = flag


def _all_missing_weights(needed: Iterable[str], given: Mapping[str, str], first: Exception) -> Exception:
    """The error for a run that lacks a weights file: every missing file at once, in command-line words.

    The evaluation stops at the first file it cannot fetch (after its checks of the folders, before any
    network is built); this looks up every file the metrics need, so one run says everything to copy.

    Returns:
        A :class:`~percep_lightning.backbones.weights.MissingWeightsError` naming each missing file with
        its expected path and URL, or ``first`` if the files are all there now.
    """
    from percep_lightning.backbones.weights import WEIGHTS, MissingWeightsError, fetch_all

    overrides = {
        _ALIASES.get(name, name): None if path == "random" else path
        for name, path in given.items()
        if _ALIASES.get(name, name) in WEIGHTS
    }
    try:
        fetch_all([_ALIASES.get(name, name) for name in needed], overrides, command_line=True)
    except MissingWeightsError as err:
        return err
    return first


@contextlib.contextmanager
def _every_missing_weights(needed: Iterable[str], given: Mapping[str, str]) -> Iterator[None]:
    """Turn the evaluation's error for its first missing weights file into one naming every missing file."""
    from percep_lightning.backbones.weights import WeightsUnavailableError

    try:
        yield
    except WeightsUnavailableError as err:
        raise _all_missing_weights(needed, given, err) from err


def _needed_weights(specs: list[MetricSpec]) -> list[str]:
    """The weights names of the metrics, in order, without repeats."""
    return list(dict.fromkeys(name for spec in specs for name in spec.weights))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recursive", action="store_true", help="also read images in sub-folders")
    parser.add_argument("--batch-size", type=int, default=16, help="images per network batch (default 16)")
    workers = default_num_workers()
    parser.add_argument(
        "--num-workers",
        type=int,
        default=workers,
        help=f"DataLoader workers decoding images (default: 4, or the usable CPU cores if fewer; {workers} here)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument(
        "--resize",
        default="tensorflow",
        help="Inception resize: tensorflow (torch-fidelity, default), bilinear, ... (FIDInceptionV3's modes)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


class _ListMetrics(argparse.Action):
    """``--list-metrics``: the registry's names, one per line with a short description (as ``--version`` exits)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from percep_lightning.metrics.registry import describe

        print("\n".join(describe()))
        parser.exit()


def add_evaluate_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the subcommands of the ``percep-lightning`` parser."""
    lines = [f"  {spec.name:<14}{spec.description}" for spec in METRICS.values()]
    presets = [f"  {name:<14}{', '.join(names)}" for name, names in PRESETS.items()]
    parser = commands.add_parser(
        "evaluate",
        help="metrics of a folder of images against reference folders",
        description="Compute image metrics over folders: paired ones per same-named (or sorted) pair, FID/IS/KID over "
        "whole folders. Run it under `torchrun --nproc_per_node=G -m percep_lightning evaluate ...` to shard.",
        epilog="metrics:\n"
        + "\n".join(lines)
        + "\npresets:\n"
        + "\n".join(presets)
        + "\n\n"
        + textwrap.fill(STYLEID_NOTE, width=100),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--list-metrics",
        action=_ListMetrics,
        help="print every metric name with a short description, and exit",
    )
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="the predicted / generated / stylized images")
    parser.add_argument(
        "target", metavar="TARGET", nargs="?", help="reference folder, or an .npz of FID statistics"
    )
    parser.add_argument("--content", help="content images (StyleID's LPIPS and CFSD)")
    parser.add_argument("--style", help="style images (StyleID's FID)")
    parser.add_argument("--metrics", help="comma-separated metric names (see below)")
    parser.add_argument("--preset", help=f"one of {', '.join(PRESETS)}")
    _add_settings(parser)
    parser.add_argument("--weights", nargs="+", metavar="NAME=PATH", help=_WEIGHTS_HELP)
    parser.add_argument(
        "--option",
        nargs="+",
        metavar="METRIC.KEY=VALUE",
        help="a metric's option (e.g. prdc.k=3 prdc.features=clip fd_dinov2_inf.min_samples=none); "
        "integers are read as such, none/null as None",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="write values, counts, settings, weights hashes and versions"
    )
    parser.add_argument(
        "--per-image", metavar="FILE.csv", help="write the per-pair values of the paired metrics"
    )
    _common(parser)
    return parser


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """``evaluate``'s pairing, per-metric settings and cache options."""
    parser.add_argument(
        "--pair-by",
        choices=("name", "sorted"),
        default="name",
        help="pair files by relative name or sorted order",
    )
    parser.add_argument("--is-splits", type=int, default=10, help="Inception Score splits (default 10)")
    parser.add_argument(
        "--styleid-size",
        type=int,
        default=512,
        help="shorter side StyleID resizes images to before lpips_content, lpips_gray and fid_art (default 512)",
    )
    parser.add_argument(
        "--cache-dir",
        help="folder of the cached TARGET statistics (default $TORCH_HOME/percep_lightning/real_stats)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="neither reuse nor store the TARGET folder's statistics"
    )
    parser.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (default 100)")
    parser.add_argument(
        "--kid-subset-size", type=int, default=1000, help="images per set in a KID subset (default 1000)"
    )
    parser.add_argument(
        "--crop-border", type=int, default=0, help="pixels cropped on every side before PSNR/SSIM"
    )


def add_stats_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``stats`` to the subcommands of the ``percep-lightning`` parser."""
    parser = commands.add_parser(
        "stats",
        help="FID statistics of a folder as a pytorch-fid .npz",
        description="Write mu and sigma of the Inception pool3 features of DIR (pytorch-fid format); the file can "
        "be TARGET of `percep-lightning evaluate`.",
    )
    parser.add_argument("dir", metavar="DIR", help="folder of images")
    parser.add_argument("-o", "--output", required=True, help="the .npz file to write")
    parser.add_argument(
        "--weights",
        nargs="+",
        metavar="NAME=PATH",
        help="inception=PATH: a local copy of the FID Inception file; inception=random for random weights "
        "(smoke tests: the statistics are not comparable to published ones)",
    )
    _common(parser)
    return parser


@contextlib.contextmanager
def _short_warnings() -> Iterator[None]:
    """Print each distinct warning once, as ``warning: message`` (no source line), on rank zero only under
    ``torchrun`` (every process runs the same checks and would repeat it)."""
    rank_zero = int(os.environ.get("RANK", "0")) == 0
    shown: set[str] = (
        set()
    )  # once per command run (Python's "once" filter remembers across runs in a process)

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if rank_zero and str(message) not in shown:
            shown.add(str(message))
            print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from percep_lightning.backbones.weights import WeightsUnavailableError

    try:
        return run(args)
    except (EvaluationError, WeightsUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run_evaluate(args: argparse.Namespace) -> int:
    """Handle ``percep-lightning evaluate``; returns the exit status."""
    return _guarded(_evaluate, args)


def run_stats(args: argparse.Namespace) -> int:
    """Handle ``percep-lightning stats``; returns the exit status."""
    return _guarded(_stats, args)


def _evaluate(args: argparse.Namespace) -> int:
    specs = resolve_metrics(args.metrics, args.preset)
    if args.per_image and not any(spec.paired for spec in specs):
        raise EvaluationError("--per-image needs a paired metric (psnr, ssim, ms_ssim, lpips, cfsd, ...).")
    _check_outputs({"--json": args.json, "--per-image": args.per_image})
    weights = _weights_pairs(args.weights)
    from percep_lightning.evaluation.report import format_table, write_csv, write_json
    from percep_lightning.evaluation.runner import evaluate_report

    with _short_warnings(), _every_missing_weights(_needed_weights(specs), weights):
        report = evaluate_report(
            args.pred_dir,
            args.target,
            content=args.content,
            style=args.style,
            metrics=args.metrics,
            preset=args.preset,
            pair_by=args.pair_by,
            recursive=args.recursive,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
            resize=args.resize,
            crop_border=args.crop_border,
            is_splits=args.is_splits,
            kid_subsets=args.kid_subsets,
            kid_subset_size=args.kid_subset_size,
            styleid_size=args.styleid_size,
            cache=not args.no_cache,
            cache_dir=args.cache_dir,
            weights=weights,
            options=_option_pairs(args.option),
            progress=not args.no_progress,
        )
    if report.rank != 0:
        return 0
    print(format_table(report), flush=True)  # first: a file that cannot be written loses no results
    try:
        if args.json:
            write_json(report, args.json)
        if args.per_image:
            write_csv(report, args.per_image)
    except OSError as err:
        raise EvaluationError(f"The values are above, but writing an output file failed: {err}") from err
    return 0


def _stats(args: argparse.Namespace) -> int:
    _check_outputs({"-o": args.output})
    weights = _weights_pairs(args.weights)
    unknown = [name for name in weights if name not in ("inception", "inception_fid")]
    if unknown:
        raise EvaluationError(f"`stats` takes only inception=PATH in --weights, but got {unknown}.")
    path = weights.get("inception", weights.get("inception_fid", "default"))
    from percep_lightning.evaluation.runner import folder_statistics

    with _short_warnings(), _every_missing_weights(["inception"], weights):
        n = folder_statistics(
            args.dir,
            args.output,
            recursive=args.recursive,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
            resize=args.resize,
            weights=None if path == "random" else path,
            progress=not args.no_progress,
        )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote FID statistics of {n} images to {args.output}")
    return 0
