"""The metrics :class:`~percep_lightning.callbacks.ImageMetricsCallback` can log, as a declarative table.

Each entry says which images a metric needs (roles mapped to the step-output keys by the callback's
``preds_key``, ``target_key``, ``content_key``), how it is fed, what it logs and how many images it
needs at least. Feeds:

* ``"inception_features"``: one shared Inception forward; pool3 features of ``preds`` go to
  ``update_features(..., real=False)`` and those of the second role to ``update_features(..., real=True)``;
* ``"inception_logits"``: unbiased logits of ``preds`` go to ``update_logits(logits, positions)``;
* ``"pairs"``: ``update(images[role 0], images[role 1])`` (e.g. generated and content images).

A new metric is one entry: a builder taking the :class:`MetricOptions` and the roles it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torchmetrics import Metric

from percep_lightning.backbones.inception import FIDInceptionV3
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.metrics import CFSD, FrechetInceptionDistance, InceptionScore
from percep_lightning.metrics._images import Quantize

__all__ = ["METRICS", "CallbackMetric", "MetricOptions"]

Feed = Literal["inception_features", "inception_logits", "pairs"]


@dataclass(frozen=True)
class MetricOptions:
    """What the builders of the table need from the callback's arguments."""

    inception: FIDInceptionV3 | None
    quantize: Quantize
    is_splits: int
    vgg_weights: WeightsArg
    cfsd_chunk_size: int | None


@dataclass(frozen=True)
class CallbackMetric:
    """How the callback builds, feeds and logs one metric.

    Attributes:
        roles: the images it reads, ``"preds"`` first (``"target"``, ``"content"``).
        feed: how its updates are called (see the module docstring).
        logs: the names logged (after the prefix) for the values ``compute()`` returns, in order.
        build: ``build(options) -> Metric``.
        min_images: ``min_images(options)``, the fewest images an epoch must hold.
        caches_real: whether its real side can be fixed from cached statistics (FID).
        why_min: why it needs ``min_images`` (for the error message).
    """

    roles: tuple[str, ...]
    feed: Feed
    logs: tuple[str, ...]
    build: Callable[[MetricOptions], Metric]
    min_images: Callable[[MetricOptions], int] = lambda options: 2
    caches_real: bool = False
    why_min: str = "2 to estimate a covariance"

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
    "cfsd": CallbackMetric(
        ("preds", "content"), "pairs", ("cfsd",), _cfsd, min_images=lambda options: 1, why_min="1 pair"
    ),
}
"""Metric name -> entry. The callback builds its metrics with ``sync_on_compute=False`` and synchronises
each once per epoch with the public ``sync_context()``."""
