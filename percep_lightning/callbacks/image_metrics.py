r"""Image metrics (FID, IS, KID, CFSD, PSNR, SSIM, MS-SSIM, LPIPS, ArtFID) logged at the end of every
validation (and test) epoch, exact under DDP.

The callback reads images from what ``validation_step`` / ``test_step`` returns, feeds the metrics of
:mod:`percep_lightning.metrics` and logs ``val/<name>`` (``val/fid``, ``val/is``, ``val/is_std``, ...;
``test/...`` under ``trainer.test()``). Its collaborators each hold one concern: :mod:`.metric_table` (which metrics
exist, what they read and log), :mod:`.sample_plan` (which images a process keeps under DDP),
:mod:`.real_stats` (the cached real statistics) and :mod:`.step_outputs` (reading the step outputs).

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

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from percep_lightning.backbones.inception import FIDInceptionV3, ResizeMode, check_resize
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.callbacks.metric_table import (
    DEFAULT_METRICS,
    METRICS,
    ROLE_KEYS,
    CallbackMetric,
    MetricOptions,
)
from percep_lightning.callbacks.real_stats import (
    RealStats,
    RealStatsStore,
    qualname,
    real_stats_key,
    weights_digest,
)
from percep_lightning.callbacks.sample_plan import SamplePlan, plan_samples
from percep_lightning.callbacks.step_outputs import Extractor, extract_images
from percep_lightning.functional._checks import check_choice
from percep_lightning.functional._paired import Channel, check_channel, check_crop_border
from percep_lightning.functional.fid import feature_statistics, feature_sums
from percep_lightning.losses.lpips import LPIPS_NETS
from percep_lightning.metrics import FrechetInceptionDistance, KernelInceptionDistance, SharedInception
from percep_lightning.metrics._images import Quantize, check_quantize, to_uint8

METRIC_NAMES = tuple(METRICS)
STAGES = {"validate": "val", "test": "test"}


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

        trainer = Trainer(callbacks=[ImageMetricsCallback(weights="pt_inception-2015-12-05-6726825d.pth")])

    Images are ``uint8`` in [0, 255] or float in [0, 1], ``(N, 3, H, W)`` (or one channel). The metrics, by
    name (what each reads; what it logs after the prefix):

    ============= ======================= ==============================================
    name          images (keys)           logs
    ============= ======================= ==============================================
    ``fid``       preds, target           ``fid``
    ``is``        preds                   ``is``, ``is_std``
    ``kid``       preds, target           ``kid``, ``kid_std``
    ``cfsd``      preds, content          ``cfsd``
    ``psnr``      preds, target           ``psnr`` (dB, the mean of per-image values)
    ``ssim``      preds, target           ``ssim``
    ``ms_ssim``   preds, target           ``ms_ssim``
    ``lpips``     preds, target           ``lpips``
    ``artfid``    preds, content, style   ``artfid``, ``artfid_fid``, ``artfid_lpips``
    ============= ======================= ==============================================

    ``content`` is ``content_key`` (by default the ``target`` images) and ``style`` is ``style_key``. One
    Inception forward per image feeds FID, IS and KID together
    (:class:`~percep_lightning.metrics.SharedInception`). PSNR, SSIM, MS-SSIM and LPIPS average per image
    over the whole epoch (:mod:`percep_lightning.metrics`), with ``channel`` / ``crop_border`` as
    super-resolution papers report them; ArtFID is StyleID's (Wright & Ommer 2022).

    Early errors: at the start of every evaluation (the sanity check included) the callback checks that the
    evaluation set holds enough images for the metrics, and during the sanity check it validates the step
    outputs (a dict or ``extractor``, keys present, ``(N, 1 or 3, H, W)``, uint8 or float in [0, 1] up to a
    rounding tolerance) without computing metrics.

    Real statistics (FID's mean and covariance; with KID also the per-image pool3 features of the real
    images): they are computed in the first epoch and reused while the evaluation set is unchanged
    (``cache_real_stats``); the key is a hash of everything they depend on (Inception weights, resize,
    quantisation, dataset type, length and a digest of a few samples, ``max_samples``, the batch limit and
    the target key). At the end of an epoch that reused them, a checksum of the target images seen is
    compared with the cached one; if they differ (e.g. random augmentation) a warning is given and caching
    is switched off for the run. Checkpoints hold only the key and a file name (a few hundred bytes): the
    statistics are written once as a pytorch-fid ``.npz`` into ``real_stats_dir`` (a folder shared by runs,
    written at once and read by key), or by default into ``<log_dir or default_root_dir>/real_stats`` when
    a checkpoint is saved (KID adds 8 KB per real image to the file, not to checkpoints). A resumed run reads
    that file and logs the same values as an uninterrupted one;
    when the file is gone it recomputes the statistics (one info line).

    Distributed runs: the duplicates that ``DistributedSampler`` pads the last batches with are dropped
    (:mod:`percep_lightning.callbacks.sample_plan`), so the values on several processes equal those on one
    process (for FID, KID and the paired metrics always; for IS when the sampler does not shuffle, Lightning's
    default). With
    ``use_distributed_sampler=False`` duplicates cannot be recognised: a warning is given and every image
    each process sees is counted. Warnings of the metrics and backbones (random weights, rank-deficient
    covariance) are given once per run, on rank zero.

    Args:
        metrics: which of ``"fid"``, ``"is"``, ``"kid"``, ``"cfsd"``, ``"psnr"``, ``"ssim"``, ``"ms_ssim"``,
            ``"lpips"``, ``"artfid"`` to compute (see the table above).
        preds_key: key of the generated images in the step output.
        target_key: key of the real images (FID, KID, the reference of PSNR/SSIM/MS-SSIM/LPIPS, and the
            content images when ``content_key`` is ``None``).
        content_key: key of the content images for CFSD and ArtFID; ``None`` uses ``target_key``.
        every_n_epochs: compute on every n-th validation epoch only (``(epoch + 1) % n == 0``); ``trainer.validate``
            and ``trainer.test`` always compute.
        max_samples: at most this many images per epoch (the first ones of the dataset, the same on any number
            of processes); ``None`` for all.
        weights: the Inception weights for FID and IS: ``"default"`` (the official
            ``pt_inception-2015-12-05-6726825d.pth``), a path to a file in that format, a state dict, or
            ``None`` (random, for smoke tests).
        vgg_weights: the VGG19 weights for CFSD (``"default"``: torchvision's ``vgg19-dcbb9e9d.pth``).
        extractor: ``extractor(outputs, batch) -> dict`` to build the dict of images from the step output and
            the batch, when the output is not such a dict already.
        prefix: prefix of the logged names; ``None`` (default) uses the stage, ``"val/"`` during validation
            and ``"test/"`` during ``trainer.test()``.
        prog_bar: also show the logged values in the progress bar.
        dataloader_idx: which evaluation dataloader feeds the metrics (others are ignored).
        is_splits: the number of Inception Score splits (torch-fidelity: 10).
        resize: how images reach 299x299: ``"tensorflow"`` (torch-fidelity, default), ``"pytorch_fid"``,
            ``"clean"`` (clean-fid) or ``"bilinear"`` (legacy); see :class:`~percep_lightning.backbones.FIDInceptionV3`.
        quantize: how float images become ``uint8`` for Inception: ``"round"`` (as when saving a PNG) or
            ``"truncate"`` (torchmetrics' ``normalize=True``).
        cache_real_stats: reuse the real-image statistics across epochs (see above).
        real_stats_dir: a folder shared by runs for the statistics files (``None``: the run's folder).
        cfsd_chunk_size: rows of the CFSD similarity matrix processed at once (``None``: the metric's
            default), bounding its memory at high resolution.
        style_key: key of the style images for ArtFID (its FID term compares ``preds`` with them).
        kid_subsets: the number of random KID subsets (torch-fidelity: 100).
        kid_subset_size: the images per side in a KID subset (torch-fidelity: 1000); a smaller epoch uses
            all its images, with one warning.
        channel: what PSNR, SSIM and MS-SSIM compare: ``"rgb"``, ``"y"`` (BT.601 luma, as super-resolution
            papers report) or ``"per_channel"``; see :func:`~percep_lightning.functional.psnr`.
        crop_border: pixels removed from every side before PSNR, SSIM and MS-SSIM (SR papers: the scale).
        lpips_net: the LPIPS network, ``"alex"``, ``"vgg"`` or ``"squeeze"``.
        lpips_weights: the torchvision weights of that network's trunk (``"default"``, a path, ``None``).
        art_inception_weights: the art Inception weights of ArtFID (``"default"``: ``art_inception.pth``).
        art_lpips_weights: the AlexNet weights of ArtFID's LPIPS term (``"default"``: torchvision's).
        art_resize: the shorter side ArtFID resizes every image to (StyleID: 512), or ``None``.
        inception: an :class:`~percep_lightning.backbones.FIDInceptionV3` to use instead of building one from
            ``weights`` and ``resize``.

    Raises:
        ValueError: for an unknown metric name, a missing key needed by a metric, ``every_n_epochs < 1``,
            ``max_samples`` too small for the metrics, an unknown ``resize`` / ``quantize`` / ``channel`` /
            ``lpips_net``, a negative ``crop_border``, ``kid_subsets`` / ``kid_subset_size`` below 1 or
            ``art_resize`` below 75.
        TypeError: if ``extractor`` is not callable, ``inception`` is not an ``FIDInceptionV3`` or an
            integer option is not an integer.

    Example:
        >>> from percep_lightning.callbacks import ImageMetricsCallback
        >>> callback = ImageMetricsCallback(metrics=("fid", "is", "kid", "psnr"), is_splits=2, channel="y")
        >>> callback.metric_names
        ('fid', 'is', 'kid', 'psnr')
    """

    def __init__(
        self,
        metrics: Sequence[str] = DEFAULT_METRICS,
        preds_key: str = "preds",
        target_key: str | None = "target",
        content_key: str | None = None,
        every_n_epochs: int = 1,
        max_samples: int | None = None,
        weights: WeightsArg = "default",
        *,
        vgg_weights: WeightsArg = "default",
        extractor: Extractor | None = None,
        prefix: str | None = None,
        prog_bar: bool = False,
        dataloader_idx: int = 0,
        is_splits: int = 10,
        resize: ResizeMode = "tensorflow",
        quantize: Quantize = "round",
        cache_real_stats: bool = True,
        real_stats_dir: str | os.PathLike[str] | None = None,
        cfsd_chunk_size: int | None = None,
        style_key: str | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        channel: Channel = "rgb",
        crop_border: int = 0,
        lpips_net: str = "alex",
        lpips_weights: WeightsArg = "default",
        art_inception_weights: WeightsArg = "default",
        art_lpips_weights: WeightsArg = "default",
        art_resize: int | None = 512,
        inception: FIDInceptionV3 | None = None,
    ) -> None:
        super().__init__()
        self.metric_names = _check_metric_names(metrics)
        self.preds_key = preds_key
        self.target_key = target_key
        self.content_key = content_key
        self.style_key = style_key
        _check_role_keys(self.metric_names, target_key, content_key, style_key)
        _check_int(every_n_epochs, "every_n_epochs", minimum=1)
        _check_int(is_splits, "is_splits", minimum=1)
        _check_int(dataloader_idx, "dataloader_idx", minimum=0)
        if extractor is not None and not callable(extractor):
            raise TypeError(f"Expected `extractor` to be callable, but got {type(extractor).__name__}.")
        check_resize(resize)
        check_quantize(quantize)
        if cfsd_chunk_size is not None:
            _check_int(cfsd_chunk_size, "cfsd_chunk_size", minimum=1)
        _check_int(kid_subsets, "kid_subsets", minimum=1)
        _check_int(kid_subset_size, "kid_subset_size", minimum=1)
        check_channel(channel)
        check_crop_border(crop_border)
        check_choice(lpips_net, "lpips_net", tuple(LPIPS_NETS))
        if art_resize is not None:
            _check_int(art_resize, "art_resize", minimum=75)
        if inception is not None and not isinstance(inception, FIDInceptionV3):
            raise TypeError(
                f"Expected `inception` to be an FIDInceptionV3, but got {type(inception).__name__}."
            )
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"Expected `prefix` to be a str or None, but got {type(prefix).__name__}.")
        self.every_n_epochs = every_n_epochs
        self.max_samples = max_samples
        self.weights = weights
        self.vgg_weights = vgg_weights
        self.extractor = extractor
        self.prefix = prefix
        self.prog_bar = bool(prog_bar)
        self.dataloader_idx = dataloader_idx
        self.is_splits = is_splits
        self.resize = resize
        self.quantize = quantize
        self.cache_real_stats = cache_real_stats
        self.cfsd_chunk_size = cfsd_chunk_size
        self.kid_subsets = int(kid_subsets)
        self.kid_subset_size = int(kid_subset_size)
        self.channel = channel
        self.crop_border = crop_border
        self.lpips_net = lpips_net
        self.lpips_weights = lpips_weights
        self.art_inception_weights = art_inception_weights
        self.art_lpips_weights = art_lpips_weights
        self.art_resize = None if art_resize is None else int(art_resize)
        self._inception = inception
        if max_samples is not None:
            needed = max(self._minimum_images()[0], 1)
            _check_int(max_samples, "max_samples", minimum=needed)

        self._shared: SharedInception | None = None
        self._metrics: dict[str, Metric] = {}  # built in `setup` (after DDP processes are spawned)
        self._store = RealStatsStore(real_stats_dir)
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
            preds_key=self.preds_key,
            target_key=self.target_key,
            prefix=self.prefix,
        )

    @property
    def metrics(self) -> Mapping[str, Metric]:
        """The metrics by name (built in ``setup``); their public states hold the epoch's accumulation."""
        return dict(self._metrics)

    @property
    def real_stats_cached(self) -> bool:
        """Whether real-image statistics are held for reuse."""
        return self._store.entry is not None

    @property
    def real_images_forwarded(self) -> int:
        """Real images run through Inception so far (epochs that reuse cached statistics add none)."""
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
        # Random backbones (weights=None) come from a fixed seed, so every process holds the same network.
        with torch.random.fork_rng(devices=[]), self._warnings_once():
            torch.manual_seed(0)
            if self._inception is None and any(METRICS[name].uses_inception for name in self.metric_names):
                self._inception = FIDInceptionV3(self.weights, resize=self.resize)
            self._metrics = {name: METRICS[name].build(self._options()) for name in self.metric_names}
        if self._inception is not None:
            self._shared = SharedInception(self._inception, quantize=self.quantize)
            if self._caching_metrics() and self.cache_real_stats and trainer.is_global_zero:
                # Hashing the weights is cached per file or module; done here, once, not inside an epoch.
                self._weights_digest = weights_digest(self.weights, self._inception)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch(pl_module, outputs, batch, dataloader_idx)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
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
        for metric in self._metrics.values():
            metric.to(pl_module.device)
            metric.reset()
            _take_part_in_gathers(metric, pl_module.device)
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
        images = extract_images(
            outputs,
            batch,
            keys=self._keys(),
            extractor=self.extractor,
            step="test_step" if stage == "test" else "validation_step",
        )
        epoch = self._epoch
        if epoch is None:  # sanity check: outputs validated, nothing computed
            self._check_sizes(images)
            return
        count = next(iter(images.values())).shape[0]
        keep, positions = epoch.plan.select(epoch.seen, count)
        epoch.seen += count
        if keep == 0:
            return
        images = {key: x[:keep] for key, x in images.items()}
        self._feed_inception(images, positions.to(pl_module.device), epoch)
        for name, metric in self._metrics.items():
            spec = METRICS[name]
            if spec.feed == "images":
                metric.update(*(images[self._key_of(role)] for role in spec.roles))

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
                f"{prefix}{name}",
                value.detach().float(),
                sync_dist=True,
                reduce_fx="max",
                on_step=False,
                on_epoch=True,
                prog_bar=self.prog_bar,
            )

    # ------------------------------------------------------------------ helpers

    def _should_run(self, trainer: Trainer, stage: str) -> bool:
        if trainer.sanity_checking or stage == "test":
            return True
        fn = trainer.state.fn
        if fn is not None and fn.value == "validate":
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _argument_of(self, role: str) -> str:
        """The callback argument that names the output key of ``role``."""
        if role == "content" and self.content_key is None:
            return "target_key"
        return ROLE_KEYS[role]

    def _key_of(self, role: str) -> str:
        return getattr(self, self._argument_of(role))

    def _keys(self) -> dict[str, str]:
        """Output key -> the argument naming it, for every image the metrics read."""
        keys: dict[str, str] = {}
        for name in self.metric_names:
            for role in METRICS[name].roles:
                keys.setdefault(self._key_of(role), self._argument_of(role))
        return keys

    def _check_sizes(self, images: Mapping[str, Tensor]) -> None:
        """Raise a ValueError in the callback's terms when images are too small for a requested metric."""
        options = self._options()
        for name in self.metric_names:
            spec = METRICS[name]
            needed = spec.min_side(options)
            for role in spec.roles:
                key = self._key_of(role)
                height, width = images[key].shape[-2:]
                if min(height, width) < needed:
                    raise ValueError(
                        f"ImageMetricsCallback: metric {name!r} needs images with both sides >= {needed} "
                        f"({spec.why_side}), but `{self._argument_of(role)}`={key!r} holds {height}x{width} "
                        "images."
                    )

    def _caching_metrics(self) -> list[str]:
        """The requested metrics whose real side the store can hold (FID, KID)."""
        return [name for name in self.metric_names if METRICS[name].caches_real]

    def _minimum_images(self) -> tuple[int, str]:
        needs = [(METRICS[name].min_images(self._options()), name) for name in self.metric_names]
        needed, name = max(needs)
        return needed, name

    def _options(self) -> MetricOptions:
        return MetricOptions(
            self._inception,
            self.quantize,
            self.is_splits,
            self.vgg_weights,
            self.cfsd_chunk_size,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
            channel=self.channel,
            crop_border=self.crop_border,
            lpips_net=self.lpips_net,
            lpips_weights=self.lpips_weights,
            art_inception_weights=self.art_inception_weights,
            art_lpips_weights=self.art_lpips_weights,
            art_resize=self.art_resize,
        )

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
        needed, name = self._minimum_images()
        if available < needed:
            what = "validation" if stage == "val" else "test"
            why = METRICS[name].why_min.replace("`is_splits`", f"`is_splits`={self.is_splits}")
            raise ValueError(
                f"ImageMetricsCallback needs at least {needed} {what} images for metric {name!r} ({why}), but the "
                f"{what} epoch holds {available}; add images, raise `max_samples` or the batch limit, or lower "
                f"{'`is_splits`' if name == 'is' else 'the metrics'}."
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

    def _feed_inception(self, images: dict[str, Tensor], positions: Tensor, epoch: _Epoch) -> None:
        shared = self._shared
        if shared is None:
            return
        # Streaming consumers (FID's sums, IS's logits) go through the shared feed; KID keeps per-image
        # features, which travel with their dataset positions (the same subsets on any number of processes).
        streaming: list[Metric] = []
        logit_metrics: list[Metric] = []
        per_image: list[KernelInceptionDistance] = []
        real_streaming: list[Metric] = []
        real_per_image: list[KernelInceptionDistance] = []
        for name, metric in self._metrics.items():
            spec: CallbackMetric = METRICS[name]
            fresh_real = not (spec.caches_real and epoch.cached_real)
            if spec.feed == "inception_logits":
                logit_metrics.append(metric)
            elif spec.feed == "inception_features" and isinstance(metric, KernelInceptionDistance):
                per_image.append(metric)
                real_per_image += [metric] if fresh_real else []
            elif spec.feed == "inception_features":
                streaming.append(metric)
                real_streaming += [metric] if fresh_real else []
        fake = to_uint8(images[self.preds_key], self.preds_key, self.quantize)
        batch = fake
        real = None
        forward_real = bool(real_streaming or real_per_image)
        if streaming or per_image:
            real = to_uint8(images[self.target_key], self.target_key, self.quantize)  # type: ignore[index]
            if epoch.fingerprint is not None:
                epoch.fingerprint += _checksum(real).to(epoch.fingerprint.device)
            if forward_real:
                batch = torch.cat([fake, real.to(fake.device)])
        features = shared.forward(batch, self.preds_key)
        n = fake.shape[0]
        fake_features = type(features)(features.pool3[:n], features.logits_unbiased[:n])
        shared.feed(fake_features, real=False, metrics=[*streaming, *logit_metrics], indices=positions)
        for kid in per_image:
            kid.update_features(fake_features.pool3, real=False, indices=positions)
        if forward_real:
            real_features = type(features)(features.pool3[n:], features.logits_unbiased[n:])
            shared.feed(real_features, real=True, metrics=real_streaming)
            for kid in real_per_image:
                kid.update_features(real_features.pool3, real=True, indices=positions)
            self._real_forwarded += n

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

    def _real_key(self, trainer: Trainer, loader: Any, stage: str) -> str:
        inception = self._inception
        assert inception is not None  # built in setup when FID is requested
        target = (
            self.target_key if self.extractor is None else f"{self.target_key} of {qualname(self.extractor)}"
        )
        limit = trainer.limit_test_batches if stage == "test" else trainer.limit_val_batches
        options = {
            "resize": inception.resize,
            "quantize": self.quantize,
            "max_samples": self.max_samples,
            "limit_batches": str(limit),
            "target": target,
        }
        return real_stats_key(
            weights=self._weights_digest or weights_digest(self.weights, inception),
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
        values: dict[str, Tensor] = {}
        fresh: dict[str, Any] = {}
        for name, metric in self._metrics.items():
            spec = METRICS[name]
            if spec.caches_real and epoch.real_key is not None and not epoch.cached_real:
                result = _compute_keeping_real(metric, fresh)
            else:
                result = _synced_compute(metric)
            values.update(zip(spec.logs, spec.values(result), strict=True))
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
                "`cache_real_stats=False` if the evaluation set changes between epochs."
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


def _synced_compute(metric: Metric) -> Any:
    """``compute()`` on states synchronised once across processes (the table's metrics do not sync themselves)."""
    with metric.sync_context(dist_sync_fn=metric.dist_sync_fn):
        return metric.compute()


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


def _take_part_in_gathers(metric: Metric, device: torch.device) -> None:
    """Give list states an empty 2-D entry, so that a process without images still joins the gather."""
    if isinstance(metric, KernelInceptionDistance):
        for real in (False, True):
            empty = torch.empty(0, dtype=torch.long, device=device)
            metric.update_features(torch.empty(0, 2048, device=device), real=real, indices=empty)
    elif hasattr(metric, "update_logits"):
        metric.update_logits(torch.empty(0, 1008, device=device), torch.empty(0, dtype=torch.long))


def _check_role_keys(
    names: Sequence[str], target_key: str | None, content_key: str | None, style_key: str | None
) -> None:
    """Raise a ValueError when a requested metric reads images whose key is ``None``."""
    for name in names:
        roles = METRICS[name].roles
        if "target" in roles and target_key is None:
            raise ValueError(f"Metric {name!r} needs real images: `target_key` must not be None.")
        if "content" in roles and content_key is None and target_key is None:
            raise ValueError(f"Metric {name!r} needs content images: set `content_key` (or `target_key`).")
        if "style" in roles and style_key is None:
            raise ValueError(f"Metric {name!r} needs style images: set `style_key`.")


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


def _checksum(images: Tensor) -> Tensor:
    """Order-independent int64 checksum of uint8 images: ``[count, sum, sum of squares]``."""
    x = images.to(torch.long)
    return torch.stack([torch.tensor(x.shape[0], device=x.device), x.sum(), (x * x).sum()])
