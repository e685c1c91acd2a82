"""The public input types and checks of percep_lightning: what every function, loss, metric and callback takes,
and the one place where a wrong type (``TypeError``) or a bad value (``ValueError``) is told apart.

Type aliases for annotations in user code: :data:`Reduction`, :data:`Channel`, :data:`InputRange`,
:data:`Quantize`. Checks with messages that name the argument: :func:`check_tensors`, :func:`check_int`,
:func:`check_bool`, :func:`check_real`.

Pixel ranges follow one rule, :data:`RANGE_TOLERANCE`: values at most that fraction of the range's width
beyond either end are an overshoot (an un-clamped network output, resampling ringing) and are accepted
everywhere; values further out mean the images are on another scale (``[0, 255]`` or ``[-1, 1]`` passed
as ``[0, 1]``). Then the metrics and the callback raise a ValueError, since a number computed on the wrong
scale would be reported, while the losses and SSIM / MS-SSIM warn once per calling line, since their
formulas hold on any scale and a training run should not stop. (PSNR takes any values: its ``data_range``
is the scale.) :func:`value_bounds` and
:func:`far_outside` are that rule; every image check in the package uses them.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "RANGE_TOLERANCE", "Channel", "InputRange", "Quantize", "Reduction", "check_bool", "check_int",
    "check_real", "check_tensors", "far_outside", "value_bounds",
]  # fmt: skip

Reduction = Literal["mean", "sum", "none"]
"""The ``reduction`` of a loss or function: over the batch, or ``"none"`` for one value per image."""
Channel = Literal["rgb", "y", "per_channel"]
"""What PSNR, SSIM and MS-SSIM compare: all channels, the BT.601 luma, or each channel on its own."""
InputRange = tuple[float, float]
"""The declared ``(low, high)`` pixel range of a loss's inputs, e.g. ``(0, 1)`` or ``(-1, 1)``."""
Quantize = Literal["round", "truncate"]
"""How float images in [0, 1] become ``uint8`` for a network that reads 8-bit pixels."""


def check_tensors(**named: object) -> None:
    """Raise a TypeError naming the first argument that is not a ``torch.Tensor``.

    Example:
        >>> check_tensors(preds=1)
        Traceback (most recent call last):
        ...
        TypeError: Expected `preds` to be a torch.Tensor, but got int.
    """
    for name, value in named.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(value).__name__}.")


def check_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """``value`` as an ``int``: a TypeError unless it is an integer (not a bool), a ValueError below ``minimum``.

    Example:
        >>> check_int(3, "splits", minimum=1)
        3
        >>> check_int(0, "splits", minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: Expected `splits` to be >= 1, but got 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Expected `{name}` to be an integer, but got {type(value).__name__} {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"Expected `{name}` to be >= {minimum}, but got {value}.")
    return int(value)


def check_bool(value: object, name: str) -> bool:
    """``value`` when it is a bool, else a TypeError naming the argument.

    Example:
        >>> check_bool("yes", "real")
        Traceback (most recent call last):
        ...
        TypeError: Expected `real` to be a bool, but got str 'yes'.
    """
    if not isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be a bool, but got {type(value).__name__} {value!r}.")
    return value


def check_real(value: object, name: str, *, positive: bool = False) -> float:
    """``value`` as a ``float``: a TypeError unless it is a real number (not a bool), a ValueError unless it is
    ``> 0`` with ``positive``.

    Example:
        >>> check_real(2, "sigma", positive=True)
        2.0
        >>> check_real("1", "sigma")
        Traceback (most recent call last):
        ...
        TypeError: Expected `sigma` to be a real number, but got str '1'.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"Expected `{name}` to be a real number, but got {type(value).__name__} {value!r}.")
    if positive and not value > 0:
        raise ValueError(f"Expected `{name}` to be > 0, but got {value}.")
    return float(value)


RANGE_TOLERANCE = 0.1
"""How far images may reach beyond their pixel range, as a fraction of its width (see the module docstring)."""


def value_bounds(named: dict[str, Tensor]) -> dict[str, tuple[float, float]]:
    """``(min, max)`` of each non-empty tensor: one ``aminmax`` pass each, one device synchronisation for all.

    Args:
        named: the tensors, keyed by how messages name them (e.g. ``"`preds`"``).

    Raises:
        ValueError: naming the first tensor that holds NaN or Inf.

    Example:
        >>> value_bounds({"`x`": torch.tensor([0.5, -0.25, 2.0])})
        {'`x`': (-0.25, 2.0)}
    """
    present = {label: x.detach() for label, x in named.items() if x.numel() > 0}
    if not present:
        return {}
    flat = torch.stack([bound for x in present.values() for bound in torch.aminmax(x)]).tolist()
    bounds = {label: (flat[2 * i], flat[2 * i + 1]) for i, label in enumerate(present)}
    for label, (low, high) in bounds.items():
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"Expected {label} to be finite, but it contains NaN or Inf values.")
    return bounds


def far_outside(bounds: tuple[float, float], low: float, high: float) -> bool:
    """Whether ``bounds`` reach beyond ``[low, high]`` by more than :data:`RANGE_TOLERANCE` of its width.

    Example:
        >>> far_outside((-0.05, 1.08), 0.0, 1.0), far_outside((0.0, 255.0), 0.0, 1.0)
        (False, True)
    """
    slack = RANGE_TOLERANCE * (high - low)
    return bounds[0] < low - slack or bounds[1] > high + slack
