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
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from percep_lightning.callbacks.arguments import (
    check_role_keys,
    check_weights,
    resolve_keys,
    weights_by_network,
)
from percep_lightning.callbacks.metric_set import DEFAULT_METRICS, MetricSet
from percep_lightning.callbacks.sample_plan import SamplePlan, plan_samples
from percep_lightning.callbacks.stats_cache import CachedEpoch, RealStatsCaches, cached_groups
from percep_lightning.callbacks.step_outputs import Extractor, extract_images
from percep_lightning.functional.inputs import check_int
from percep_lightning.metrics._images import to_uint8

STAGES = {"validate": "val", "test": "test"}


@dataclass
class _Epoch:
    """What one evaluation epoch accumulates besides the metric states."""

    stage: str
    plan: SamplePlan
    cache: dict[str, CachedEpoch] = field(default_factory=dict)
    seen: int = 0


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

    A :class:`~percep_lightning.metrics.FrechetDistance`, :class:`~percep_lightning.metrics.KernelDistance`,
    :class:`~percep_lightning.metrics.CMMD` or :class:`~percep_lightning.metrics.PRDC` is fed the ``preds`` images as generated and the ``target`` images as real ones, other ``Metric`` objects
    ``update(preds, target)``. One forward of each feature network per image feeds every metric holding it
    (FID, IS and KID share the FID Inception).

    Early errors: at the start of every evaluation (the sanity check included) the callback checks that the
    evaluation set holds enough images for the metrics, and during the sanity check it validates the step
    outputs (a dict or ``extractor``, keys present, ``(N, 1 or 3, H, W)``, uint8 or float in [0, 1] up to a
    rounding tolerance, large enough for every metric) without computing metrics.

    Real statistics (FID's mean and covariance; with KID also the per-image pool3 features of the real
    images; likewise per network for the DINOv2 and CLIP metrics, one file each) are computed in the first
    epoch and reused while the evaluation set is unchanged (``real_stats``); the key is a hash of everything
    they depend on (the network's weights and preprocessing, quantisation, dataset type, length and a digest of a few samples, ``max_samples``, the batch limit and
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
            ``"art_inception"``, ``"alexnet"``, ``"vgg16"``, ``"vgg19"``, ``"squeezenet1_1"``,
            ``"dinov2_vitl14"``, ``"clip_vit_l14_336"``) to a value, a file path, or an already built network
            to share (e.g. an :class:`~percep_lightning.backbones.FIDInceptionV3`, or a
            :class:`~percep_lightning.backbones.DINOv2` of another size); missing names are ``"default"``.
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
        self.keys = resolve_keys(keys)
        check_role_keys(self._set, self.keys)
        check_weights(weights)
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
        if max_samples is not None:
            check_int(max_samples, "max_samples", minimum=max(self._set.min_images()[0], 1))

        self._metrics: dict[str, Metric] = {}  # built in `setup` (after DDP processes are spawned)
        self._stats_cache = RealStatsCaches(real_stats, self._warn_once)
        self._epoch: _Epoch | None = None
        self._check_only = False
        self._real_forwarded = 0
        self._warned: set[str] = set()

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
        return self._stats_cache.cached

    @property
    def real_images_forwarded(self) -> int:
        """Real images run through a feature network so far (epochs that reuse cached statistics add none)."""
        return self._real_forwarded

    def state_dict(self) -> dict[str, Any]:
        """The key and file of the cached real statistics (not the statistics themselves)."""
        return self._stats_cache.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._stats_cache.load_state_dict(state_dict)

    # ------------------------------------------------------------------ hooks

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._stats_cache.set_run_directory(
            os.path.join(trainer.log_dir or trainer.default_root_dir, "real_stats")
        )
        self._warned.clear()
        if self._metrics:
            return
        with self._warnings_once():
            context = self._set.build(weights_by_network(self.weights))
        self._metrics = self._set.metrics()
        weights = weights_by_network(self.weights)
        self._stats_cache.setup(cached_groups(self._set, context.networks), weights, trainer)

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
        self._stats_cache.persist(trainer.is_global_zero)

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
        self._set.start(pl_module.device)
        limit = trainer.limit_test_batches if stage == "test" else trainer.limit_val_batches
        key_options = {
            "quantize": self._set.quantize,
            "max_samples": self.max_samples,
            "limit_batches": str(limit),
            "target": self.keys["target"],
            "extractor": self.extractor,
        }
        epoch = _Epoch(
            stage, plan, self._stats_cache.begin(trainer, loader, plan, pl_module.device, key_options)
        )
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
        if any(cached.fingerprint is not None for cached in epoch.cache.values()):
            self._stats_cache.see_targets(
                epoch.cache, to_uint8(images["target"], self._key_of("target"), self._set.quantize)
            )
        fixed = self._stats_cache.fixed(epoch.cache)
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

    def _epoch_batches(self, trainer: Trainer, loader: Any, stage: str) -> int | None:
        """The batches a real evaluation epoch runs on this process (``None``: all of them, or unknown).

        During the sanity check Lightning's count is the sanity steps, so the epoch's is worked out from the
        batch limit (``limit_val_batches`` / ``limit_test_batches``: a count or a fraction) and the loader's
        length, and a set too small for the metrics fails before the first training step.
        """
        if not trainer.sanity_checking:
            batches = trainer.num_test_batches if stage == "test" else trainer.num_val_batches
            if self.dataloader_idx < len(batches) and batches[self.dataloader_idx] != float("inf"):
                return int(batches[self.dataloader_idx])
            return None
        limit = trainer.limit_test_batches if stage == "test" else trainer.limit_val_batches
        if isinstance(limit, int) and not isinstance(limit, bool):
            return limit if not hasattr(loader, "__len__") else min(limit, len(loader))
        if isinstance(limit, float) and limit < 1.0 and hasattr(loader, "__len__"):
            return int(len(loader) * limit)
        return None

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
        batch_size = getattr(loader, "batch_size", None)
        limit = self._epoch_batches(trainer, loader, stage)
        if batch_size and limit is not None:
            available = min(available, limit * int(batch_size) * plan.world_size)
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

    def _compute(self, trainer: Trainer, epoch: _Epoch) -> dict[str, Tensor]:
        """Every metric's logged values, each from one synchronisation; fresh real statistics go to the store."""
        fresh: dict[str, Any] = {}
        values = self._set.compute(
            lambda name, metric: self._stats_cache.compute(name, metric, epoch.cache, fresh)
        )
        self._stats_cache.end(trainer, epoch.cache, fresh)
        return values

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
