"""``evaluate``: folders of images in, metric values out, on one process or sharded under torchrun.

Three steps: :func:`~percep_lightning.evaluation.plan.make_plan` checks everything that can fail on bad
input before any network is built (names, options, folders, files, pairs, counts, weights files; offline
defaults raise :class:`~percep_lightning.backbones.WeightsUnavailableError`);
:class:`~percep_lightning.evaluation.passes.Passes` runs one pass over each set of pairs and one pass of each
feature network over each folder; the results become an :class:`EvaluationReport`.
"""

from __future__ import annotations

import os
import platform
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from percep_lightning.backbones.inception import ResizeMode
from percep_lightning.evaluation.cache import target_cache
from percep_lightning.evaluation.distributed import World, distributed_world
from percep_lightning.evaluation.errors import EvaluationError
from percep_lightning.evaluation.files import list_images
from percep_lightning.evaluation.pairing import PAIR_BY, PairBy
from percep_lightning.evaluation.passes import Passes, PerPair, gathered_values
from percep_lightning.evaluation.plan import Plan, folder_args, make_plan, resolve_weights
from percep_lightning.functional.inputs import check_int
from percep_lightning.metrics.registry import METRICS

__all__ = ["EvaluationReport", "MetricResult", "evaluate", "evaluate_report", "folder_statistics"]

RESIZE_MODES: tuple[str, ...] = typing.get_args(ResizeMode)
"""The Inception resize modes (``ResizeMode`` of :mod:`percep_lightning.backbones.inception`)."""
_PIXEL = ("psnr", "ssim", "ms_ssim", "psnr_y", "ssim_y")
_STYLEID = ("lpips_content", "lpips_gray", "fid_art")


@dataclass(frozen=True)
class MetricResult:
    """One row of the output table.

    Attributes:
        name: the metric's name.
        value: its dataset value.
        std: the ``±``: standard deviation over pairs (paired metrics, ddof 0) or over the metric's own
            splits (IS); ``None`` where not defined (FID).
        n: the number of pairs, or of predicted images.
        higher_is_better: the better direction.
        spread: what ``std`` is taken over: ``"pairs"``, ``"splits"`` (IS), ``"subsets"`` (KID), or ``None``.
        reference: the folder a feature metric compares the predictions with (``"target"``, ``"style"``),
            ``None`` for paired metrics and IS.
        n_reference: the number of images behind ``reference``; ``None`` when unknown (a pytorch-fid
            ``.npz`` TARGET does not record it).
    """

    name: str
    value: float
    std: float | None
    n: int
    higher_is_better: bool
    spread: str | None = None
    reference: str | None = None
    n_reference: int | None = None


@dataclass
class EvaluationReport:
    """Everything an evaluation produced: values, counts, per-pair values, settings, weights, versions."""

    results: list[MetricResult]
    counts: dict[str, int | None]
    settings: dict[str, Any]
    weights: dict[str, Any]
    versions: dict[str, str]
    per_image_columns: list[str] = field(default_factory=list)
    per_image_rows: list[list[Any]] = field(default_factory=list)
    rank: int = 0
    """The process that produced the report (under torchrun, only process 0 writes outputs)."""

    def values(self) -> dict[str, float]:
        """``{name: value}``, plus ``{name}_std`` for metrics with a spread of their own (IS, KID)."""
        out: dict[str, float] = {}
        for result in self.results:
            out[result.name] = result.value
            if result.std is not None and result.spread != "pairs":
                out[f"{result.name}_std"] = result.std
        return out


def evaluate(
    pred_dir: str | os.PathLike[str],
    target: str | os.PathLike[str] | None = None,
    *,
    content: str | os.PathLike[str] | None = None,
    style: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] | Mapping[str, Any] | str | None = None,
    preset: str | None = None,
    **options: Any,
) -> dict[str, float]:
    """Evaluate a folder of predicted images against reference folders; returns ``{metric: value}``.

    Paired metrics (``psnr``, ``ssim``, ``ms_ssim``, ``lpips``, ``cfsd``, ...) compare each predicted image
    with its partner in ``target`` (or ``content``), paired by relative file name or sorted order; feature
    metrics (``fid``, ``is``, ``kid``) use one Inception pass per folder (StyleID's ``fid_art`` one pass of
    the art Inception), and ``artfid`` combines ``lpips_content`` and ``fid_art``. Under ``torchrun`` the
    files are sharded across the processes and every process returns the single-process values.

    Args:
        pred_dir: the folder of predicted (generated, stylized, restored) images.
        target: the reference folder, or a pytorch-fid ``.npz`` of FID statistics (``mu``, ``sigma``).
        content: the content folder (StyleID's LPIPS and CFSD).
        style: the style folder (StyleID's FID).
        metrics: metric names (see :data:`~percep_lightning.evaluation.METRICS`; ``percep-lightning evaluate
            --list-metrics``), a list or a comma-separated string; or a mapping from a name to a registry name
            (the same) or to your own metric: a :class:`~percep_lightning.metrics.FrechetDistance`,
            :class:`~percep_lightning.metrics.KernelDistance`, :class:`~percep_lightning.metrics.CMMD` or
            :class:`~percep_lightning.metrics.PRDC` on any feature extractor (compared with ``target``; a
            PRDC named ``m`` reports ``m_precision``, ``m_recall``, ...) or a per-image metric
            (:class:`~percep_lightning.metrics.PSNR`, ...).
        preset: ``"lpips"``, ``"sr"``, ``"gan"``, ``"styleid"`` or ``"dgm"`` (see
            :data:`~percep_lightning.evaluation.PRESETS`).
        options: the keyword options of :func:`evaluate_report` (``pair_by``, ``recursive``,
            ``batch_size``, ``num_workers``, ``device``, ``resize``, ``crop_border``, ``is_splits``,
            ``kid_subsets``, ``kid_subset_size``, ``styleid_size``, ``options``, ``weights``, ``cache``,
            ``cache_dir``, ``progress``).

    Returns:
        ``{name: value}``, with ``"is_std"`` next to ``"is"`` and ``"kid_std"`` next to ``"kid"``.

    Raises:
        EvaluationError: for bad input (missing or empty folder, unreadable image, unpaired files, images
            of different sizes in a pair, too few images, unknown metric or preset, a missing folder a
            metric needs, a bad ``.npz``, an integer option out of range).
        TypeError: for an integer option (``batch_size``, ``crop_border``, ...) that is not an integer.
        WeightsUnavailableError: when default weights are neither cached nor downloadable.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from torchvision.utils import save_image
        >>> from percep_lightning.evaluation import evaluate
        >>> a, b = (pathlib.Path(tempfile.mkdtemp()) for _ in range(2))
        >>> for i in range(2):
        ...     save_image(torch.full((3, 16, 16), 0.5), a / f"{i}.png")
        ...     save_image(torch.full((3, 16, 16), 0.5), b / f"{i}.png")
        >>> evaluate(a, b, metrics="ssim", progress=False)
        {'ssim': 1.0}
    """
    return evaluate_report(
        pred_dir, target, content=content, style=style, metrics=metrics, preset=preset, **options
    ).values()


def evaluate_report(
    pred_dir: str | os.PathLike[str],
    target: str | os.PathLike[str] | None = None,
    *,
    content: str | os.PathLike[str] | None = None,
    style: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] | Mapping[str, Any] | str | None = None,
    preset: str | None = None,
    pair_by: PairBy = "name",
    recursive: bool = False,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | None = None,
    resize: str = "tensorflow",
    crop_border: int = 0,
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    styleid_size: int | None = 512,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    weights: Mapping[str, str | os.PathLike[str] | None] | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> EvaluationReport:
    """:func:`evaluate` with the full report: counts, per-pair values, settings, weights files, versions.

    Args:
        pred_dir, target, content, style, metrics, preset: as :func:`evaluate`.
        pair_by: ``"name"`` (relative file name, default) or ``"sorted"`` (sorted order, StyleID's).
        recursive: also read sub-folders.
        batch_size: images decoded and run through a network at once.
        num_workers: DataLoader worker processes decoding the files (0: in this process).
        device: ``"cpu"``, ``"cuda"`` (the local rank's GPU under torchrun), ...; default CUDA if available.
        resize: the Inception resize: ``"tensorflow"`` (torch-fidelity's, the default), ``"pytorch_fid"``
            (``python -m pytorch_fid``'s), ``"clean"`` (clean-fid's) or ``"bilinear"`` (see
            :class:`~percep_lightning.backbones.FIDInceptionV3`).
        crop_border: pixels removed on every side before PSNR/SSIM (BasicSR's ``crop_border``).
        is_splits: Inception Score splits (torch-fidelity: 10).
        kid_subsets: KID subsets (torch-fidelity: 100).
        kid_subset_size: images per set in a KID subset (torch-fidelity: 1000; smaller folders use all
            their images, with a warning).
        styleid_size: the shorter-side length StyleID resizes images to before its LPIPS (``lpips_content``,
            ``lpips_gray``) and its art-Inception FID (``fid_art``): 512; ``None`` keeps their size.
        weights: ``{name: path}`` for ``inception``, ``alexnet``, ``vgg16``, ``vgg19``, ...; a value of
            ``"default"`` (the official file, cached or downloaded) or ``None`` / ``"random"`` (random
            weights, for smoke tests). Missing names use ``"default"``.
        options: per-metric options by registry name (``{"lpips": {"net": "vgg"}}``), as the callback's;
            they override the settings above.
        cache: reuse the Inception statistics (and features) of a TARGET folder from an earlier evaluation
            with the same weights, resize and files, and store them after computing them.
        cache_dir: the folder of those entries (default ``$TORCH_HOME/percep_lightning/real_stats``).
        progress: show a progress bar per pass (process 0 only).

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        EvaluationError, TypeError, WeightsUnavailableError: as :func:`evaluate`.
    """
    batch_size, num_workers, crop_border, is_splits = _check_options(
        pair_by, batch_size, num_workers, resize, crop_border, is_splits
    )
    kid_subsets = _check_count(kid_subsets, "kid_subsets", 1)
    kid_subset_size = _check_count(kid_subset_size, "kid_subset_size", 1)
    if styleid_size is not None:
        styleid_size = _check_count(styleid_size, "styleid_size", 1)
    settings = {k: v for k, v in locals().items() if k not in ("options", "weights", "metrics")}
    per_metric = _metric_options(
        crop_border, is_splits, kid_subsets, kid_subset_size, styleid_size, options or {}
    )
    folders = folder_args(pred_dir=pred_dir, target=target, content=content, style=style)
    plan = make_plan(
        folders, metrics, preset, per_metric, pair_by=pair_by, recursive=recursive, weights=weights or {}
    )
    settings.update(_settings(plan, settings, cache, cache_dir))
    with distributed_world(device) as world:
        run_device = _device(device, world)
        settings.update(device=str(run_device), world_size=world.size)
        passes = Passes(plan, world, run_device, batch_size, num_workers, progress and world.is_main, resize)
        passes.build()
        results, rows = _run(plan, passes, _cache_dir(cache, cache_dir), settings)
    counts: dict[str, int | None] = {("pred" if r == "preds" else r): len(f) for r, f in plan.listed.items()}
    if plan.target_stats is not None:
        counts["target"] = None  # a pytorch-fid .npz does not record its image count
    columns = ["pred", *plan.pairings, *(n for n in plan.names if plan.kind(n) == "paired")] if rows else []
    return EvaluationReport(
        results, counts, settings, plan.weights_record, _versions(), columns, rows, world.rank
    )


def _metric_options(
    crop_border: int,
    is_splits: int,
    kid_subsets: int,
    kid_subset_size: int,
    styleid_size: int | None,
    given: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """The registry options that ``evaluate``'s own settings stand for, updated with ``given``."""
    per_metric: dict[str, dict[str, Any]] = {name: {"crop_border": crop_border} for name in _PIXEL}
    per_metric.update({name: {"resize": styleid_size} for name in _STYLEID})
    per_metric["is"] = {"splits": is_splits}
    per_metric["kid"] = {"subsets": kid_subsets, "subset_size": kid_subset_size}
    for name, values in given.items():
        per_metric.setdefault(name, {}).update(values)
    return per_metric


def _settings(plan: Plan, given: dict[str, Any], cache: bool, cache_dir: Any) -> dict[str, Any]:
    """What the JSON output records of the run's settings."""
    settings = {key: (None if value is None else str(value)) for key, value in plan.folders.items()}
    settings["pred_dir"] = settings.pop("preds")
    settings["metrics"] = plan.names
    directory = _cache_dir(cache, cache_dir)
    settings["cache_dir"] = None if directory is None else str(directory)
    keep = (
        "preset",
        "pair_by",
        "recursive",
        "batch_size",
        "num_workers",
        "resize",
        "crop_border",
        "is_splits",
    )
    settings.update({key: given[key] for key in (*keep, "kid_subsets", "kid_subset_size", "styleid_size")})
    return settings


def _cache_dir(cache: bool, cache_dir: Any) -> Path | None:
    if not cache:
        return None
    from percep_lightning.evaluation.cache import default_cache_dir

    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _run(
    plan: Plan, passes: Passes, cache_dir: Path | None, settings: dict[str, Any]
) -> tuple[list[MetricResult], list[list[Any]]]:
    """The passes and the results: a row per metric, and the per-pair rows of the CSV."""
    per_pair: dict[str, PerPair] = {}
    for against in plan.pairings:
        per_pair.update(passes.paired(against))
    feature_names = [n for n in plan.names if plan.kind(n) == "features"]
    if feature_names:
        fixed = passes.fix_target_statistics(*plan.target_stats) if plan.target_stats is not None else set()
        writers = target_cache(plan, passes, cache_dir, settings, fixed)
        passes.features(fixed, {network: writer.recorder for network, writer in writers.items()})
        for writer in writers.values():
            writer.save(passes.world)
    values = {name: gathered_values(passes.world, per_pair[name]) for name in per_pair}
    results = _results(plan, passes, values)
    rows = []
    if plan.pairings:
        for i, pred_name in enumerate(plan.listed["preds"]):
            others = (plan.pairings[against][i][1] for against in plan.pairings)
            rows.append([pred_name, *others, *(v[i].item() for v in values.values())])
    return results, rows


def _results(plan: Plan, passes: Passes, values: dict[str, Tensor]) -> list[MetricResult]:
    """The :class:`MetricResult` of each metric (several for PRDC), in the plan's order (derived ones from the
    others)."""
    by_name: dict[str, list[MetricResult]] = {}
    n = len(plan.listed["preds"])
    for name in plan.names:
        spec = plan.specs.get(name)
        better = (
            spec.higher_is_better
            if spec is not None
            else bool(getattr(plan.user[name], "higher_is_better", False))
        )
        kind = plan.kind(name)
        if kind == "paired":
            v = values[name]
            std = v.std(correction=0).item() if v.numel() > 1 else 0.0
            by_name[name] = [MetricResult(name, v.mean().item(), std, v.numel(), better, "pairs")]
        elif kind == "features":
            against = plan.against(name)
            n_against = len(plan.listed[against]) if against in plan.listed else None
            by_name[name] = [
                MetricResult(
                    logged,
                    value,
                    std,
                    n,
                    better,
                    None if std is None else (spec.spread if spec is not None else "subsets"),
                    against,
                    n_against,
                )
                for logged, (value, std) in passes.compute(name).items()
            ]
    computed = {result.name: result.value for results in by_name.values() for result in results}
    for name in plan.names:
        spec = plan.specs.get(name)
        if spec is not None and spec.combine is not None:
            by_name[name] = [MetricResult(name, spec.combine(computed), None, n, spec.higher_is_better)]
    return [result for name in plan.names for result in by_name.get(name, [])]


def _check_options(
    pair_by: str, batch_size: int, num_workers: int, resize: str, crop_border: int, is_splits: int
) -> tuple[int, int, int, int]:
    """``(batch_size, num_workers, crop_border, is_splits)`` as ``int``s, after checking every option."""
    if pair_by not in PAIR_BY:
        raise EvaluationError(f"Expected `pair_by` to be one of {PAIR_BY}, but got {pair_by!r}.")
    counts = (
        _check_count(batch_size, "batch_size", 1),
        _check_count(num_workers, "num_workers", 0),
        _check_count(crop_border, "crop_border", 0),
        _check_count(is_splits, "is_splits", 1),
    )
    if resize not in RESIZE_MODES:
        raise EvaluationError(f"Expected `resize` to be one of {RESIZE_MODES}, but got {resize!r}.")
    return counts


def _check_count(value: Any, name: str, minimum: int) -> int:
    """:func:`check_int`, with a value below ``minimum`` an EvaluationError (the command's exit status 2)."""
    try:
        return check_int(value, name, minimum=minimum)
    except ValueError as err:
        raise EvaluationError(str(err)) from None


def _device(device: str | None, world: World) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    run_device = torch.device(device)
    if run_device.type == "cuda" and run_device.index is None:
        run_device = torch.device("cuda", world.local_rank if world.size > 1 else torch.cuda.current_device())
    return run_device


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("percep-lightning", "torch", "torchvision", "torchmetrics", "numpy", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["platform"] = sys.platform
    return versions


def folder_statistics(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    recursive: bool = False,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | None = None,
    resize: str = "tensorflow",
    weights: str | os.PathLike[str] | None = "default",
    progress: bool = True,
) -> int:
    """Write the FID statistics (``mu``, ``sigma`` of the pool3 features) of a folder to a pytorch-fid ``.npz``.

    The file can be given as TARGET to :func:`evaluate` (or to pytorch-fid). Sharded under torchrun like
    :func:`evaluate`; process 0 writes the file, atomically.

    Args:
        folder: the folder of images.
        output: the ``.npz`` file to write (its folder must exist).
        recursive, batch_size, num_workers, device, resize, progress: as :func:`evaluate_report`.
        weights: the FID Inception weights: ``"default"``, a path, or ``None`` (random).

    Returns:
        The number of images.

    Raises:
        EvaluationError: for a missing or empty folder, an unreadable image, fewer than 2 images, or an
            output folder that does not exist, or ``batch_size`` / ``num_workers`` out of range.
        TypeError: for a ``batch_size`` or ``num_workers`` that is not an integer.
        WeightsUnavailableError: when the default weights are neither cached nor downloadable.
    """
    batch_size, num_workers, _, _ = _check_options("name", batch_size, num_workers, resize, 0, 1)
    out_dir = Path(output).expanduser().resolve().parent
    if not out_dir.is_dir():
        raise EvaluationError(f"Cannot write {str(output)!r}: folder {str(out_dir)!r} does not exist.")
    names = list_images(folder, recursive=recursive, name="DIR")
    if len(names) < 2:
        raise EvaluationError(
            f"FID statistics need at least 2 images, but {str(folder)!r} holds {len(names)}."
        )
    plan = Plan({"fid": METRICS["fid"]}, {}, {"fid": {}}, {"target": folder}, listed={"target": names})
    plan.weights, _ = resolve_weights(plan, {"inception": "random" if weights is None else weights})
    from percep_lightning.metrics.stats_io import save_stats

    with distributed_world(device) as world:
        passes = Passes(
            plan, world, _device(device, world), batch_size, num_workers, progress and world.is_main, resize
        )
        passes.build()
        fid = passes.metrics["fid"]
        passes.folder_pass(fid.extractor, "target", [fid], None)  # type: ignore[attr-defined]
        mu, sigma, n = fid.real_statistics()  # type: ignore[operator]
        if world.is_main:
            save_stats(output, mu, sigma)
    return n
