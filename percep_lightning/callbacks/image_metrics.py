r"""FID, Inception Score and CFSD logged at the end of every validation epoch, exact under DDP.

The callback reads images from what ``validation_step`` returns, feeds the metrics of
:mod:`percep_lightning.metrics`, and logs ``val/fid``, ``val/is``, ``val/is_std`` and ``val/cfsd``.

Exact multi-process results. Under DDP Lightning gives the validation dataloader a
``DistributedSampler``, which pads the dataset with repeats of its first samples so that every process
gets the same number of batches: process ``r`` of ``W`` sees the positions ``r, r + W, r + 2W, ...`` of the
padded list, and positions ``>= len(dataset)`` are the repeats. The callback counts the images each
process has seen in the epoch and keeps local image ``k`` only if its position ``k * W + r`` is below
``len(dataset)`` (and below ``max_samples``), so the metrics see every sample exactly once. The metric
states are then summed or gathered across processes by torchmetrics on every process (``compute`` is never
wrapped in ``rank_zero_only``, which would deadlock), and every process logs the same values. For IS, the
position of each image is kept too, so the gathered logits are put back in dataset order before the
seeded shuffle: on ``W`` processes the values equal those of one process.

This relies on each ``validation_step`` output holding one image per sample of its batch, in batch order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from torch.utils.data import DistributedSampler, IterableDataset, RandomSampler

from percep_lightning.backbones.inception import FIDInceptionV3, ResizeMode, check_resize
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.fid import load_stats
from percep_lightning.metrics._images import Quantize, check_quantize, exact_float32, to_uint8
from percep_lightning.metrics.cfsd import CFSD
from percep_lightning.metrics.fid import FrechetInceptionDistance
from percep_lightning.metrics.inception_score import InceptionScore

log = logging.getLogger(__name__)

METRIC_NAMES = ("fid", "is", "cfsd")
Extractor = Callable[[Any, Any], Mapping[str, Tensor]]
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class _SamplePlan:
    """Which of a process's validation images to keep, and their positions in the global order.

    Local image ``k`` (counted from the start of the epoch) has global position ``k * world_size + rank``
    and is kept if ``k < keep`` (``keep=None``: all).
    """

    world_size: int
    rank: int
    keep: int | None
    dataset_len: int | None
    shuffled: bool


class ImageMetricsCallback(Callback):
    r"""Log FID, Inception Score and CFSD at the end of each validation epoch, on one or many processes.

    Add it to the ``Trainer`` and return a dict from ``validation_step``::

        def validation_step(self, batch, batch_idx):
            x, y = batch
            return {"preds": self(x).clamp(0, 1), "target": y}

        trainer = Trainer(callbacks=[ImageMetricsCallback(weights="pt_inception-2015-12-05-6726825d.pth")])

    Images are ``uint8`` in [0, 255] or float in [0, 1], ``(N, 3, H, W)`` (or one channel). FID compares
    ``preds`` with ``target``; IS scores ``preds``; CFSD compares the structure of ``preds`` with the
    ``content`` images (``content_key``, by default the ``target`` images). One Inception forward per image
    feeds both FID and IS.

    Speed: the real-image statistics are computed in the first validation epoch and reused while the
    validation set is unchanged (``cache_real_stats``), and optionally stored in ``real_stats_dir`` as a
    pytorch-fid ``.npz`` (``mu``, ``sigma``) whose file name is a hash of everything the statistics depend
    on: the Inception weights, the resize and quantisation, the dataset (type, length and a digest of a few
    of its samples), ``max_samples``, ``limit_val_batches`` and the target key. At the end of an epoch that
    reused them, a checksum of the target images seen is compared with the cached one; if they differ (e.g.
    random augmentation of the validation set) a warning is given and caching is switched off for the run.
    The cached statistics are part of the callback's checkpoint state, so a resumed run does not recompute
    them and logs the same values as an uninterrupted one. Sanity-check validation is skipped.

    Distributed runs: see the module docstring. The duplicates that ``DistributedSampler`` pads the last
    batches with are dropped, so the values on several processes equal those on one process (for FID and
    CFSD always; for IS when the validation sampler does not shuffle, Lightning's default). With
    ``use_distributed_sampler=False`` and a sampler that is not a ``DistributedSampler``, duplicates cannot
    be recognised: a warning is given and every image each process sees is counted.

    Args:
        metrics: which of ``"fid"``, ``"is"``, ``"cfsd"`` to compute.
        preds_key: key of the generated images in the ``validation_step`` output.
        target_key: key of the real images (FID, and CFSD's content when ``content_key`` is ``None``).
        content_key: key of the content images for CFSD; ``None`` uses ``target_key``.
        every_n_epochs: compute on every n-th validation epoch only (``(epoch + 1) % n == 0``).
        max_samples: at most this many images per validation epoch (the first ones of the dataset, the
            same on any number of processes); ``None`` for all.
        weights: the Inception weights for FID and IS: ``"default"`` (the official
            ``pt_inception-2015-12-05-6726825d.pth``), a path to a file in that format, or a state dict.
        vgg_weights: the VGG19 weights for CFSD (``"default"``: torchvision's ``vgg19-dcbb9e9d.pth``).
        extractor: ``extractor(outputs, batch) -> dict`` to build the dict of images from the
            ``validation_step`` output and the batch, when the output is not such a dict already.
        prefix: prefix of the logged names (``"val/"`` gives ``val/fid``, ``val/is``, ...).
        dataloader_idx: which validation dataloader feeds the metrics (others are ignored).
        is_splits: the number of Inception Score splits (torch-fidelity: 10).
        resize: how images reach 299x299: ``"tensorflow"`` (torch-fidelity, default), ``"pytorch_fid"``,
            ``"clean"`` (clean-fid) or ``"bilinear"`` (legacy); see :class:`~percep_lightning.backbones.FIDInceptionV3`.
        quantize: how float images become ``uint8`` for Inception: ``"round"`` (as when saving a PNG) or
            ``"truncate"`` (torchmetrics' ``normalize=True``).
        cache_real_stats: reuse the real-image statistics across epochs (see above).
        real_stats_dir: a folder to also store and load them as ``.npz`` files (``None``: memory only).
        cfsd_chunk_size: rows of the CFSD similarity matrix processed at once (``None``: the metric's
            default), bounding its memory at high resolution.

    Raises:
        ValueError: for an unknown metric name, a missing key needed by a metric, ``every_n_epochs < 1``,
            ``max_samples`` too small for the metrics, or an unknown ``resize`` / ``quantize``.
        TypeError: if ``extractor`` is not callable.
    """

    def __init__(
        self,
        metrics: Sequence[str] = METRIC_NAMES,
        preds_key: str = "preds",
        target_key: str | None = "target",
        content_key: str | None = None,
        every_n_epochs: int = 1,
        max_samples: int | None = None,
        weights: WeightsArg = "default",
        *,
        vgg_weights: WeightsArg = "default",
        extractor: Extractor | None = None,
        prefix: str = "val/",
        dataloader_idx: int = 0,
        is_splits: int = 10,
        resize: ResizeMode = "tensorflow",
        quantize: Quantize = "round",
        cache_real_stats: bool = True,
        real_stats_dir: str | os.PathLike[str] | None = None,
        cfsd_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.metric_names = _check_metric_names(metrics)
        self.preds_key = preds_key
        self.target_key = target_key
        self.content_key = content_key
        if "fid" in self.metric_names and target_key is None:
            raise ValueError("Metric 'fid' needs real images: `target_key` must not be None.")
        if "cfsd" in self.metric_names and content_key is None and target_key is None:
            raise ValueError("Metric 'cfsd' needs content images: set `content_key` (or `target_key`).")
        _check_int(every_n_epochs, "every_n_epochs", minimum=1)
        _check_int(is_splits, "is_splits", minimum=1)
        _check_int(dataloader_idx, "dataloader_idx", minimum=0)
        if max_samples is not None:
            needed = max(2, is_splits) if "is" in self.metric_names else 2
            _check_int(max_samples, "max_samples", minimum=needed)
        if extractor is not None and not callable(extractor):
            raise TypeError(f"Expected `extractor` to be callable, but got {type(extractor).__name__}.")
        check_resize(resize)
        check_quantize(quantize)
        if cfsd_chunk_size is not None:
            _check_int(cfsd_chunk_size, "cfsd_chunk_size", minimum=1)
        self.every_n_epochs = every_n_epochs
        self.max_samples = max_samples
        self.weights = weights
        self.vgg_weights = vgg_weights
        self.extractor = extractor
        self.prefix = prefix
        self.dataloader_idx = dataloader_idx
        self.is_splits = is_splits
        self.resize = resize
        self.quantize = quantize
        self.cache_real_stats = cache_real_stats
        self.real_stats_dir = Path(real_stats_dir) if real_stats_dir is not None else None

        # Built in `setup` (after DDP processes are spawned; nothing heavy is pickled with the callback).
        self._inception: FIDInceptionV3 | None = None
        self._fid: FrechetInceptionDistance | None = None
        self._is: InceptionScore | None = None
        self._cfsd: CFSD | None = None
        self._cfsd_chunk_size = cfsd_chunk_size
        self._weights_digest: str | None = None

        # Real-statistics cache: {"key", "mu", "sigma", "num_samples", "fingerprint"} (CPU tensors).
        self._real_cache: dict[str, Any] | None = None
        self._caching_disabled = False

        # Per-epoch state.
        self._active = False
        self._plan: _SamplePlan | None = None
        self._seen = 0
        self._epoch_key: str | None = None
        self._using_cached_real = False
        self._fingerprint: Tensor | None = None
        self._num_real_forwarded = 0  # images of the target set run through Inception (for tests and logs)
        self._warned_sampler = False
        self._warned_shuffle = False

    # ------------------------------------------------------------------ Lightning state

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            metrics=self.metric_names,
            preds_key=self.preds_key,
            target_key=self.target_key,
            prefix=self.prefix,
        )

    def state_dict(self) -> dict[str, Any]:
        """The cached real-image statistics (so a resumed run does not recompute them)."""
        return {"format": _CACHE_FORMAT, "real_stats": self._real_cache}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        cache = state_dict.get("real_stats")
        if state_dict.get("format") == _CACHE_FORMAT and cache is not None:
            self._real_cache = dict(cache)

    @property
    def real_stats_cached(self) -> bool:
        """Whether real-image statistics are cached (in memory) for reuse."""
        return self._real_cache is not None

    # ------------------------------------------------------------------ hooks

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Random backbones (weights=None, for smoke tests) are built from a fixed seed, so that every process
        # of a distributed run holds the same network.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if self._inception is None and ({"fid", "is"} & set(self.metric_names)):
                self._inception = FIDInceptionV3(self.weights, resize=self.resize)
            if "fid" in self.metric_names and self._fid is None:
                self._fid = FrechetInceptionDistance(backbone=self._inception, quantize=self.quantize)
            if "is" in self.metric_names and self._is is None:
                self._is = InceptionScore(
                    backbone=self._inception, splits=self.is_splits, quantize=self.quantize
                )
            if "cfsd" in self.metric_names and self._cfsd is None:
                kwargs = {} if self._cfsd_chunk_size is None else {"chunk_size": self._cfsd_chunk_size}
                self._cfsd = CFSD(self.vgg_weights, **kwargs)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = self._should_run(trainer)
        if not self._active:
            return
        self.setup(trainer, pl_module, "validate")  # no-op when already built
        for metric in self._metrics():
            metric.to(pl_module.device)
            metric.reset()
        self._plan = self._sample_plan(trainer)
        self._seen = 0
        self._fingerprint = torch.zeros(3, dtype=torch.long, device=pl_module.device)
        self._using_cached_real = False
        self._epoch_key = None
        if self._fid is not None:
            self._fid.clear_real_statistics()
            if self._cache_allowed():
                self._epoch_key = trainer.strategy.broadcast(
                    self._cache_key(trainer) if trainer.is_global_zero else None, src=0
                )
                self._using_cached_real = self._restore_real_stats(trainer)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active or dataloader_idx != self.dataloader_idx:
            return
        images = self._extract(outputs, batch)
        count = _batch_count(images)
        keep, positions = self._keep(count)
        self._seen += count
        if keep == 0:
            return
        images = {name: x[:keep] for name, x in images.items()}
        positions = positions.to(pl_module.device)
        self._update_inception_metrics(images, positions)
        if self._cfsd is not None:
            content = images[self.content_key or self.target_key]  # type: ignore[index]
            self._cfsd.update(images[self.preds_key], content)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active:
            return
        self._active = False
        self._check_seen_count()
        values: dict[str, Tensor] = {}
        if self._fid is not None:
            values["fid"] = self._compute_fid(trainer)
        if self._is is not None:
            if not self._is.logits:  # an empty rank still takes part in the gather, with a 2-D tensor
                self._is.update_logits(
                    torch.empty(0, 1008, device=pl_module.device), torch.empty(0, dtype=torch.long)
                )
            values["is"], values["is_std"] = self._is.compute()
        if self._cfsd is not None:
            values["cfsd"] = self._cfsd.compute()
        for name, value in values.items():
            # Every process holds the same synchronised value; `max` over processes returns it unchanged and
            # keeps Lightning from warning about unsynchronised epoch-level logging.
            pl_module.log(
                f"{self.prefix}{name}",
                value.detach().float(),
                sync_dist=True,
                reduce_fx="max",
                on_step=False,
                on_epoch=True,
            )

    # ------------------------------------------------------------------ per-batch work

    def _should_run(self, trainer: Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn is not None and trainer.state.fn.value == "validate":
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _metrics(self) -> list[Any]:
        return [m for m in (self._fid, self._is, self._cfsd) if m is not None]

    def _required_keys(self) -> list[str]:
        keys = [self.preds_key]
        if "fid" in self.metric_names:
            keys.append(self.target_key)  # type: ignore[arg-type]
        if "cfsd" in self.metric_names:
            keys.append(self.content_key or self.target_key)  # type: ignore[arg-type]
        return list(dict.fromkeys(keys))

    def _extract(self, outputs: Any, batch: Any) -> dict[str, Tensor]:
        source = self.extractor(outputs, batch) if self.extractor is not None else outputs
        where = "the `extractor` result" if self.extractor is not None else "the `validation_step` output"
        if not isinstance(source, Mapping):
            raise TypeError(
                f"ImageMetricsCallback expected {where} to be a dict with keys {self._required_keys()}, but got "
                f"{type(source).__name__}. Return a dict from `validation_step` or pass `extractor=`."
            )
        missing = [key for key in self._required_keys() if key not in source]
        if missing:
            raise ValueError(
                f"ImageMetricsCallback needs {missing} in {where}, which has keys {sorted(map(str, source))}; set "
                "`preds_key`, `target_key` / `content_key`, or pass `extractor=`."
            )
        images = {}
        for key in self._required_keys():
            value = source[key]
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"Expected `{key}` in {where} to be a torch.Tensor, but got {type(value).__name__}."
                )
            images[key] = value.detach()
        return images

    def _keep(self, count: int) -> tuple[int, Tensor]:
        plan = self._plan
        assert plan is not None  # set in on_validation_epoch_start
        keep = count if plan.keep is None else max(0, min(count, plan.keep - self._seen))
        local = torch.arange(self._seen, self._seen + keep, dtype=torch.long)
        return keep, local * plan.world_size + plan.rank

    def _update_inception_metrics(self, images: dict[str, Tensor], positions: Tensor) -> None:
        if self._inception is None:
            return
        device = next(self._inception.parameters()).device
        fake = to_uint8(images[self.preds_key], self.preds_key, self.quantize)
        real = None
        if self._fid is not None:
            real = to_uint8(images[self.target_key], self.target_key, self.quantize)  # type: ignore[index]
            if real.shape[0] != fake.shape[0]:
                raise ValueError(
                    f"Expected `{self.preds_key}` and `{self.target_key}` to hold the same number of images, but "
                    f"got {fake.shape[0]} and {real.shape[0]}."
                )
            self._fingerprint += _checksum(real).to(self._fingerprint.device)  # type: ignore[operator]
        batch = fake if real is None or self._using_cached_real else torch.cat([fake, real.to(fake.device)])
        with exact_float32(device):
            features = self._inception(batch.to(device))
        n = fake.shape[0]
        if self._fid is not None:
            self._fid.update_features(features.pool3[:n], real=False)
            if not self._using_cached_real:
                self._fid.update_features(features.pool3[n:], real=True)
                self._num_real_forwarded += n
        if self._is is not None:
            self._is.update_logits(features.logits_unbiased[:n], positions)

    def _check_seen_count(self) -> None:
        plan = self._plan
        if plan is None or plan.dataset_len is None or plan.world_size <= 1:
            return
        expected = math.ceil(plan.dataset_len / plan.world_size)
        if self._seen > expected:
            rank_zero_warn(
                f"ImageMetricsCallback saw {self._seen} images on this process but its DistributedSampler holds "
                f"{expected} samples: `validation_step` outputs must hold one image per batch sample, or duplicates "
                "cannot be recognised."
            )

    # ------------------------------------------------------------------ sampler and duplicates

    def _val_dataloader(self, trainer: Trainer) -> Any:
        loaders = trainer.val_dataloaders
        if isinstance(loaders, Mapping):
            loaders = list(loaders.values())
        if isinstance(loaders, (list, tuple)):
            if self.dataloader_idx >= len(loaders):
                raise ValueError(
                    f"Expected `dataloader_idx` < {len(loaders)} (the number of validation dataloaders), but got "
                    f"{self.dataloader_idx}."
                )
            return loaders[self.dataloader_idx]
        return loaders

    def _sample_plan(self, trainer: Trainer) -> _SamplePlan:
        loader = self._val_dataloader(trainer)
        sampler = _find_sampler(loader)
        limit = self.max_samples
        if isinstance(sampler, DistributedSampler):
            world, rank = int(sampler.num_replicas), int(sampler.rank)
            dataset_len = len(sampler.dataset)  # type: ignore[arg-type]
            unique = dataset_len if limit is None else min(dataset_len, limit)
            keep = min(len(range(rank, unique, world)), int(sampler.num_samples))
            return _SamplePlan(world, rank, keep, dataset_len, _is_shuffled(sampler))
        world, rank = int(trainer.world_size), int(trainer.global_rank)
        if world > 1 and not self._warned_sampler:
            self._warned_sampler = True
            rank_zero_warn(
                "ImageMetricsCallback: the validation dataloader of this distributed run has no DistributedSampler "
                f"(got {type(sampler).__name__}), so samples repeated across processes cannot be recognised; every "
                "image each process sees is counted. Keep Lightning's `use_distributed_sampler=True` for exact "
                "multi-process metrics."
            )
        keep = None if limit is None else len(range(rank, limit, world))
        dataset = getattr(loader, "dataset", None)
        dataset_len = len(dataset) if _is_map_style(dataset) else None
        return _SamplePlan(world, rank, keep, dataset_len if world == 1 else None, _is_shuffled(sampler))

    # ------------------------------------------------------------------ real statistics cache

    def _cache_allowed(self) -> bool:
        if not self.cache_real_stats or self._caching_disabled:
            return False
        plan = self._plan
        if plan is not None and plan.shuffled and plan.keep is not None:
            if not self._warned_shuffle:
                self._warned_shuffle = True
                rank_zero_warn(
                    "ImageMetricsCallback: the validation sampler shuffles and `max_samples` keeps a subset, so the "
                    "real images change every epoch; their statistics are not cached."
                )
            return False
        return True

    def _cache_key(self, trainer: Trainer) -> str:
        if self._weights_digest is None:
            self._weights_digest = _module_digest(self._inception)  # type: ignore[arg-type]
        loader = self._val_dataloader(trainer)
        target = (
            self.target_key if self.extractor is None else f"{self.target_key} of {_qualname(self.extractor)}"
        )
        fields = {
            "format": _CACHE_FORMAT,
            "weights": self._weights_digest,
            "resize": self.resize,
            "quantize": self.quantize,
            "dataset": _dataset_identity(getattr(loader, "dataset", None)),
            "max_samples": self.max_samples,
            "limit_val_batches": str(trainer.limit_val_batches),
            "target": target,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()

    def _cache_path(self, key: str) -> Path:
        assert self.real_stats_dir is not None
        return self.real_stats_dir / f"fid_real_stats-{key[:24]}.npz"

    def _restore_real_stats(self, trainer: Trainer) -> bool:
        """Fix the FID real statistics from memory or disk if they match this epoch's key (same on every rank)."""
        key = self._epoch_key
        if self._real_cache is not None and self._real_cache["key"] == key:
            source: Any = "memory"
        else:
            source = None
            if trainer.is_global_zero and self.real_stats_dir is not None:
                source = _read_cache_file(self._cache_path(key))  # type: ignore[arg-type]
            source = trainer.strategy.broadcast(source, src=0)
            if source is not None:
                self._real_cache = {**source, "key": key}
        if source is None:
            return False
        cache = self._real_cache
        self._fid.set_real_statistics(cache["mu"], cache["sigma"], cache["num_samples"])  # type: ignore[union-attr]
        return True

    def _compute_fid(self, trainer: Trainer) -> Tensor:
        fid = self._fid
        assert fid is not None
        if self._epoch_key is None:
            return fid.compute()
        fingerprint = trainer.strategy.reduce(self._fingerprint, reduce_op="sum").cpu()  # type: ignore[arg-type]
        value = fid.compute()
        if self._using_cached_real:
            if not torch.equal(fingerprint, torch.as_tensor(self._real_cache["fingerprint"])):  # type: ignore[index]
                rank_zero_warn(
                    "ImageMetricsCallback: the validation target images differ from those the cached real FID "
                    f"statistics were computed from (e.g. random augmentation); epoch {trainer.current_epoch}'s FID "
                    "used the cached statistics. Caching is switched off for the rest of this run; pass "
                    "`cache_real_stats=False` if the validation set changes between epochs."
                )
                self._caching_disabled = True
                self._real_cache = None
            return value
        mu, sigma, n = fid.real_statistics()
        self._real_cache = {
            "key": self._epoch_key,
            "mu": mu.detach().cpu(),
            "sigma": sigma.detach().cpu(),
            "num_samples": int(n),
            "fingerprint": fingerprint.tolist(),
        }
        if self.real_stats_dir is not None:
            if trainer.is_global_zero:
                _write_cache_file(self._cache_path(self._epoch_key), self._real_cache)
            trainer.strategy.barrier("ImageMetricsCallback.real_stats")
        return value


# ---------------------------------------------------------------------- helpers


def _check_metric_names(metrics: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    names = tuple(dict.fromkeys(str(m).lower() for m in metrics))
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown or not names:
        raise ValueError(
            f"Expected `metrics` to be a non-empty subset of {METRIC_NAMES}, but got {tuple(metrics)!r}."
        )
    return names


def _check_int(value: object, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Expected `{name}` to be an integer, but got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"Expected `{name}` to be >= {minimum}, but got {value}.")


def _batch_count(images: Mapping[str, Tensor]) -> int:
    counts = {name: (int(x.shape[0]) if x.ndim > 0 else -1) for name, x in images.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"Expected the image batches to hold the same number of images, but got {counts}.")
    return next(iter(counts.values()))


def _find_sampler(loader: Any) -> Any:
    batch_sampler = getattr(loader, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    if isinstance(inner, DistributedSampler):
        return inner
    return getattr(loader, "sampler", None)


def _is_shuffled(sampler: Any) -> bool:
    if isinstance(sampler, RandomSampler):
        return True
    if isinstance(sampler, DistributedSampler):
        wrapped = getattr(getattr(sampler, "dataset", None), "_sampler", None)  # Lightning's sampler wrapper
        return bool(sampler.shuffle) or isinstance(wrapped, RandomSampler)
    return False


def _is_map_style(dataset: Any) -> bool:
    return dataset is not None and not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__")


def _checksum(images: Tensor) -> Tensor:
    """Order-independent int64 checksum of uint8 images: ``[count, sum, sum of squares]``."""
    x = images.to(torch.long)
    return torch.stack([torch.tensor(x.shape[0], device=x.device), x.sum(), (x * x).sum()])


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _module_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def _dataset_identity(dataset: Any, probes: int = 3) -> dict[str, Any]:
    """Type, length and a digest of a few samples of a map-style dataset (what the real statistics depend on)."""
    identity: dict[str, Any] = {"type": _qualname(type(dataset))}
    if not _is_map_style(dataset):
        return identity
    length = len(dataset)
    identity["len"] = length
    digest = hashlib.sha256()
    try:
        for index in sorted({0, length // 2, length - 1} if length else set())[:probes]:
            _digest_sample(digest, dataset[index])
    except Exception as err:  # noqa: BLE001 (a dataset that cannot be probed is identified by type and length)
        log.debug("ImageMetricsCallback could not probe the validation dataset: %s", err)
        identity["probe"] = None
        return identity
    identity["probe"] = digest.hexdigest()
    return identity


def _digest_sample(digest: Any, sample: Any) -> None:
    if isinstance(sample, Tensor):
        digest.update(str((sample.dtype, tuple(sample.shape))).encode())
        digest.update(sample.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(sample, np.ndarray):
        digest.update(str((sample.dtype, sample.shape)).encode())
        digest.update(np.ascontiguousarray(sample).tobytes())
    elif isinstance(sample, Mapping):
        for key in sorted(sample, key=str):
            digest.update(str(key).encode())
            _digest_sample(digest, sample[key])
    elif isinstance(sample, (list, tuple)):
        for item in sample:
            _digest_sample(digest, item)
    elif hasattr(sample, "tobytes"):  # PIL images
        digest.update(sample.tobytes())
    else:
        digest.update(repr(sample).encode())


def _read_cache_file(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        mu, sigma = load_stats(path)
        with np.load(path, allow_pickle=False) as archive:
            num_samples = int(archive["num_samples"])
            fingerprint = [int(v) for v in archive["fingerprint"]]
    except (OSError, KeyError, ValueError) as err:
        rank_zero_warn(f"ImageMetricsCallback ignored the unreadable real statistics file {path}: {err}")
        return None
    return {"mu": mu, "sigma": sigma, "num_samples": num_samples, "fingerprint": fingerprint}


def _write_cache_file(path: Path, cache: Mapping[str, Any]) -> None:
    """Write the pytorch-fid ``.npz`` (``mu``, ``sigma``, plus the count and checksum) atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    mu=cache["mu"].numpy(),
                    sigma=cache["sigma"].numpy(),
                    num_samples=np.int64(cache["num_samples"]),
                    fingerprint=np.asarray(cache["fingerprint"], dtype=np.int64),
                )
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)
    except OSError as err:
        rank_zero_warn(f"ImageMetricsCallback could not write the real statistics to {path}: {err}")
