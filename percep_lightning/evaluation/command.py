"""The ``evaluate`` and ``stats`` subcommands of ``percep-lightning`` (parsers here import no torch).

Exit status: 0 on success, 2 for bad input (the message says what and where) and for missing offline
weights; nothing is written unless the whole evaluation succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator

from percep_lightning.evaluation.errors import EvaluationError
from percep_lightning.evaluation.table import METRICS, PRESETS, resolve_metrics

__all__ = ["add_evaluate_parser", "add_stats_parser", "run_evaluate", "run_stats"]


def _weights_pairs(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or ():
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise EvaluationError(
                f"Expected --weights entries as NAME=PATH (e.g. inception=pt_inception.pth), but got {item!r}."
            )
        out[name] = path
    return out


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recursive", action="store_true", help="also read images in sub-folders")
    parser.add_argument("--batch-size", type=int, default=16, help="images per network batch (default 16)")
    parser.add_argument(
        "--num-workers", type=int, default=4, help="DataLoader workers decoding images (default 4)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument(
        "--resize",
        default="tensorflow",
        help="Inception resize: tensorflow (torch-fidelity, default), bilinear, ... (FIDInceptionV3's modes)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_evaluate_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the subcommands of the ``percep-lightning`` parser."""
    lines = [f"  {spec.name:<14}{spec.description}" for spec in METRICS.values()]
    presets = [f"  {name:<14}{', '.join(names)}" for name, names in PRESETS.items()]
    parser = commands.add_parser(
        "evaluate",
        help="metrics of a folder of images against reference folders",
        description="Compute image metrics over folders: paired ones per same-named (or sorted) pair, FID/IS/KID over "
        "whole folders. Run it under `torchrun --nproc_per_node=G -m percep_lightning evaluate ...` to shard.",
        epilog="metrics:\n" + "\n".join(lines) + "\npresets:\n" + "\n".join(presets),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="the predicted / generated / stylized images")
    parser.add_argument(
        "target", metavar="TARGET", nargs="?", help="reference folder, or an .npz of FID statistics"
    )
    parser.add_argument("--content", help="content images (StyleID's LPIPS and CFSD)")
    parser.add_argument("--style", help="style images (StyleID's FID)")
    parser.add_argument("--metrics", help="comma-separated metric names (see below)")
    parser.add_argument("--preset", help=f"one of {', '.join(PRESETS)}")
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
    parser.add_argument(
        "--weights",
        nargs="+",
        metavar="NAME=PATH",
        help="weights files: inception=, alexnet=, vgg16=, vgg19=, art_inception=",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="write values, counts, settings, weights hashes and versions"
    )
    parser.add_argument(
        "--per-image", metavar="FILE.csv", help="write the per-pair values of the paired metrics"
    )
    _common(parser)
    return parser


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
    parser.add_argument("--weights", nargs="+", metavar="NAME=PATH", help="inception=PATH")
    _common(parser)
    return parser


@contextlib.contextmanager
def _short_warnings() -> Iterator[None]:
    """Print each distinct warning once, as ``warning: message`` (no source line)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("once")
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
    if args.per_image and not any(spec.kind == "paired" for spec in specs):
        raise EvaluationError("--per-image needs a paired metric (psnr, ssim, ms_ssim, lpips, cfsd, ...).")
    weights = _weights_pairs(args.weights)
    from percep_lightning.evaluation.report import format_table, write_csv, write_json
    from percep_lightning.evaluation.runner import evaluate_report

    with _short_warnings():
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
            progress=not args.no_progress,
        )
    if report.rank != 0:
        return 0
    try:
        if args.json:
            write_json(report, args.json)
        if args.per_image:
            write_csv(report, args.per_image)
    except OSError as err:
        raise EvaluationError(str(err)) from err
    print(format_table(report))
    return 0


def _stats(args: argparse.Namespace) -> int:
    weights = _weights_pairs(args.weights)
    unknown = [name for name in weights if name not in ("inception", "inception_fid")]
    if unknown:
        raise EvaluationError(f"`stats` takes only inception=PATH in --weights, but got {unknown}.")
    from percep_lightning.evaluation.runner import folder_statistics

    path = weights.get("inception", weights.get("inception_fid", "default"))
    with _short_warnings():
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
