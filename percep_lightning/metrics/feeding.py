"""One extractor forward feeding every metric that holds that extractor (the callback and ``evaluate`` alike).

Distribution metrics (:class:`~percep_lightning.metrics.FrechetDistance`,
:class:`~percep_lightning.metrics.KernelDistance`, :class:`~percep_lightning.metrics.CMMD`,
:class:`~percep_lightning.metrics.PRDC`, the Inception forms) and the Inception Score each run
their network when given images. When several hold the same network object, :func:`extractor_groups`
finds them, :func:`forward` runs the network once (with the logits too when the Inception Score needs
them) and :func:`feed` hands the outputs to each metric's public ``update_features`` / ``update_logits``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

from percep_lightning.backbones.inception import FIDInceptionV3
from percep_lightning.metrics._images import extract, inception_forward
from percep_lightning.metrics.feature_set import FeatureSetMetric
from percep_lightning.metrics.frechet import FrechetDistance
from percep_lightning.metrics.inception_score import NUM_CLASSES, InceptionScore

__all__ = [
    "Outputs",
    "extractor_groups",
    "feed",
    "fix_real_side",
    "forward",
    "join_gathers",
    "named_results",
    "reads_logits",
    "synced_compute",
]


class Outputs(NamedTuple):
    """One forward's ``(N, D)`` features and, for the FID Inception when asked, its ``(N, 1008)`` logits."""

    features: Tensor
    logits: Tensor | None = None

    def rows(self, start: int, stop: int) -> Outputs:
        """The outputs of images ``start:stop`` of the batch."""
        logits = None if self.logits is None else self.logits[start:stop]
        return Outputs(self.features[start:stop], logits)


def reads_logits(metric: Metric) -> bool:
    """Whether ``metric`` is fed logits (the Inception Score, or any metric with only ``update_logits``)."""
    return hasattr(metric, "update_logits") and not hasattr(metric, "update_features")


def extractor_groups(metrics: Mapping[str, Metric]) -> list[tuple[Any, list[str]]]:
    """``[(extractor, names of the metrics holding it)]`` for every feature or logits metric, in order."""
    groups: dict[int, tuple[Any, list[str]]] = {}
    for name, metric in metrics.items():
        extractor = getattr(metric, "extractor", None)
        if isinstance(metric, (FrechetDistance, FeatureSetMetric, InceptionScore)) and extractor is not None:
            groups.setdefault(id(extractor), (extractor, []))[1].append(name)
    return list(groups.values())


def forward(extractor: Any, images: Tensor, name: str, quantize: str, *, logits: bool = False) -> Outputs:
    """Run ``extractor`` once on ``images`` (validated and converted to its input format).

    Args:
        extractor: a :class:`~percep_lightning.backbones.FeatureExtractor`.
        images: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        name: the argument name used in error messages.
        quantize: how float images become ``uint8`` for a ``uint8`` extractor.
        logits: also return the unbiased logits (the FID Inception only).

    Raises:
        TypeError: when ``logits`` are asked of another network than the FID Inception.
    """
    if not logits:
        return Outputs(extract(extractor, images, name, quantize))  # type: ignore[arg-type]
    if not isinstance(extractor, FIDInceptionV3):
        raise TypeError(f"Only the FID Inception gives logits, not {type(extractor).__name__}.")
    out = inception_forward(extractor, images, name, quantize)  # type: ignore[arg-type]
    return Outputs(out.pool3, out.logits_unbiased)


def feed(metrics: Iterable[Metric], outputs: Outputs, *, real: bool, indices: Tensor | None = None) -> None:
    """Hand one forward's outputs to each metric (logits metrics take generated images only).

    Raises:
        ValueError: when real images are given to the Inception Score.
    """
    for metric in metrics:
        if reads_logits(metric):
            if real:
                raise ValueError(
                    f"{type(metric).__name__} scores generated images only: expected `real=False` for it, but got "
                    "`real=True`."
                )
            metric.update_logits(outputs.logits, indices)  # type: ignore[operator]
        else:
            metric.update_features(outputs.features, real=real, indices=indices)  # type: ignore[operator]


def join_gathers(metric: Metric, device: torch.device | str) -> None:
    """Give a metric's per-image list states an empty entry, so that a process without images still takes part
    in their gather (a process holding none would skip it and leave the others waiting)."""
    empty_indices = torch.empty(0, dtype=torch.long, device=device)
    if isinstance(metric, InceptionScore):
        metric.update_logits(torch.empty(0, NUM_CLASSES, device=device), empty_indices)
    elif isinstance(metric, FeatureSetMetric):
        for real in (False, True):
            features = torch.empty(0, metric.num_features, device=device)
            metric.update_features(features, real=real, indices=empty_indices)
    elif isinstance(metric, FrechetDistance) and metric.infinity:
        features = torch.empty(0, metric.num_features, device=device)
        metric.update_features(features, real=False, indices=empty_indices)


def fix_real_side(
    metrics: Mapping[str, Metric],
    mu: Tensor,
    sigma: Tensor,
    num_samples: int | None,
    features: Tensor | None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> set[str]:
    """Fix the real side of metrics on one extractor from its cached statistics; returns the names fixed.

    A Fréchet distance (FID, FD-DINOv2, ...) takes ``mu`` and ``sigma``. A metric on the whole feature sets
    (KID, CMMD, PRDC) takes the cached ``(N, D)`` features: each process adds every ``world_size``-th row from
    its ``rank`` with its position, so the gather holds each row once, in order; it is left alone when there
    are no cached features.
    """
    fixed: set[str] = set()
    rows = None if features is None else torch.arange(rank, features.shape[0], world_size)
    for name, metric in metrics.items():
        if isinstance(metric, FrechetDistance):
            metric.set_real_statistics(mu, sigma, num_samples)
        elif isinstance(metric, FeatureSetMetric) and features is not None and rows is not None:
            metric.update_features(
                features[rows].to(metric.device), real=True, indices=rows.to(metric.device)
            )
        else:
            continue
        fixed.add(name)
    return fixed


def named_results(result: tuple, name: str, logs: Sequence[str]) -> dict[str, Any]:
    """The values of a named-tuple result (PRDC's four) by logged name: ``logs`` when they name one value each
    (a registry entry's ``precision``, ...), else ``{name}_{field}`` (a user's metric object ``name``)."""
    keys = logs if len(logs) == len(result) else tuple(f"{name}_{field}" for field in result._fields)  # type: ignore[attr-defined]
    return dict(zip(keys, result, strict=True))


def synced_compute(metric: Metric) -> Any:
    """``compute()`` on states synchronised once across processes; call it on every process.

    A metric built with ``sync_on_compute=False`` (as the registry builds them) is synchronised here; one
    built with the default synchronises itself inside ``compute()`` (a user's metric object).
    """
    if metric.sync_on_compute:
        return metric.compute()
    with metric.sync_context(dist_sync_fn=metric.dist_sync_fn):
        return metric.compute()
