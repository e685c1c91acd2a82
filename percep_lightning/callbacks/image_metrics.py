r"""Image metrics (FID, IS, KID, CFSD, PSNR, SSIM, MS-SSIM, LPIPS, ArtFID, any metric of the registry or of your
own feature extractor) logged at the end of every validation (and test) epoch, exact under DDP.

The callback reads images from what ``validation_step`` / ``test_step`` returns, feeds the metrics and logs
``val/<name>`` (``val/fid``, ``val/is``, ``val/is_std``, ...; ``test/...`` under ``trainer.test()``). Its
collaborators each hold one concern: :mod:`.metric_set` (which metrics, built from
:mod:`percep_lightning.metrics.registry` or brought by the user, and how a batch feeds them),
:mod:`.sample_plan` (which images a process keeps under DDP), :mod:`.real_stats` (the cached real statistics)
and :mod:`.step_outputs` (reading the step outputs).

Metric states are synchronised across processes on every process (``compute`` is never wrapped in
``rank_zero_only``, which would deadlock), and every process logs the same values.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import Metric

from percep_lightning.callbacks.metric_set import DEFAULT_METRICS, MetricSet
from percep_lightning.callbacks.real_stats import (
    RealStats,
    RealStatsStore,
    qualname,
    real_stats_key,
    weights_digest,
)
from percep_lightning.callbacks.sample_plan import SamplePlan, plan_samples
from percep_lightning.callbacks.step_outputs import Extractor, extract_images
from percep_lightning.functional.fid import feature_statistics, feature_sums
from percep_lightning.functional.inputs import check_int
from percep_lightning.metrics._images import to_uint8
from percep_lightning.metrics.feeding import synced_compute
from percep_lightning.metrics.fid import FrechetInceptionDistance
from percep_lightning.metrics.kid import KernelInceptionDistance
from percep_lightning.metrics.registry import NETWORKS

STAGES = {"validate": "val", "test": "test"}
DEFAULT_KEYS: Mapping[str, str | None] = {
    "preds": "preds",
    "target": "target",
    "content": None,
    "style": None,
}
"""The step-output key of each image role (``content`` ``None``: the ``target`` key)."""


@dataclass
class _Epoch:
    """What one evaluation epoch accumulates besides the metric states."""

    stage: str
    plan: SamplePlan
    seen: int = 0
    real_key: str | None = None  # the real-statistics key when caching is on this epoch
    cached_real: bool = False  # FID's and KID's real sides fixed from the store
    fingerprint: Tensor | None = None


class ImageMetricsCallback(Callback):
    r"""Log image metrics at the end of each validation (and test) epoch, on one or many processes.

    Add it to the ``Trainer`` and return a dict from ``validation_step`` (and ``test_step``)::

        def validation_step(self, batch, batch_idx):
            x, y = batch
            return {"preds": self(x).clamp(0, 1), "target": y}

        trainer = Trainer(callbacks=[ImageMetricsCallback(weights={"inception": "pt_inception-2015-12-05-6726825d.pth"})])

    Images are ``uint8`` in [0, 255] or float in [0, 1], ``(N, 3, H, W)`` (or one channel). The metrics are
    those of :mod:`percep_lightning.metrics.registry`, by the same names as ``percep-lightning evaluate``
    (``percep-lightning evaluate --list-metrics`` prints them): ``fid``, ``is`` (logs ``is`` and
    ``is_std``), ``kid`` (``kid``, ``kid_std``), ``cfsd`` and ``lpips_content`` (against the content
    images), ``psnr``, ``ssim``, ``ms_ssim``, ``psnr_y``, ``ssim_y``, ``lpips``, ``lpips_vgg``,
    ``fid_style`` and ``fid_art`` (against the style images), and ``artfid`` (which also logs the
    ``lpips_content`` and ``fid_art`` it is computed from). Your own metrics join by name::

        net = MyEncoder()  # any nn.Module mapping (N, 3, H, W) images in [0, 1] to (N, D) features
        ImageMetricsCallback(metrics={"fid": "fid", "fd_mine": FrechetDistance(net)})

    A :class:`~percep_lightning.metrics.FrechetDistance` or :class:`~percep_lightning.metrics.KernelDistance`
    is fed the ``preds`` images as generated and the ``target`` images as real ones, other ``Metric`` objects
    ``update(preds, target)``. One forward of each feature network per image feeds every metric holding it
    (FID, IS and KID share the FID Inception).

    Early errors: at the start of every evaluation (the sanity check included) the callback checks that the
    evaluation set holds enough images for the metrics, and during the sanity check it validates the step
    outputs (a dict or ``extractor``, keys present, ``(N, 1 or 3, H, W)``, uint8 or float in [0, 1] up to a
    rounding tolerance, large enough for every metric) without computing metrics.

    Real statistics (FID's mean and covariance; with KID also the per-image pool3 features of the real
    images) are computed in the first epoch and reused while the evaluation set is unchanged
    (``real_stats``); the key is a hash of everything they depend on (Inception weights, resize,
    quantisation, dataset type, length and a digest of a few samples, ``max_samples``, the batch limit and
    the target key). At the end of an epoch that reused them, a checksum of the target images seen is
    compared with the cached one; if they differ (e.g. random augmentation) a warning is given and caching
    is switched off for the run. Checkpoints hold only the key and a file name: the statistics are written
    once as a pytorch-fid ``.npz`` into the ``real_stats`` folder (shared by runs, written at once and read
    by key), or by default into ``<log_dir or default_root_dir>/real_stats`` when a checkpoint is saved. A
    resumed run reads that file and logs the same values as an uninterrupted one; when the file is gone it
    recomputes the statistics (one info line).

    Distributed runs: the duplicates that ``DistributedSampler`` pads the last batches with are dropped
    (:mod:`percep_lightning.callbacks.sample_plan`), so the values on several processes equal those on one
    process (for FID, KID, FD, the paired metrics always; for IS when the sampler does not shuffle,
    Lightning's default). With ``use_distributed_sampler=False`` duplicates cannot be recognised: a warning
    is given and every image each process sees is counted. Warnings of the metrics and backbones (random
    weights, rank-deficient covariance) are given once per run, on rank zero.

    Args:
        metrics: registry names, or a mapping from the logged name to a registry name or to a ``Metric``.
        keys: the step-output key of each image role: ``{"preds": "preds", "target": "target",
            "content": None, "style": None}`` by default (``content`` ``None``: the ``target`` key). Roles
            not given keep their default.
        options: per-metric options, one mapping per registry name (``{"is": {"splits": 10}, "kid":
            {"subsets": 100, "subset_size": 1000}, "psnr": {"channel": "y", "crop_border": 4}, "lpips":
            {"net": "vgg"}, "cfsd": {"chunk_size": 1024}, "fid_art": {"resize": 512}}``), plus the shared
            ``"resize"`` of the FID Inception (``"tensorflow"``, torch-fidelity's and the default,
            ``"pytorch_fid"``, ``"clean"`` or ``"bilinear"``) and ``"quantize"`` (how float images become
            ``uint8``: ``"round"`` as when saving a PNG, or ``"truncate"``, torchmetrics' ``normalize=True``).
        weights: the pretrained weights: one value for every network (``"default"``: the official files,
            ``None``: random, for smoke tests), or a mapping by network name (``"inception"``,
            ``"art_inception"``, ``"alexnet"``, ``"vgg16"``, ``"vgg19"``, ``"squeezenet1_1"``) to a value, a
            file path, or an already built network to share (e.g. an
            :class:`~percep_lightning.backbones.FIDInceptionV3`); missing names are ``"default"``.
        every_n_epochs: compute on every n-th validation epoch only (``(epoch + 1) % n == 0``);
            ``trainer.validate`` and ``trainer.test`` always compute.
        max_samples: at most this many images per epoch (the first ones of the dataset, the same on any number
            of processes); ``None`` for all.
        real_stats: reuse the real-image statistics across epochs (``True``, files in the run's folder), a
            folder shared by runs for them, or ``False`` (recompute every epoch).
        extractor: ``extractor(outputs, batch) -> dict`` to build the dict of images from the step output and
            the batch, when the output is not such a dict already.
        prefix: prefix of the logged names; ``None`` (default) uses the stage, ``"val/"`` during validation
            and ``"test/"`` during ``trainer.test()``.
        prog_bar: also show the logged values in the progress bar.
        dataloader_idx: which evaluation dataloader feeds the metrics (others are ignored).

    Raises:
        ValueError: for an unknown metric name, role, option or network name of ``weights``, a missing key
            needed by a metric, ``every_n_epochs < 1``, ``max_samples`` too small for the metrics, or bad
            option values.
        TypeError: if ``extractor`` is not callable, a metric is neither a name nor a ``Metric``, an integer
            option is not an integer, or a ``weights`` value is none of the kinds above.

    Example:
        >>> from percep_lightning.callbacks import ImageMetricsCallback
        >>> callback = ImageMetricsCallback(("fid", "is", "kid", "psnr_y"), options={"is": {"splits": 2}})
        >>> callback.metric_names
        ('fid', 'is', 'kid', 'psnr_y')
    """

    def __init__(
        self,
        metrics: Sequence[str] | Mapping[str, str | Metric] = DEFAULT_METRICS,
        *,
        keys: Mapping[str, str | None] | None = None,
        options: Mapping[str, Any] | None = None,
        weights: Any = "default",
        every_n_epochs: int = 1,
        max_samples: int | None = None,
        real_stats: bool | str | os.PathLike[str] = True,
        extractor: Extractor | None = None,
        prefix: str | None = None,
        prog_bar: bool = False,
        dataloader_idx: int = 0,
    ) -> None:
        super().__init__()
        self._set = MetricSet(metrics, options)
        self.metric_names = self._set.names
        self.keys = _resolve_keys(keys)
        _check_role_keys(self._set, self.keys)
        _check_weights(weights)
        check_int(every_n_epochs, "every_n_epochs", minimum=1)
        check_int(dataloader_idx, "dataloader_idx", minimum=0)
        if extractor is not None and not callable(extractor):
            raise TypeError(f"Expected `extractor` to be callable, but got {type(extractor).__name__}.")
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"Expected `prefix` to be a str or None, but got {type(prefix).__name__}.")
        if not isinstance(real_stats, (bool, str, os.PathLike)):
            raise TypeError(
                f"Expected `real_stats` to be a bool or a folder, but got {type(real_stats).__name__}."
            )
        self.every_n_epochs = every_n_epochs
        self.max_samples = max_samples
        self.weights = weights
        self.extractor = extractor
        self.prefix = prefix
        self.prog_bar = bool(prog_bar)
        self.dataloader_idx = dataloader_idx
        self.cache_real_stats = real_stats is not False
        if max_samples is not None:
            check_int(max_samples, "max_samples", minimum=max(self._set.min_images()[0], 1))

        self._metrics: dict[str, Metric] = {}  # built in `setup` (after DDP processes are spawned)
        self._inception: Any = None
        folder = None if isinstance(real_stats, bool) else real_stats
        self._store = RealStatsStore(folder)
        self._caching_disabled = False
        self._epoch: _Epoch | None = None
        self._check_only = False
        self._real_forwarded = 0
        self._warned: set[str] = set()
        self._weights_digest: str | None = None

    # ------------------------------------------------------------------ public state

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            metrics=self.metric_names,
            preds_key=self.keys["preds"],
            target_key=self.keys["target"],
            prefix=self.prefix,
        )

    @property
    def metrics(self) -> Mapping[str, Metric]:
        """The metrics by logged name (built in ``setup``); their public states hold the epoch's accumulation."""
        return dict(self._metrics)

    @property
    def real_stats_cached(self) -> bool:
        """Whether real-image statistics are held for reuse."""
        return self._store.entry is not None

    @property
    def real_images_forwarded(self) -> int:
        """Real images run through a feature network so far (epochs that reuse cached statistics add none)."""
        return self._real_forwarded

    def state_dict(self) -> dict[str, Any]:
        """The key and file of the cached real statistics (not the statistics themselves)."""
        return self._store.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._store.load_state_dict(state_dict)

    # ------------------------------------------------------------------ hooks

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._store.set_run_directory(os.path.join(trainer.log_dir or trainer.default_root_dir, "real_stats"))
        self._warned.clear()
        if self._metrics:
            return
        with self._warnings_once():
            context = self._set.build(_weights_by_network(self.weights))
        self._metrics = self._set.metrics()
        self._inception = context.networks.get("inception")
        caching = self._inception is not None and self._caching_metrics() and self.cache_real_stats
        if caching and trainer.is_global_zero:  # hashing the weights is cached per file or module: once, here
            self._weights_digest = weights_digest(self._inception_weights(), self._inception)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._batch(pl_module, outputs, batch, dataloader_idx)

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._batch(pl_module, outputs, batch, dataloader_idx)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._store.persist(trainer.is_global_zero)

    # ------------------------------------------------------------------ epoch steps

    def _start(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._epoch = None
        self._check_only = False
        if not self._should_run(trainer, stage):
            return
        loader = self._loader(trainer, stage)
        plan = plan_samples(
            loader,
            world_size=int(trainer.world_size),
            rank=int(trainer.global_rank),
            max_samples=self.max_samples,
        )
        self._check_capacity(trainer, loader, plan, stage)
        if not plan.recognises_duplicates:
            self._warn_once(
                "ImageMetricsCallback: the evaluation dataloader of this distributed run has no DistributedSampler, "
                "so samples repeated across processes cannot be recognised; every image each process sees is "
                "counted. Keep Lightning's `use_distributed_sampler=True` for exact multi-process metrics."
            )
        if trainer.sanity_checking:
            self._check_only = True
            return
        epoch = _Epoch(stage, plan)
        self._set.start(pl_module.device)
        if self._caching_metrics():
            epoch.fingerprint = torch.zeros(3, dtype=torch.long, device=pl_module.device)
            fid = self._metrics.get("fid")
            if isinstance(fid, FrechetInceptionDistance):
                fid.clear_real_statistics()
            if self._cache_allowed(plan):
                key = self._real_key(trainer, loader, stage) if trainer.is_global_zero else None
                epoch.real_key = trainer.strategy.broadcast(key, src=0)
                found = self._store.lookup(epoch.real_key, trainer)
                if found is not None and (found.features is not None or "kid" not in self._metrics):
                    self._restore_real(found, trainer)
                    epoch.cached_real = True
        self._epoch = epoch

    def _batch(self, pl_module: LightningModule, outputs: Any, batch: Any, dataloader_idx: int) -> None:
        if dataloader_idx != self.dataloader_idx or not (self._check_only or self._epoch is not None):
            return
        stage = self._epoch.stage if self._epoch is not None else "val"
        step = "test_step" if stage == "test" else "validation_step"
        by_key = extract_images(outputs, batch, keys=self._keys(), extractor=self.extractor, step=step)
        images = {role: by_key[self._key_of(role)] for role in self._set.roles()}
        epoch = self._epoch
        if epoch is None:  # sanity check: outputs validated, nothing computed
            self._set.check_sizes(images, self._describe)
            return
        count = images["preds"].shape[0]
        keep, positions = epoch.plan.select(epoch.seen, count)
        epoch.seen += count
        if keep == 0:
            return
        images = {role: x[:keep] for role, x in images.items()}
        if epoch.fingerprint is not None:
            target = to_uint8(images["target"], self._key_of("target"), self._set.quantize)
            epoch.fingerprint += _checksum(target).to(epoch.fingerprint.device)
        fixed = [name for name in ("fid", "kid") if epoch.cached_real and name in self._metrics]
        self._real_forwarded += self._set.update(images, positions.to(pl_module.device), fixed_real=fixed)

    def _end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch, self._epoch = self._epoch, None
        self._check_only = False
        if epoch is None:
            return
        expected = epoch.plan.expected_count()
        if expected is not None and epoch.seen > expected:
            self._warn_once(
                f"ImageMetricsCallback saw {epoch.seen} images on this process but its DistributedSampler holds "
                f"{expected} samples: step outputs must hold one image per batch sample, or duplicates cannot be "
                "recognised."
            )
        with self._warnings_once():
            values = self._compute(trainer, epoch)
        prefix = self.prefix if self.prefix is not None else f"{epoch.stage}/"
        for name, value in values.items():
            # Every process holds the same synchronised value; `max` over processes returns it unchanged and
            # keeps Lightning from warning about unsynchronised epoch-level logging.
            pl_module.log(
                f"{prefix}{name}", value.detach().float(), sync_dist=True, reduce_fx="max", on_step=False,
                on_epoch=True, prog_bar=self.prog_bar,
            )  # fmt: skip

    # ------------------------------------------------------------------ helpers

    def _should_run(self, trainer: Trainer, stage: str) -> bool:
        if trainer.sanity_checking or stage == "test":
            return True
        fn = trainer.state.fn
        if fn is not None and fn.value == "validate":
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _key_of(self, role: str) -> str:
        key = self.keys[role]
        return self.keys["target"] if key is None and role == "content" else key  # type: ignore[return-value]

    def _describe(self, role: str) -> str:
        """The callback argument naming the output key of ``role``, with the key, for messages."""
        named = "target" if role == "content" and self.keys["content"] is None else role
        return f"`keys[{named!r}]`={self._key_of(role)!r}"

    def _keys(self) -> dict[str, str]:
        """Output key -> the argument naming it, for every image the metrics read."""
        keys: dict[str, str] = {}
        for role in sorted(self._set.roles(), key=("preds", "target", "content", "style").index):
            keys.setdefault(self._key_of(role), self._describe(role).split("=")[0].strip("`"))
        return keys

    def _caching_metrics(self) -> list[str]:
        """The requested metrics whose real side the store can hold (FID, KID on the target images)."""
        entries = self._set.entries
        return [name for name in ("fid", "kid") if name in entries and _registry_name(entries[name]) == name]

    def _check_capacity(self, trainer: Trainer, loader: Any, plan: SamplePlan, stage: str) -> None:
        """Raise a ValueError when the epoch cannot hold enough images for every metric."""
        available = plan.dataset_len
        if available is None:
            dataset = getattr(getattr(loader, "sampler", None), "dataset", None)
            available = len(dataset) if hasattr(dataset, "__len__") else None  # type: ignore[arg-type]
        if available is None:
            return
        if self.max_samples is not None:
            available = min(available, self.max_samples)
        batches = trainer.num_test_batches if stage == "test" else trainer.num_val_batches
        batch_size = getattr(loader, "batch_size", None)
        if not trainer.sanity_checking and self.dataloader_idx < len(batches) and batch_size:
            limit = batches[self.dataloader_idx]
            if limit != float("inf"):
                available = min(available, int(limit) * int(batch_size) * plan.world_size)
        needed, name = self._set.min_images()
        if available < needed:
            what = "validation" if stage == "val" else "test"
            entry = self._set.entries[name]
            why = self._set.why_min(name).replace("`splits`", f"`splits`={entry.options.get('splits')}")
            raise ValueError(
                f"ImageMetricsCallback needs at least {needed} {what} images for metric {name!r} ({why}), but the "
                f"{what} epoch holds {available}; add images, raise `max_samples` or the batch limit, or lower "
                f"{'the `splits` option of is' if name == 'is' else 'the metrics'}."
            )

    def _loader(self, trainer: Trainer, stage: str) -> Any:
        loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
        if isinstance(loaders, Mapping):
            loaders = list(loaders.values())
        if isinstance(loaders, (list, tuple)):
            if self.dataloader_idx >= len(loaders):
                raise ValueError(
                    f"Expected `dataloader_idx` < {len(loaders)} (the number of evaluation dataloaders), but got "
                    f"{self.dataloader_idx}."
                )
            return loaders[self.dataloader_idx]
        return loaders

    def _cache_allowed(self, plan: SamplePlan) -> bool:
        if not self.cache_real_stats or self._caching_disabled:
            return False
        if plan.shuffled and plan.keep is not None:
            self._warn_once(
                "ImageMetricsCallback: the evaluation sampler shuffles and `max_samples` keeps a subset, so the real "
                "images change every epoch; their statistics are not cached."
            )
            return False
        return True

    def _inception_weights(self) -> Any:
        weights = self.weights
        return weights.get("inception", "default") if isinstance(weights, Mapping) else weights

    def _real_key(self, trainer: Trainer, loader: Any, stage: str) -> str:
        inception = self._inception
        target = (
            self.keys["target"]
            if self.extractor is None
            else f"{self.keys['target']} of {qualname(self.extractor)}"
        )
        limit = trainer.limit_test_batches if stage == "test" else trainer.limit_val_batches
        options = {
            "resize": inception.resize,
            "quantize": self._set.quantize,
            "max_samples": self.max_samples,
            "limit_batches": str(limit),
            "target": target,
        }
        return real_stats_key(
            weights=self._weights_digest or weights_digest(self._inception_weights(), inception),
            dataset=getattr(loader, "dataset", None),
            options=options,
        )

    def _restore_real(self, found: RealStats, trainer: Trainer) -> None:
        """Fix the real sides of FID and KID from the store (KID: this process's share of the features)."""
        fid = self._metrics.get("fid")
        if isinstance(fid, FrechetInceptionDistance):
            fid.set_real_statistics(found.mu, found.sigma, found.num_samples)
        kid = self._metrics.get("kid")
        if isinstance(kid, KernelInceptionDistance) and found.features is not None:
            # each process adds every world_size-th row with its position, so the gather holds each once
            rows = torch.arange(int(trainer.global_rank), found.features.shape[0], int(trainer.world_size))
            kid.update_features(found.features[rows].to(kid.device), real=True, indices=rows.to(kid.device))

    def _compute(self, trainer: Trainer, epoch: _Epoch) -> dict[str, Tensor]:
        """Every metric's logged values, each from one synchronisation; fresh real statistics go to the store."""
        fresh: dict[str, Any] = {}

        def compute_one(name: str, metric: Metric) -> Any:
            if name in self._caching_metrics() and epoch.real_key is not None and not epoch.cached_real:
                return _compute_keeping_real(metric, fresh)
            return synced_compute(metric)

        values = self._set.compute(compute_one)
        if epoch.real_key is not None:
            fingerprint = trainer.strategy.reduce(epoch.fingerprint, reduce_op="sum").cpu()  # type: ignore[arg-type]
            if epoch.cached_real:
                self._check_fingerprint(trainer, fingerprint)
            else:
                self._store.remember(_real_stats(epoch.real_key, fresh, fingerprint.tolist()), trainer)
        return values

    def _check_fingerprint(self, trainer: Trainer, fingerprint: Tensor) -> None:
        """Switch caching off when the target images differ from those the cached statistics came from."""
        entry = self._store.entry
        if entry is not None and not torch.equal(fingerprint, torch.as_tensor(entry.fingerprint)):
            rank_zero_warn(
                "ImageMetricsCallback: the target images differ from those the cached real FID statistics were "
                f"computed from (e.g. random augmentation); epoch {trainer.current_epoch}'s FID/KID used the "
                "cached statistics. Caching is switched off for the rest of this run; pass "
                "`real_stats=False` if the evaluation set changes between epochs."
            )
            self._caching_disabled = True
            self._store.forget()

    @contextlib.contextmanager
    def _warnings_once(self) -> Iterator[None]:
        """Collect the warnings of the block and give each distinct one once per run, on rank zero."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for warning in caught:
            self._warn_once(str(warning.message), warning.category)

    def _warn_once(self, message: str, category: type[Warning] = UserWarning) -> None:
        if message not in self._warned:
            self._warned.add(message)
            rank_zero_warn(message, category=category)


def _compute_keeping_real(metric: Metric, fresh: dict[str, Any]) -> Any:
    """``compute()`` of FID or KID on synchronised states, keeping their real side in ``fresh`` for the store."""
    with metric.sync_context(dist_sync_fn=metric.dist_sync_fn):
        if isinstance(metric, FrechetInceptionDistance):
            mu, sigma, n = metric.real_statistics()
            metric.set_real_statistics(mu, sigma, n)  # compute() below reuses them instead of rebuilding them
            fresh.update(mu=mu.detach().cpu(), sigma=sigma.detach().cpu(), num_samples=int(n))
        elif isinstance(metric, KernelInceptionDistance):
            fresh["features"] = metric.ordered_features(real=True).detach().cpu()
        return metric.compute()


def _real_stats(key: str, fresh: Mapping[str, Any], fingerprint: list[int]) -> RealStats:
    """The store entry of an epoch; without FID its mean and covariance come from KID's features."""
    features = fresh.get("features")
    if "mu" in fresh:
        mu, sigma, n = fresh["mu"], fresh["sigma"], fresh["num_samples"]
    else:
        total, outer, n = feature_sums(features.to(torch.float64))
        mu, sigma = feature_statistics(total, outer, n)
    return RealStats(key, mu, sigma, int(n), fingerprint, features)


def _registry_name(entry: Any) -> str | None:
    return entry.spec.name if entry.spec is not None else None


def _resolve_keys(keys: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """The default keys updated with ``keys``, each role known and each key a string (or ``None``)."""
    if keys is None:
        return dict(DEFAULT_KEYS)
    if not isinstance(keys, Mapping):
        raise TypeError(f"Expected `keys` to be a mapping from role to key, but got {type(keys).__name__}.")
    unknown = sorted(set(keys) - set(DEFAULT_KEYS))
    if unknown:
        raise ValueError(
            f"Expected the roles in `keys` to be some of {tuple(DEFAULT_KEYS)}, but got {unknown}."
        )
    for role, key in keys.items():
        if key is not None and not isinstance(key, str):
            raise TypeError(f"Expected `keys[{role!r}]` to be a str or None, but got {type(key).__name__}.")
    return {**DEFAULT_KEYS, **keys}


def _check_role_keys(metric_set: MetricSet, keys: Mapping[str, str | None]) -> None:
    """Raise a ValueError when a requested metric reads images whose key is ``None``."""
    for name, entry in metric_set.entries.items():
        for role in entry.roles:
            if keys[role] is not None or (role == "content" and keys["target"] is not None):
                continue
            fix = (
                "set `keys['content']` (or `keys['target']`)"
                if role == "content"
                else f"set `keys[{role!r}]`"
            )
            raise ValueError(f"Metric {name!r} needs {role} images: {fix}.")


def _weights_by_network(weights: Any) -> dict[str, Any]:
    """``weights`` as a mapping by network name: one value for every network, or the mapping given."""
    if _by_network(weights):
        return dict(weights)
    return dict.fromkeys(NETWORKS, weights)


def _check_weights(weights: Any) -> None:
    """Raise unless ``weights`` is one value for every network or a mapping from network names to values."""
    if not _by_network(weights):
        _check_weights_value(weights, "`weights`")
        return
    unknown = sorted(str(name) for name in weights if name not in NETWORKS)
    if unknown:
        raise ValueError(
            f"Expected the keys of `weights` to be network names of {NETWORKS}, but got {unknown}."
        )
    for name, value in weights.items():
        _check_weights_value(value, f"`weights[{name!r}]`")


def _check_weights_value(value: object, where: str) -> None:
    if value is None or isinstance(value, (str, os.PathLike, nn.Module)):
        return
    if isinstance(value, Mapping) and _is_state_dict(value):
        return
    raise TypeError(
        f'Expected {where} to be "default", a file path, None (random weights), a state dict or a built network, '
        f"but got {type(value).__name__}."
    )


def _by_network(weights: Any) -> bool:
    """Whether ``weights`` maps network names to weights (rather than being one state dict for every network)."""
    return isinstance(weights, Mapping) and not _is_state_dict(weights)


def _is_state_dict(value: Mapping[str, Any]) -> bool:
    return bool(value) and all(isinstance(v, Tensor) for v in value.values())


def _checksum(images: Tensor) -> Tensor:
    """Order-independent int64 checksum of uint8 images: ``[count, sum, sum of squares]``."""
    x = images.to(torch.long)
    return torch.stack([torch.tensor(x.shape[0], device=x.device), x.sum(), (x * x).sum()])
