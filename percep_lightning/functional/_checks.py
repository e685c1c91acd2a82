"""Input validation shared by every loss and metric, with messages that name the argument."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
"""The ``reduction`` argument of every loss: over the batch, or ``"none"`` for per-image values."""
_REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def check_pair(
    preds: Tensor, target: Tensor, *, channels: Sequence[int] | None = None, finite: bool = True
) -> None:
    """Check that ``preds`` and ``target`` are finite floating 4-D tensors of one shape.

    Args:
        preds: the predicted images, ``(N, C, H, W)``.
        target: the reference images, same shape.
        channels: the channel counts accepted, if restricted (e.g. ``(1, 3)``).
        finite: also check for NaN/Inf (callers that scan the values anyway pass ``False``).

    Raises:
        TypeError: if either is not a floating-point tensor.
        ValueError: on different shapes, a rank other than 4, a channel count outside ``channels``,
            or NaN/Inf values.
    """
    for name, x in (("preds", preds), ("target", target)):
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(x).__name__}.")
        if not x.is_floating_point():
            raise TypeError(f"Expected `{name}` to be a floating-point tensor, but got dtype {x.dtype}.")
    if preds.shape != target.shape:
        raise ValueError(
            f"Expected `preds` and `target` to have the same shape, but got {tuple(preds.shape)} and "
            f"{tuple(target.shape)}."
        )
    if preds.ndim != 4:
        raise ValueError(
            f"Expected `preds` and `target` to be 4-D (N, C, H, W), but got shape {tuple(preds.shape)}."
        )
    if channels is not None and preds.shape[1] not in channels:
        raise ValueError(
            f"Expected `preds` and `target` to have {' or '.join(map(str, channels))} channels, but got "
            f"{preds.shape[1]} (shape {tuple(preds.shape)})."
        )
    if finite:
        check_finite(preds, "preds")
        check_finite(target, "target")


def check_finite(x: Tensor, name: str) -> None:
    """Raise a ValueError naming ``name`` if ``x`` holds NaN or Inf values."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"Expected `{name}` to be finite, but it contains NaN or Inf values.")


def check_reduction(reduction: str) -> None:
    """Raise a ValueError unless ``reduction`` is ``"mean"``, ``"sum"`` or ``"none"``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"Expected `reduction` to be one of {_REDUCTIONS}, but got {reduction!r}.")


def check_positive(value: float, name: str) -> None:
    """Raise a ValueError naming ``name`` unless ``value > 0``."""
    if not value > 0:
        raise ValueError(f"Expected `{name}` to be > 0, but got {value}.")


def check_choice(value: str, name: str, choices: Sequence[str]) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``choices`` (listed in the message)."""
    if value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {tuple(choices)}, but got {value!r}.")


def reduce(values: Tensor, reduction: str) -> Tensor:
    """Apply a ``"mean" | "sum" | "none"`` reduction to per-image values of shape ``(N,)``."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def check_input_range(input_range: Sequence[float]) -> tuple[float, float]:
    """Validate an ``input_range`` argument and return it as a tuple of two floats.

    Raises:
        ValueError: unless it is two numbers with ``low < high``.
    """
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected `input_range` to be two numbers (low, high), but got {input_range!r}."
        ) from None
    if not low < high:
        raise ValueError(f"Expected `input_range` to satisfy low < high, but got {input_range!r}.")
    return low, high
