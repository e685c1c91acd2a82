"""The metrics of :class:`~percep_lightning.callbacks.ImageMetricsCallback`: named in the registry or brought by
the user, built once, fed per batch (one extractor forward for every metric holding that extractor) and
computed to the values the callback logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from percep_lightning.backbones.inception import check_resize
from percep_lightning.metrics._images import check_quantize
from percep_lightning.metrics.feature_set import FeatureSetMetric
from percep_lightning.metrics.feeding import (
    extractor_groups,
    feed,
    forward,
    join_gathers,
    named_results,
    reads_logits,
)
from percep_lightning.metrics.frechet import FrechetDistance
from percep_lightning.metrics.registry import (
    METRICS,
    SHARED_OPTIONS,
    BuildContext,
    MetricSpec,
    build_metric,
    resolve_names,
    resolve_options,
)

__all__ = ["DEFAULT_METRICS", "MetricEntry", "MetricSet"]

DEFAULT_METRICS: tuple[str, ...] = ("fid", "is", "cfsd")
"""The callback's metrics when none are named."""


@dataclass
class MetricEntry:
    """One metric of the callback: its logged name, what it reads and what it logs.

    Attributes:
        name: the logged name (the key in ``metrics``).
        roles: the images it reads, ``"preds"`` first.
        logs: the logged names of its values.
        spec: its registry entry (``None`` for a metric object the user brought).
        options: its resolved options (registry entries).
        metric: the metric (built in :meth:`MetricSet.build` for registry entries).
    """

    name: str
    roles: tuple[str, ...]
    logs: tuple[str, ...]
    spec: MetricSpec | None = None
    options: dict[str, Any] = field(default_factory=dict)
    metric: Metric | None = None

    @property
    def feed(self) -> str:
        """``"features"``, ``"logits"``, ``"images"`` or ``"derived"``."""
        if self.spec is not None:
            return self.spec.feed
        return "features" if isinstance(self.metric, (FrechetDistance, FeatureSetMetric)) else "images"

    def min_images(self) -> int:
        """The fewest images an epoch must hold for it."""
        if self.spec is not None:
            return self.spec.min_images(self.options)
        return 2 if self.feed == "features" else 1

    def values(self, result: Any) -> dict[str, Tensor]:
        """The logged values of its ``compute()`` result."""
        if isinstance(result, Mapping):
            return {f"{self.name}_{key}": value for key, value in result.items()}
        if hasattr(result, "_fields"):
            return named_results(result, self.name, self.logs)
        result = result if isinstance(result, tuple) else (result,)
        logs = (
            self.logs
            if len(self.logs) == len(result)
            else (self.name, *(f"{self.name}_std",) * (len(result) > 1))
        )
        return dict(zip(logs, result, strict=True))


class MetricSet:
    """Parse, build, feed and compute the callback's metrics.

    Args:
        metrics: registry names (:data:`~percep_lightning.metrics.registry.METRICS`), or a mapping from a
            logged name to a registry name or to a metric object (a
            :class:`~percep_lightning.metrics.FrechetDistance` / :class:`~percep_lightning.metrics.KernelDistance`
            on any extractor is fed ``preds`` as generated and ``target`` as real images; another ``Metric`` is
            updated with ``(preds, target)``).
        options: per-metric options by registry name, plus the shared ``resize`` and ``quantize``.

    Raises:
        ValueError: for an unknown name or option.
        TypeError: for a value that is neither a name nor a ``Metric``, or options that are not mappings.
    """

    def __init__(
        self, metrics: Sequence[str] | Mapping[str, str | Metric], options: Mapping[str, Any] | None = None
    ) -> None:
        options = dict(options or {})
        shared = {key: options.pop(key, default) for key, default in SHARED_OPTIONS.items()}
        check_resize(shared["resize"])
        check_quantize(shared["quantize"])
        self.resize: str = shared["resize"]
        self.quantize: str = shared["quantize"]
        unknown = sorted(set(options) - set(METRICS))
        if unknown:
            raise ValueError(
                f"Expected the keys of `options` to be metric names or {', '.join(SHARED_OPTIONS)}, but got "
                f"{', '.join(map(repr, unknown))}; metric names: {', '.join(METRICS)}."
            )
        for name, given in options.items():  # checked whether or not the metric is requested
            resolve_options(METRICS[name], given)
        self.entries: dict[str, MetricEntry] = {}
        for name, value in _named(metrics).items():
            self._add(name, value, options)

    def _add(self, name: str, value: str | Metric, options: Mapping[str, Any]) -> None:
        if isinstance(value, Metric):
            roles = ("preds", "target")
            self.entries[name] = MetricEntry(name, roles, (name,), metric=value)
            return
        if not isinstance(value, str):
            raise TypeError(
                f"Expected metric {name!r} to be a registry name or a torchmetrics Metric, but got "
                f"{type(value).__name__}."
            )
        for registry_name in resolve_names([value]):
            spec = METRICS[registry_name]
            logged = name if registry_name == value.lower() else registry_name
            if logged in self.entries:
                continue
            logs = tuple(_renamed(log, spec.name, logged) for log in spec.logged)
            entry = MetricEntry(logged, spec.roles, logs, spec, resolve_options(spec, options.get(spec.name)))
            self.entries[logged] = entry

    # ------------------------------------------------------------------ what it needs

    @property
    def names(self) -> tuple[str, ...]:
        """The logged names of the metrics, in order."""
        return tuple(self.entries)

    def roles(self) -> set[str]:
        """Every image role some metric reads."""
        return {role for entry in self.entries.values() for role in entry.roles}

    def min_images(self) -> tuple[int, str]:
        """``(fewest images an epoch must hold, the metric that needs them)``."""
        return max((entry.min_images(), name) for name, entry in self.entries.items())

    def why_min(self, name: str) -> str:
        entry = self.entries[name]
        return entry.spec.why_min if entry.spec is not None else "2 to estimate a covariance"

    def check_sizes(self, images: Mapping[str, Tensor], describe: Any) -> None:
        """Raise a ValueError naming the key when images are too small for a metric.

        ``images`` are by role; ``describe(role)`` names the callback argument of that role's key.
        """
        for name, entry in self.entries.items():
            if entry.spec is None or entry.feed == "derived":
                continue
            needed = entry.spec.min_side(entry.options)
            for role in entry.roles:
                height, width = images[role].shape[-2:]
                if min(height, width) < needed:
                    raise ValueError(
                        f"ImageMetricsCallback: metric {name!r} needs images with both sides >= {needed} "
                        f"({entry.spec.why_side}), but {describe(role)} holds {height}x{width} images."
                    )

    # ------------------------------------------------------------------ build, feed, compute

    def build(self, weights: Mapping[str, Any]) -> BuildContext:
        """Build the registry metrics (shared networks once); returns the context holding the networks."""
        context = BuildContext(weights, resize=self.resize, quantize=self.quantize)
        for entry in self.entries.values():
            if entry.metric is None and entry.feed != "derived":
                entry.metric = build_metric(entry.spec, context, entry.options)  # type: ignore[arg-type]
        return context

    def registry_names(self, names: Sequence[str]) -> list[str]:
        """Those of ``names`` that are logged under their own name as the registry entry of that name."""
        return [n for n in names if n in self.entries and getattr(self.entries[n].spec, "name", None) == n]

    def metrics(self) -> dict[str, Metric]:
        """The built metrics by logged name (derived entries have none)."""
        return {name: entry.metric for name, entry in self.entries.items() if entry.metric is not None}

    def start(self, device: torch.device) -> None:
        """Move, reset and prepare every metric for an epoch on ``device``."""
        for metric in self.metrics().values():
            metric.to(device)
            metric.reset()
            join_gathers(metric, device)

    def update(
        self, images: Mapping[str, Tensor], positions: Tensor, *, fixed_real: Sequence[str] = ()
    ) -> int:
        """Feed one batch (images by role); returns the number of real images run through an extractor.

        Args:
            images: the batch's images by role.
            positions: the dataset positions of its images (the same on any number of processes).
            fixed_real: the metrics whose real side is fixed (from cached statistics) this epoch.
        """
        forwarded = 0
        metrics = self.metrics()
        for extractor, names in extractor_groups(metrics):
            forwarded += self._feed_group(extractor, names, images, positions, fixed_real)
        for entry in self.entries.values():
            if entry.feed == "images" and entry.metric is not None:
                entry.metric.update(*(images[role] for role in entry.roles))
        return forwarded

    def _feed_group(
        self,
        extractor: Any,
        names: list[str],
        images: Mapping[str, Tensor],
        positions: Tensor,
        fixed_real: Sequence[str],
    ) -> int:
        """One forward of ``preds`` and of every real role still needed, fed to the metrics of one extractor."""
        metrics = {name: self.entries[name].metric for name in names}
        logits = any(reads_logits(m) for m in metrics.values())  # type: ignore[arg-type]
        real_roles: dict[str, list[Metric]] = {}
        for name, metric in metrics.items():
            role = self.entries[name].roles[1] if len(self.entries[name].roles) > 1 else None
            if role is not None and name not in fixed_real:
                real_roles.setdefault(role, []).append(metric)  # type: ignore[arg-type]
        quantize = getattr(next(iter(metrics.values())), "quantize", self.quantize)
        preds = images["preds"]
        n = preds.shape[0]
        same_size = [role for role in real_roles if images[role].shape[-2:] == preds.shape[-2:]]
        batch = torch.cat([preds, *(images[role].to(preds.device) for role in same_size)])
        outputs = forward(extractor, batch, "preds", quantize, logits=logits)
        feed(metrics.values(), outputs.rows(0, n), real=False, indices=positions)  # type: ignore[arg-type]
        for role, users in real_roles.items():
            if role in same_size:
                k = 1 + same_size.index(role)
                real = outputs.rows(k * n, (k + 1) * n)
            else:  # another image size: a forward of its own
                real = forward(extractor, images[role], role, quantize)
            feed(users, real, real=True, indices=positions)
        return n * len(real_roles)

    def compute(self, compute_one: Any) -> dict[str, Tensor]:
        """Every logged value; ``compute_one(name, metric)`` returns a metric's synchronised result."""
        values: dict[str, Tensor] = {}
        scalars: dict[str, float] = {}
        for name, entry in self.entries.items():
            if entry.metric is None:
                continue
            result = compute_one(name, entry.metric)
            logged = entry.values(result)
            values.update(logged)
            scalars[entry.spec.name if entry.spec is not None else name] = float(next(iter(logged.values())))
        for name, entry in self.entries.items():
            if entry.feed == "derived" and entry.spec is not None and entry.spec.combine is not None:
                values[name] = torch.tensor(entry.spec.combine(scalars), dtype=torch.float64)
        return values


def _named(metrics: Sequence[str] | Mapping[str, str | Metric]) -> dict[str, str | Metric]:
    """``{logged name: registry name or metric}`` from a list of names or a mapping."""
    if isinstance(metrics, Mapping):
        named = {str(name): value for name, value in metrics.items()}
    elif isinstance(metrics, str):
        named = {metrics.lower(): metrics}
    else:
        named = {str(name).lower(): str(name) for name in metrics}
    if not named:
        raise ValueError(f"Expected `metrics` to name at least one metric of {', '.join(METRICS)}.")
    return named


def _renamed(log: str, registry_name: str, logged: str) -> str:
    """A registry entry's logged name under the name the user gave it (``kid_std`` of ``{"kid_b": "kid"}`` is
    ``kid_b_std``; ``precision`` of ``{"prdc_clip": "prdc"}`` is ``prdc_clip_precision``)."""
    if log.startswith(registry_name):
        return log.replace(registry_name, logged, 1)
    return log if logged == registry_name else f"{logged}_{log}"
