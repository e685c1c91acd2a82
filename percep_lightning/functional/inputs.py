"""The public input types and checks of percep_lightning: what every function, loss, metric and callback takes,
and the one place where a wrong type (``TypeError``) or a bad value (``ValueError``) is told apart.

Type aliases for annotations in user code: :data:`Reduction`, :data:`Channel`, :data:`InputRange`,
:data:`Quantize`. Checks with messages that name the argument: :func:`check_tensors`, :func:`check_int`,
:func:`check_bool`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import Tensor

__all__ = ["Channel", "InputRange", "Quantize", "Reduction", "check_bool", "check_int", "check_tensors"]

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
