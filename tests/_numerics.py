"""Tolerances for float32 results derived from float32 round-off, never from what one CPU happened to give.

Two float32 computations of the same quantity in a different order (chunked vs whole, one library's kernel
vs another's) differ by round-off, and how much depends on the CPU's kernels: Intel and AMD builds of the
same BLAS sum in different orders. Comparing them with each other at a tolerance that held on one machine
makes a test that fails on another. Instead, each float32 result is compared with the same quantity
evaluated in float64, at a tolerance proportional to float32's unit round-off.

Comparisons left at ``torch.testing.assert_close``'s float32 defaults (rtol 1.3e-6, atol 1e-5) are of O(1)
values accumulated over at most a few hundred terms, where those defaults are themselves tens of times the
round-off; and comparisons of the same operations in the same order are exact on any CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

EPS32 = torch.finfo(torch.float32).eps  # 2**-23, twice the unit round-off of float32


def float32_tolerance(reference: Tensor, *, terms: int, factor: float = 8.0) -> float:
    """The absolute error allowed for a float32 result that accumulates ``terms`` values per output element.

    Round-off in a float32 sum of ``n`` terms of magnitude ``s`` grows like ``sqrt(n) * eps * s`` (random
    rounding errors), with ``n * eps * s`` as the worst case. ``factor * sqrt(terms) * eps * max|reference|``
    keeps a wide margin over the first on any CPU while staying orders of magnitude below a real error.
    """
    scale = float(reference.detach().abs().max()) if reference.numel() else 0.0
    return factor * math.sqrt(max(terms, 1)) * EPS32 * scale


def assert_float32_close(
    actual: Tensor, reference: Tensor, *, terms: int, factor: float = 8.0, msg: str | None = None
) -> None:
    """Assert that a float32 ``actual`` equals a float64 ``reference`` up to float32 round-off.

    Args:
        actual: the float32 (or lower-precision, computed in float32) result under test.
        reference: the same quantity computed in float64.
        terms: how many values each output element accumulates in float32 (a reduction's length).
        factor: the margin over the statistical round-off estimate.
        msg: prefix of the failure message.
    """
    if reference.dtype != torch.float64:
        raise TypeError(f"The reference must be computed in float64, but got {reference.dtype}.")
    tolerance = float32_tolerance(reference, terms=terms, factor=factor)
    error = float((actual.detach().double() - reference.detach()).abs().max()) if actual.numel() else 0.0
    assert actual.shape == reference.shape, (
        f"{msg or ''} shapes {tuple(actual.shape)} != {tuple(reference.shape)}"
    )
    assert error <= tolerance, (
        f"{msg + ': ' if msg else ''}max |float32 - float64| = {error:.3e} exceeds the float32 round-off "
        f"tolerance {tolerance:.3e} ({factor} * sqrt({terms}) * eps32 * max|reference|)"
    )
