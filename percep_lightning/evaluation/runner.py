"""``evaluate``: folders of images in, metric values out, on one process or sharded under torchrun.

The steps, each before any network is built: check the arguments, resolve the metric names, list the
folders, pair the files, check the image counts, resolve the weights files (offline defaults raise
:class:`~percep_lightning.backbones.WeightsUnavailableError`). Then one pass over each set of pairs feeds
every paired metric, and one Inception pass over each folder feeds every feature metric.
"""

from __future__ import annotations

import os
import platform
import sys
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from percep_lightning.backbones.inception import ResizeMode
from percep_lightning.evaluation.distributed import World, all_gather_objects, distributed_world
from percep_lightning.evaluation.errors import EvaluationError
from percep_lightning.evaluation.files import ImageFiles, iter_batches, list_images
from percep_lightning.evaluation.pairing import PAIR_BY, PairBy, pair_files
from percep_lightning.evaluation.table import BuildContext, MetricSpec, resolve_metrics

__all__ = ["EvaluationReport", "MetricResult", "evaluate", "evaluate_report", "folder_statistics"]

RESIZE_MODES: tuple[str, ...] = typing.get_args(ResizeMode)
"""The Inception resize modes (``ResizeMode`` of :mod:`percep_lightning.backbones.inception`)."""
WEIGHTS_ALIASES = {"inception": "inception_fid"}
"""``--weights`` names that differ from the keys of :data:`~percep_lightning.backbones.WEIGHTS`."""
_FOLDER_FLAGS = {"pred": "PRED_DIR", "target": "TARGET", "content": "--content", "style": "--style"}


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
    metrics: Sequence[str] | str | None = None,
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
        metrics: metric names (see :data:`~percep_lightning.evaluation.METRICS`), a list or a
            comma-separated string.
        preset: ``"lpips"``, ``"sr"``, ``"gan"`` or ``"styleid"`` (see
            :data:`~percep_lightning.evaluation.PRESETS`).
        options: the keyword options of :func:`evaluate_report` (``pair_by``, ``recursive``,
            ``batch_size``, ``num_workers``, ``device``, ``resize``, ``crop_border``, ``is_splits``,
            ``kid_subsets``, ``kid_subset_size``, ``styleid_size``, ``weights``, ``cache``, ``cache_dir``,
            ``progress``).

    Returns:
        ``{name: value}``, with ``"is_std"`` next to ``"is"`` and ``"kid_std"`` next to ``"kid"``.

    Raises:
        EvaluationError: for bad input (missing or empty folder, unreadable image, unpaired files, images
            of different sizes in a pair, too few images, unknown metric or preset, a missing folder a
            metric needs, a bad ``.npz``).
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
    metrics: Sequence[str] | str | None = None,
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
        cache: reuse the Inception statistics (and features) of a TARGET folder from an earlier evaluation
            with the same weights, resize and files, and store them after computing them.
        cache_dir: the folder of those entries (default ``$TORCH_HOME/percep_lightning/real_stats``).
        progress: show a progress bar per pass (process 0 only).

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        EvaluationError, WeightsUnavailableError: as :func:`evaluate`.
    """
    _check_options(pair_by, batch_size, num_workers, resize, crop_border, is_splits)
    _check_positive(kid_subsets=kid_subsets, kid_subset_size=kid_subset_size)
    if styleid_size is not None:
        _check_positive(styleid_size=styleid_size)
    specs = resolve_metrics(metrics, preset)
    _check_weights_names(weights or {})
    folders = {"pred": pred_dir, "target": target, "content": content, "style": style}
    target_stats = _check_folders_given(specs, folders)
    listed = {
        side: list_images(path, recursive=recursive, name=f"{_FOLDER_FLAGS[side]} ({side})")
        for side, path in folders.items()
        if path is not None and not (side == "target" and target_stats is not None)
    }
    pairings = {
        against: pair_files(
            listed["pred"], listed[against], by=pair_by, names=("PRED_DIR", _FOLDER_FLAGS[against])
        )
        for against in dict.fromkeys(s.against for s in specs if s.kind == "paired")
    }
    _check_counts(specs, listed, target_stats is not None, is_splits)
    resolved, weights_record = _resolve_weights(specs, weights or {})
    settings = {
        "pred_dir": str(pred_dir),
        "target": None if target is None else str(target),
        "content": None if content is None else str(content),
        "style": None if style is None else str(style),
        "metrics": [s.name for s in specs],
        "preset": preset,
        "pair_by": pair_by,
        "recursive": recursive,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "resize": resize,
        "crop_border": crop_border,
        "is_splits": is_splits,
        "kid_subsets": kid_subsets,
        "kid_subset_size": kid_subset_size,
        "styleid_size": styleid_size,
        "cache_dir": None if not cache else str(cache_dir or "default"),
    }
    if cache:
        from percep_lightning.evaluation.cache import default_cache_dir

        cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        settings["cache_dir"] = str(cache_dir)
    else:
        cache_dir = None
    with distributed_world(device) as world:
        run_device = _device(device, world)
        settings["device"] = str(run_device)
        settings["world_size"] = world.size
        context = BuildContext(
            run_device, resolved, crop_border=crop_border, is_splits=is_splits,
            kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, styleid_size=styleid_size,
        )  # fmt: skip
        scorers = _build(specs, context, resize)
        run = _Run(folders, listed, world, batch_size, num_workers, progress and world.is_main)
        results, columns, rows = [], ["pred"], []
        per_pair: dict[str, tuple[list[int], list[float]]] = {}
        for against, pairs in pairings.items():
            paired = [s for s in specs if s.kind == "paired" and s.against == against]
            per_pair.update(run.paired_pass(against, pairs, {s.name: scorers[s.name] for s in paired}))
        consumers = {s.name: scorers[s.name] for s in specs if s.kind == "features"}
        if consumers:
            if target_stats is not None:
                for consumer in consumers.values():
                    if "target" in consumer.sides:
                        consumer.fix_reference(*target_stats)
            recorder = _use_target_cache(
                consumers, folders, listed, resolved, context, resize, cache_dir, world, settings
            )
            networks = {"inception": context.inception, "art_inception": context.art_inception}
            run.feature_passes(consumers, networks, run_device)
            if recorder is not None:
                recorder.save(world)
        computed: dict[str, float] = {}
        for spec in specs:
            if spec.kind == "derived":
                continue
            if spec.kind == "paired":
                values = _ordered(all_gather_objects(world, per_pair[spec.name]))
                mean = values.mean().item()
                std = values.std(correction=0).item() if values.numel() > 1 else 0.0
                results.append(
                    MetricResult(spec.name, mean, std, values.numel(), spec.higher_is_better, "pairs")
                )
                computed[spec.name] = mean
            else:
                value, std = scorers[spec.name].finish()
                spread = None if std is None else spec.spread
                n = len(listed["pred"])
                against = spec.against
                n_against = len(listed[against]) if against is not None and against in listed else None
                results.append(
                    MetricResult(spec.name, value, std, n, spec.higher_is_better, spread, against, n_against)
                )
                computed[spec.name] = value
        for spec in specs:
            if spec.kind == "derived" and spec.combine is not None:
                n = len(listed["pred"])
                results.append(
                    MetricResult(spec.name, spec.combine(computed), None, n, spec.higher_is_better)
                )
        order = {spec.name: k for k, spec in enumerate(specs)}
        results.sort(key=lambda r: order[r.name])
        if pairings:
            columns += list(pairings) + [s.name for s in specs if s.kind == "paired"]
            ordered = {
                s.name: _ordered(all_gather_objects(world, per_pair[s.name])).tolist()
                for s in specs
                if s.kind == "paired"
            }
            for i, pred_name in enumerate(listed["pred"]):
                rows.append(
                    [pred_name, *(pairings[a][i][1] for a in pairings), *(v[i] for v in ordered.values())]
                )
    counts: dict[str, int | None] = {side: len(files) for side, files in listed.items()}
    if target_stats is not None:
        counts["target"] = None  # a pytorch-fid .npz does not record its image count
    return EvaluationReport(results, counts, settings, weights_record, _versions(), columns, rows, world.rank)


class _CacheWriter:
    """Writes the TARGET entry after the pass that computed it (process 0)."""

    def __init__(self, recorder: Any, directory: Path, key: str) -> None:
        self.recorder, self.directory, self.key = recorder, directory, key

    def save(self, world: World) -> None:
        from percep_lightning.evaluation.cache import write_entry

        features = self.recorder.gathered(world)
        if world.is_main:
            try:
                write_entry(self.directory, self.key, features)
            except OSError as err:
                warnings.warn(
                    f"Could not cache the TARGET statistics in {str(self.directory)!r}: {err}", stacklevel=2
                )


def _use_target_cache(
    consumers: dict[str, Any],
    folders: dict[str, Any],
    listed: dict[str, list[str]],
    resolved: dict[str, Any],
    context: BuildContext,
    resize: str,
    cache_dir: Path | None,
    world: World,
    settings: dict[str, Any],
) -> _CacheWriter | None:
    """Feed the TARGET side from the cache when it holds this folder; else record it for the cache."""
    users = [
        c
        for c in consumers.values()
        if "target" in c.sides and getattr(c, "network", "inception") == "inception"
    ]
    if cache_dir is None or not users or "target" not in listed:
        return None
    from percep_lightning.evaluation.cache import FeatureRecorder, folder_key, read_entry
    from percep_lightning.metrics.stats_io import weights_digest

    digest = weights_digest(resolved["inception"], context.inception)
    key = folder_key(folders["target"], listed["target"], weights=digest, resize=resize)
    entry = read_entry(cache_dir, key, world)
    settings["target_cache"] = "reused" if entry is not None else "computed"
    if entry is not None:
        for consumer in users:
            consumer.use_cached_target(entry, world.is_main)
        return None
    recorder = FeatureRecorder()
    consumers["target statistics cache"] = recorder
    return _CacheWriter(recorder, cache_dir, key)


def _check_options(
    pair_by: str, batch_size: int, num_workers: int, resize: str, crop_border: int, is_splits: int
) -> None:
    if pair_by not in PAIR_BY:
        raise EvaluationError(f"Expected `pair_by` to be one of {PAIR_BY}, but got {pair_by!r}.")
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("num_workers", num_workers, 0),
        ("crop_border", crop_border, 0),
        ("is_splits", is_splits, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise EvaluationError(f"Expected `{name}` to be an integer >= {low}, but got {value!r}.")
    if resize not in RESIZE_MODES:
        raise EvaluationError(f"Expected `resize` to be one of {RESIZE_MODES}, but got {resize!r}.")


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EvaluationError(f"Expected `{name}` to be an integer >= 1, but got {value!r}.")


def _check_folders_given(specs: list[MetricSpec], folders: dict[str, Any]) -> tuple[Tensor, Tensor] | None:
    """Check every metric has its folder; load TARGET statistics when TARGET is an ``.npz`` file."""
    for spec in specs:
        if spec.against is not None and folders[spec.against] is None:
            flag = _FOLDER_FLAGS[spec.against]
            raise EvaluationError(f"Metric {spec.name!r} needs {flag}: {spec.description}.")
    target = folders["target"]
    if target is None or not str(target).lower().endswith(".npz"):
        return None
    if not Path(target).is_file():
        raise EvaluationError(f"TARGET {str(target)!r} does not exist.")
    paired = [s.name for s in specs if s.against == "target" and s.name != "fid"]
    if paired:
        raise EvaluationError(
            f"TARGET {str(target)!r} is a statistics file; {', '.join(paired)} need a folder of images "
            "(only fid works from statistics)."
        )
    from percep_lightning.metrics.stats_io import load_stats

    try:
        mu, sigma = load_stats(target)
    except (ValueError, OSError) as err:
        raise EvaluationError(str(err)) from err
    if tuple(mu.shape) != (2048,):
        raise EvaluationError(
            f"TARGET {str(target)!r} holds statistics of {tuple(mu.shape)[0]}-d features; FID needs the 2048-d "
            "pool3 statistics of the FID Inception (as written by `percep-lightning stats` or pytorch-fid)."
        )
    return mu, sigma


def _check_counts(
    specs: list[MetricSpec], listed: dict[str, list[str]], target_is_stats: bool, is_splits: int
) -> None:
    for spec in specs:
        sides = ["pred"] if spec.kind == "paired" or spec.against is None else ["pred", spec.against]
        for side in sides:
            if side == "target" and target_is_stats:
                continue
            n = len(listed[side])
            least = is_splits if spec.name == "is" else spec.min_images
            if n < least:
                why = f" (one per split, --is-splits {is_splits})" if spec.name == "is" else ""
                raise EvaluationError(
                    f"{spec.name} needs at least {least} images in {_FOLDER_FLAGS[side]}{why}, but it holds {n}."
                )


def _resolve_weights(
    specs: list[MetricSpec], given: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{name: path or None}`` for the networks the metrics need, and what the JSON records of them."""
    from percep_lightning.backbones.weights import fetch

    needed = list(dict.fromkeys(name for spec in specs for name in spec.weights))
    _check_weights_names(given)
    given = {WEIGHTS_ALIASES.get(k, k): v for k, v in given.items()}
    resolved: dict[str, Any] = {}
    record: dict[str, Any] = {}
    for name in needed:
        key = WEIGHTS_ALIASES.get(name, name)
        value = given.get(key, "default")
        if value is None or value == "random":
            resolved[name], record[name] = (
                None,
                {"file": None, "sha256": None, "note": "random initialisation"},
            )
            continue
        path = fetch(key) if value == "default" else Path(value).expanduser()
        if not path.is_file():
            raise EvaluationError(f"Weights file for {name} not found: {str(path)!r}.")
        resolved[name] = str(path)
        record[name] = {"file": path.name, "path": str(path)}
    for spec in specs:
        if spec.name.startswith("lpips"):
            net = "vgg" if spec.name == "lpips_vgg" else "alex"
            from importlib import resources

            with resources.as_file(
                resources.files("percep_lightning.backbones.lpips_weights") / f"{net}.pth"
            ) as lin:
                record[f"lpips_{net}_lin"] = {"file": f"v0.1/{net}.pth", "path": str(lin)}
    return resolved, record


def _check_weights_names(given: Mapping[str, Any]) -> None:
    from percep_lightning.backbones.weights import WEIGHTS

    known = sorted({*WEIGHTS, *WEIGHTS_ALIASES})
    for name in given:
        if WEIGHTS_ALIASES.get(name, name) not in WEIGHTS:
            raise EvaluationError(
                f"Unknown weights name {name!r} in --weights; expected some of {', '.join(known)}."
            )


def _device(device: str | None, world: World) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    run_device = torch.device(device)
    if run_device.type == "cuda" and run_device.index is None:
        run_device = torch.device("cuda", world.local_rank if world.size > 1 else torch.cuda.current_device())
    return run_device


def _build(specs: list[MetricSpec], context: BuildContext, resize: str) -> dict[str, Any]:
    # Random networks (smoke tests) come from a fixed seed, so every process holds the same ones.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        networks = {s.network for s in specs if s.kind == "features"}
        if "inception" in networks:
            from percep_lightning.backbones.inception import FIDInceptionV3

            context.inception = FIDInceptionV3(context.weights["inception"], resize=resize).to(context.device)  # type: ignore[arg-type]
        if "art_inception" in networks:
            from percep_lightning.backbones.art_inception import ArtInception

            weights = context.weights["art_inception"]
            size = context.styleid_size
            context.art_inception = ArtInception(weights, resize=size).to(context.device)
        return {spec.name: spec.build(context) for spec in specs}


def _ordered(gathered: list[tuple[list[int], list[float]]]) -> Tensor:
    indices = [i for part in gathered for i in part[0]]
    values = [v for part in gathered for v in part[1]]
    order = sorted(range(len(indices)), key=indices.__getitem__)
    return torch.tensor([values[k] for k in order], dtype=torch.float64)


@dataclass
class _Run:
    folders: dict[str, Any]
    listed: dict[str, list[str]]
    world: World
    batch_size: int
    num_workers: int
    progress: bool

    def _paths(self, side: str, names: Sequence[str]) -> list[Path]:
        root = Path(self.folders[side])
        return [root / name for name in names]

    def paired_pass(
        self, against: str, pairs: list[tuple[str, str]], scorers: dict[str, Any]
    ) -> dict[str, tuple[list[int], list[float]]]:
        shard = self.world.shard(len(pairs))
        preds = self._paths("pred", [pairs[i][0] for i in shard])
        others = self._paths(against, [pairs[i][1] for i in shard])
        dataset = ImageFiles(list(zip(preds, others, strict=True)), shard)
        out: dict[str, tuple[list[int], list[float]]] = {name: ([], []) for name in scorers}
        names = ("PRED_DIR", _FOLDER_FLAGS[against])
        for batch in iter_batches(
            dataset, batch_size=self.batch_size, num_workers=self.num_workers, folder_names=names,
            progress=self.progress, description=f"pairs vs {against}",
        ):  # fmt: skip
            first = int(batch.indices[0])
            for name, scorer in scorers.items():
                try:
                    values = scorer(*batch.images)
                except ValueError as err:
                    raise EvaluationError(
                        f"{name} on {pairs[first][0]!r} and the same-sized pairs after it: {err}"
                    ) from err
                out[name][0].extend(batch.indices.tolist())
                out[name][1].extend(values.tolist())
        return out

    def feature_passes(
        self, consumers: dict[str, Any], networks: dict[str, Any], device: torch.device
    ) -> None:
        """One pass per (network, folder) feeding every consumer of that network and folder."""
        from percep_lightning.metrics._images import exact_float32, inception_forward, to_uint8

        passes = dict.fromkeys(
            (getattr(c, "network", "inception"), side) for c in consumers.values() for side in c.sides
        )
        for network, side in passes:
            names = self.listed[side]
            shard = self.world.shard(len(names))
            dataset = ImageFiles([(p,) for p in self._paths(side, [names[i] for i in shard])], shard)
            users = [
                c
                for c in consumers.values()
                if side in c.sides and getattr(c, "network", "inception") == network
            ]
            flag = _FOLDER_FLAGS[side]
            for batch in iter_batches(
                dataset, batch_size=self.batch_size, num_workers=self.num_workers, folder_names=(flag,),
                progress=self.progress, description=f"{network.replace('_', ' ')} {side}",
            ):  # fmt: skip
                if network == "inception":
                    features = inception_forward(networks[network], batch.images[0], flag)
                else:  # StyleID reads 8-bit images
                    with exact_float32(device):
                        features = networks[network](to_uint8(batch.images[0], flag).to(device))
                for consumer in users:
                    consumer.update(features, batch.indices.to(device), side)


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
            output folder that does not exist.
        WeightsUnavailableError: when the default weights are neither cached nor downloadable.
    """
    _check_options("name", batch_size, num_workers, resize, 0, 1)
    out_dir = Path(output).expanduser().resolve().parent
    if not out_dir.is_dir():
        raise EvaluationError(f"Cannot write {str(output)!r}: folder {str(out_dir)!r} does not exist.")
    names = list_images(folder, recursive=recursive, name="DIR")
    if len(names) < 2:
        raise EvaluationError(
            f"FID statistics need at least 2 images, but {str(folder)!r} holds {len(names)}."
        )
    resolved, _ = _resolve_weights(
        [MetricSpec("stats", "features", None, False, ("inception",), "", lambda c: None)],
        {"inception": "random" if weights is None else weights},
    )
    from percep_lightning.evaluation.scorers import FIDConsumer
    from percep_lightning.metrics.stats_io import save_stats

    with distributed_world(device) as world:
        run_device = _device(device, world)
        context = BuildContext(run_device, resolved)
        _build([MetricSpec("fid", "features", None, False, (), "", lambda c: None)], context, resize)
        consumer = FIDConsumer(context.inception, "target")
        consumer.sides = ("target",)
        run = _Run(
            {"target": folder}, {"target": names}, world, batch_size, num_workers, progress and world.is_main
        )
        run.feature_passes({"stats": consumer}, {"inception": context.inception}, run_device)
        mu, sigma, n = consumer.metric.real_statistics()
        if world.is_main:
            save_stats(output, mu, sigma)
    return n
