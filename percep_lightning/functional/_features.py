"""The input check of the distribution metrics that take two sets of feature vectors (PRDC, CMMD)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_feature_sets(first: object, second: object, names: tuple[str, str], *, min_rows: int = 1) -> None:
    """Raise unless ``first`` and ``second`` are finite floating ``(N, D)`` tensors with one ``D >= 1``.

    Args:
        first, second: the two feature sets.
        names: their argument names, for the messages.
        min_rows: the fewest rows each set may have.

    Raises:
        TypeError: if either is not a floating-point tensor.
        ValueError: on a rank other than 2, ``D == 0``, fewer than ``min_rows`` rows, different ``D``, or
            NaN/Inf values.
    """
    checked: list[Tensor] = []
    for name, x in zip(names, (first, second), strict=True):
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(x).__name__}.")
        if not x.is_floating_point():
            raise TypeError(f"Expected `{name}` to be a floating-point tensor, but got dtype {x.dtype}.")
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(
                f"Expected `{name}` to be 2-D (N, D) with D >= 1, but got shape {tuple(x.shape)}."
            )
        if x.shape[0] < min_rows:
            rows = f"{min_rows} row" + ("s" if min_rows != 1 else "")
            raise ValueError(f"Expected `{name}` to have at least {rows}, but got shape {tuple(x.shape)}.")
        checked.append(x)
    if checked[0].shape[1] != checked[1].shape[1]:
        raise ValueError(
            f"Expected `{names[0]}` and `{names[1]}` to have the same feature dimension, but got shapes "
            f"{tuple(checked[0].shape)} and {tuple(checked[1].shape)}."
        )
    for name, x in zip(names, checked, strict=True):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"Expected `{name}` to be finite, but it contains NaN or Inf values.")
