"""The metric names of ``percep-lightning evaluate`` and its presets: those of the one registry
(:mod:`percep_lightning.metrics.registry`), which the validation callback reads too."""

from __future__ import annotations

from collections.abc import Sequence

from percep_lightning.evaluation.errors import EvaluationError
from percep_lightning.metrics.registry import ALIASES, METRICS, PRESETS, MetricSpec, resolve_names

__all__ = ["METRICS", "PRESETS", "MetricSpec", "resolve_metrics"]


def resolve_metrics(metrics: Sequence[str] | str | None, preset: str | None) -> list[MetricSpec]:
    """The registry entries to compute: the preset's, then the named ones (without repeats), then what derived
    ones require.

    Args:
        metrics: names from :data:`METRICS` (a comma-separated string is split), or ``None``.
        preset: a key of :data:`PRESETS`, or ``None``.

    Raises:
        EvaluationError: for an unknown name or preset (the message lists the valid ones), or when
            neither is given.

    Example:
        >>> [spec.name for spec in resolve_metrics("psnr,lpips", None)]
        ['psnr', 'lpips']
        >>> [spec.name for spec in resolve_metrics(None, "sr")]
        ['psnr_y', 'ssim_y', 'lpips', 'dists']
    """
    names: list[str] = []
    if preset is not None:
        if preset not in PRESETS:
            raise EvaluationError(f"Unknown preset {preset!r}; expected one of {', '.join(PRESETS)}.")
        names.extend(PRESETS[preset])
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    for name in metrics or ():
        if name not in METRICS and name not in ALIASES:
            raise EvaluationError(f"Unknown metric {name!r}; expected some of {', '.join(METRICS)}.")
        names.append(name)
    if not names:
        raise EvaluationError(
            f"Name the metrics (--metrics, some of {', '.join(METRICS)}) or a preset "
            f"(--preset, one of {', '.join(PRESETS)})."
        )
    return [METRICS[name] for name in resolve_names(names)]
