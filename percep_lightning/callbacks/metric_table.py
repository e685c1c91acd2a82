"""The metrics :class:`~percep_lightning.callbacks.ImageMetricsCallback` can log, as a declarative table.

Each entry says which images a metric needs (roles mapped to the step-output keys by the callback's
``preds_key``, ``target_key``, ``content_key``, ``style_key``), how it is fed, what it logs and how many
images it needs at least. Feeds:

* ``"inception_features"``: one shared Inception forward; pool3 features of ``preds`` go to
  ``update_features(..., real=False)`` and those of the second role to ``update_features(..., real=True)``
  (with the images' dataset positions when the metric keeps per-image features, as KID);
* ``"inception_logits"``: unbiased logits of ``preds`` go to ``update_logits(logits, positions)``;
* ``"images"``: ``update(*images of the roles, in order)`` (e.g. ``(preds, target)`` for PSNR,
  ``(preds, content, style)`` for ArtFID).

A new metric is one entry: a builder taking the :class:`MetricOptions` and the roles it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor
from torchmetrics import Metric

from percep_lightning.backbones.inception import FIDInceptionV3
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional._paired import Channel
from percep_lightning.metrics import (
    CFSD,
    LPIPS,
    MSSSIM,
    PSNR,
    SSIM,
    ArtFID,
    FrechetInceptionDistance,
    InceptionScore,
    KernelInceptionDistance,
)
from percep_lightning.metrics._images import Quantize

__all__ = ["DEFAULT_METRICS", "METRICS", "ROLE_KEYS", "CallbackMetric", "MetricOptions"]

Feed = Literal["inception_features", "inception_logits", "images"]

ROLE_KEYS: Mapping[str, str] = {
    "preds": "preds_key",
    "target": "target_key",
    "content": "content_key",
    "style": "style_key",
}
"""Role -> the callback argument naming its step-output key."""


@dataclass(frozen=True)
class MetricOptions:
    """What the builders of the table need from the callback's arguments."""

    inception: FIDInceptionV3 | None
    quantize: Quantize
    is_splits: int
    vgg_weights: WeightsArg
    cfsd_chunk_size: int | None
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    channel: Channel = "rgb"
    crop_border: int = 0
    lpips_net: str = "alex"
    lpips_weights: WeightsArg = "default"
    art_inception_weights: WeightsArg = "default"
    art_lpips_weights: WeightsArg = "default"
    art_resize: int | None = 512


@dataclass(frozen=True)
class CallbackMetric:
    """How the callback builds, feeds and logs one metric.

    Attributes:
        roles: the images it reads, ``"preds"`` first (``"target"``, ``"content"``, ``"style"``).
        feed: how its updates are called (see the module docstring).
        logs: the names logged (after the prefix) for the values ``compute()`` returns, in order.
        build: ``build(options) -> Metric``.
        min_images: ``min_images(options)``, the fewest images an epoch must hold.
        caches_real: whether its real side can be fixed from the cached real-image store (FID from the
            statistics, KID from the per-image features).
        why_min: why it needs ``min_images`` (for the error message).
        values: ``values(result) -> tuple`` of the ``compute()`` result, in the order of ``logs``.
        min_side: ``min_side(options)``, the smallest image side it accepts (checked in the sanity check).
        why_side: why it needs ``min_side`` (for the error message).
    """

    roles: tuple[str, ...]
    feed: Feed
    logs: tuple[str, ...]
    build: Callable[[MetricOptions], Metric]
    min_images: Callable[[MetricOptions], int] = lambda options: 2
    caches_real: bool = False
    why_min: str = "2 to estimate a covariance"
    values: Callable[[Any], tuple[Tensor, ...]] = lambda result: (
        result if isinstance(result, tuple) else (result,)
    )
    min_side: Callable[[MetricOptions], int] = lambda options: 1
    why_side: str = ""

    @property
    def uses_inception(self) -> bool:
        """Whether it is fed by the shared Inception forward."""
        return self.feed.startswith("inception")


def _fid(options: MetricOptions) -> Metric:
    return FrechetInceptionDistance(
        backbone=options.inception, quantize=options.quantize, sync_on_compute=False
    )


def _inception_score(options: MetricOptions) -> Metric:
    return InceptionScore(
        backbone=options.inception, splits=options.is_splits, quantize=options.quantize, sync_on_compute=False
    )


def _kid(options: MetricOptions) -> Metric:
    return KernelInceptionDistance(
        backbone=options.inception,
        subsets=options.kid_subsets,
        subset_size=options.kid_subset_size,
        quantize=options.quantize,
        sync_on_compute=False,
    )


def _psnr(options: MetricOptions) -> Metric:
    return PSNR(channel=options.channel, crop_border=options.crop_border, sync_on_compute=False)


def _ssim(options: MetricOptions) -> Metric:
    return SSIM(channel=options.channel, crop_border=options.crop_border, sync_on_compute=False)


def _ms_ssim(options: MetricOptions) -> Metric:
    return MSSSIM(channel=options.channel, crop_border=options.crop_border, sync_on_compute=False)


def _lpips(options: MetricOptions) -> Metric:
    return LPIPS(options.lpips_net, weights=options.lpips_weights, sync_on_compute=False)  # type: ignore[arg-type]


def _artfid(options: MetricOptions) -> Metric:
    return ArtFID(
        options.art_inception_weights,
        lpips_weights=options.art_lpips_weights,
        resize=options.art_resize,
        quantize=options.quantize,
        sync_on_compute=False,
    )


def _artfid_values(result: Mapping[str, Tensor]) -> tuple[Tensor, ...]:
    return result["artfid"], result["fid"], result["lpips"]


def _one_pair(options: MetricOptions) -> int:
    return 1


def _cfsd(options: MetricOptions) -> Metric:
    kwargs: dict[str, Any] = (
        {} if options.cfsd_chunk_size is None else {"chunk_size": options.cfsd_chunk_size}
    )
    return CFSD(options.vgg_weights, sync_on_compute=False, **kwargs)


METRICS: Mapping[str, CallbackMetric] = {
    "fid": CallbackMetric(("preds", "target"), "inception_features", ("fid",), _fid, caches_real=True),
    "is": CallbackMetric(
        ("preds",),
        "inception_logits",
        ("is", "is_std"),
        _inception_score,
        min_images=lambda options: max(2, options.is_splits),
        why_min="one per split, `is_splits`",
    ),
    "kid": CallbackMetric(
        ("preds", "target"),
        "inception_features",
        ("kid", "kid_std"),
        _kid,
        caches_real=True,
        why_min="2 per side for the unbiased MMD",
    ),
    "cfsd": CallbackMetric(("preds", "content"), "images", ("cfsd",), _cfsd, _one_pair, why_min="1 pair"),
    "psnr": CallbackMetric(
        ("preds", "target"),
        "images",
        ("psnr",),
        _psnr,
        _one_pair,
        why_min="1 pair",
        min_side=lambda options: 2 * options.crop_border + 1,
        why_side="a pixel left after `crop_border`",
    ),
    "ssim": CallbackMetric(
        ("preds", "target"),
        "images",
        ("ssim",),
        _ssim,
        _one_pair,
        why_min="1 pair",
        min_side=lambda options: 2 * options.crop_border + 11,
        why_side="the 11-tap window after `crop_border`",
    ),
    "ms_ssim": CallbackMetric(
        ("preds", "target"),
        "images",
        ("ms_ssim",),
        _ms_ssim,
        _one_pair,
        why_min="1 pair",
        min_side=lambda options: 2 * options.crop_border + 161,
        why_side="5 scales of an 11-tap window: sides above 160 after `crop_border`",
    ),
    "lpips": CallbackMetric(("preds", "target"), "images", ("lpips",), _lpips, _one_pair, why_min="1 pair"),
    "artfid": CallbackMetric(
        ("preds", "content", "style"),
        "images",
        ("artfid", "artfid_fid", "artfid_lpips"),
        _artfid,
        why_min="2 stylized and 2 style images to estimate covariances",
        values=_artfid_values,
        min_side=lambda options: 75 if options.art_resize is None else 1,
        why_side="the art Inception's smallest input with `art_resize`=None",
    ),
}
"""Metric name -> entry. The callback builds its metrics with ``sync_on_compute=False`` and synchronises
each once per epoch with the public ``sync_context()``."""

DEFAULT_METRICS: tuple[str, ...] = ("fid", "is", "cfsd")
"""The callback's metrics when none are named."""
