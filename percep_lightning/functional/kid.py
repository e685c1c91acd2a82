r"""Kernel Inception Distance (Binkowski et al. 2018), as torch-fidelity computes it.

KID is the squared maximum mean discrepancy between real and generated features under the polynomial
kernel :math:`k(x, y) = (\gamma\, x^T y + c_0)^d` (by default :math:`\gamma = 1/D`, :math:`c_0 = 1`,
:math:`d = 3`), estimated without bias on random subsets of ``m`` features per side:

.. math::
    \widehat{\mathrm{MMD}}^2 = \frac{1}{m(m-1)} \sum_{i \ne j} \big(k(x_i, x_j) + k(y_i, y_j)\big)
        - \frac{2}{m^2} \sum_{i, j} k(x_i, y_j)

and the result is the mean and the population standard deviation over the subsets. Subsets are drawn as
torch-fidelity draws them (``numpy.random.RandomState(seed)``, for each subset first
``choice(n_fake, m, replace=False)`` for the generated set, then the same for the real set), so with the
same seed the subsets, and the value, are torch-fidelity's.

Speed: a subset's kernel sums are quadratic forms ``w^T K w`` of the full kernel matrices with the
subset's 0/1 indicator ``w``. When the sets are small compared with ``subsets x subset_size`` (validation
sets, a few thousand images) the full kernels are computed once and every subset costs a matrix-vector
product; otherwise each subset's kernels are computed, batched. Both run in float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from percep_lightning.functional.inputs import check_int

__all__ = ["kernel_inception_distance"]

_MIN_SAMPLES = 2
_Kernel = Callable[[Tensor, Tensor], Tensor]


def kernel_inception_distance(
    real_features: Tensor,
    fake_features: Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 2020,
) -> tuple[Tensor, Tensor]:
    r"""KID between two feature sets: mean and population std of the unbiased MMD² over random subsets.

    When ``subset_size`` exceeds the size of a set, subsets of ``min(len(real), len(fake))`` samples are
    used instead, with one warning (torch-fidelity raises there).

    Args:
        real_features: ``(N_real, D)`` features of the reference images (Inception pool3 for KID).
        fake_features: ``(N_fake, D)`` features of the generated images.
        subsets: the number of random subsets (torch-fidelity: 100).
        subset_size: the samples per set in a subset (torch-fidelity: 1000).
        degree: the polynomial kernel's degree ``d``.
        gamma: the kernel's scale; ``None`` means ``1 / D``.
        coef0: the kernel's constant ``c_0``.
        seed: the seed of ``numpy.random.RandomState`` that draws the subsets (torch-fidelity: 2020).

    Returns:
        ``(mean, std)``: two 0-dim float64 tensors on the features' device.

    Raises:
        TypeError: if the features are not floating-point tensors or an option has the wrong type.
        ValueError: on shapes other than ``(N, D)`` with the same ``D``, NaN/Inf, fewer than 2 samples in
            a set, or non-positive ``subsets`` / ``subset_size`` / ``degree``.

    Warns:
        UserWarning: when ``subset_size`` is larger than a set (all samples are used).

    Example:
        >>> import torch
        >>> from percep_lightning.functional import kernel_inception_distance
        >>> real, fake = torch.randn(50, 8), torch.randn(40, 8) + 1
        >>> mean, std = kernel_inception_distance(real, fake, subsets=10, subset_size=20)
        >>> bool(mean > 0), mean.dtype
        (True, torch.float64)
    """
    _check_features(real_features, "real_features")
    _check_features(fake_features, "fake_features")
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(
            "Expected `real_features` and `fake_features` to have the same feature dimension, but got shapes "
            f"{tuple(real_features.shape)} and {tuple(fake_features.shape)}."
        )
    for name, value in (("subsets", subsets), ("subset_size", subset_size), ("degree", degree)):
        check_int(value, name, minimum=1)
    check_int(seed, "seed")
    n_real, n_fake = real_features.shape[0], fake_features.shape[0]
    for which, n in (("real", n_real), ("generated", n_fake)):
        if n < _MIN_SAMPLES:
            raise ValueError(f"KID needs at least {_MIN_SAMPLES} {which} samples, but got {n}.")
    m = int(subset_size)
    if m > min(n_real, n_fake):
        m = min(n_real, n_fake)
        warnings.warn(
            f"KID `subset_size`={subset_size} is larger than the sets ({n_real} real, {n_fake} generated "
            f"samples); using subsets of {m} samples. Lower `subset_size` (`--kid-subset-size` on the command line) to silence this warning.",
            UserWarning,
            stacklevel=2,
        )
    if gamma is None:
        gamma = 1.0 / real_features.shape[1]

    # Generated set first, then real: torch-fidelity's input 1 is the generated set.
    rng = np.random.RandomState(int(seed))
    draws = [
        (rng.choice(n_fake, m, replace=False), rng.choice(n_real, m, replace=False)) for _ in range(subsets)
    ]
    device = real_features.device if real_features.device.type != "mps" else torch.device("cpu")
    fake_idx = torch.from_numpy(np.stack([d[0] for d in draws])).to(device)
    real_idx = torch.from_numpy(np.stack([d[1] for d in draws])).to(device)
    x = fake_features.to(device, torch.float64)
    y = real_features.to(device, torch.float64)

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.transpose(-1, -2) * gamma + coef0) ** degree

    full_cost = n_fake * n_fake + n_real * n_real + n_fake * n_real
    if full_cost <= 3 * subsets * m * m:
        sums = _subset_sums_from_full_kernels(x, y, fake_idx, real_idx, kernel)
    else:
        sums = _subset_sums_per_subset(x, y, fake_idx, real_idx, kernel)
    within_x, within_y, cross = sums
    mmd2 = (within_x + within_y) / (m * (m - 1)) - 2 * cross / (m * m)
    return mmd2.mean(), mmd2.std(correction=0)


def _subset_sums_from_full_kernels(
    x: Tensor, y: Tensor, x_idx: Tensor, y_idx: Tensor, kernel: _Kernel
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-subset kernel sums as quadratic forms of the full kernels with 0/1 indicators (rows in chunks)."""
    subsets = x_idx.shape[0]
    wx = torch.zeros(subsets, x.shape[0], dtype=x.dtype, device=x.device).scatter_(1, x_idx, 1.0)
    wy = torch.zeros(subsets, y.shape[0], dtype=y.dtype, device=y.device).scatter_(1, y_idx, 1.0)
    within_x = _quadratic_form(x, x, wx, wx, kernel, exclude_diagonal=True)
    within_y = _quadratic_form(y, y, wy, wy, kernel, exclude_diagonal=True)
    cross = _quadratic_form(x, y, wx, wy, kernel, exclude_diagonal=False)
    return within_x, within_y, cross


def _quadratic_form(
    a: Tensor,
    b: Tensor,
    wa: Tensor,
    wb: Tensor,
    kernel: _Kernel,
    *,
    exclude_diagonal: bool,
    chunk: int = 2048,
) -> Tensor:
    """``sum_ij wa[s, i] k(a_i, b_j) wb[s, j]`` for every subset ``s``, without the ``i == j`` terms if asked."""
    total = torch.zeros(wa.shape[0], dtype=a.dtype, device=a.device)
    for start in range(0, a.shape[0], chunk):
        block = kernel(a[start : start + chunk], b)
        if exclude_diagonal:
            rows = torch.arange(block.shape[0], device=a.device)
            block[rows, rows + start] = 0
        total += ((wb @ block.T) * wa[:, start : start + chunk]).sum(dim=1)
    return total


def _subset_sums_per_subset(
    x: Tensor, y: Tensor, x_idx: Tensor, y_idx: Tensor, kernel: _Kernel, max_elements: int = 2**24
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-subset kernel sums from each subset's own ``m x m`` kernels, several subsets per batch."""
    subsets, m = x_idx.shape
    # bounds both the gathered (batch, m, D) features and the (batch, m, m) kernels
    per_batch = max(1, max_elements // (m * max(m, x.shape[1])))
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, subsets, per_batch):
        xs, ys = x[x_idx[start : start + per_batch]], y[y_idx[start : start + per_batch]]
        k_xx, k_yy, k_xy = kernel(xs, xs), kernel(ys, ys), kernel(xs, ys)
        parts.append(
            (
                k_xx.sum(dim=(1, 2)) - k_xx.diagonal(dim1=1, dim2=2).sum(dim=1),
                k_yy.sum(dim=(1, 2)) - k_yy.diagonal(dim1=1, dim2=2).sum(dim=1),
                k_xy.sum(dim=(1, 2)),
            )
        )
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def _check_features(features: object, name: str) -> None:
    if not isinstance(features, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(features).__name__}.")
    if not features.is_floating_point():
        raise TypeError(f"Expected `{name}` to be a floating-point tensor, but got dtype {features.dtype}.")
    if features.ndim != 2:
        raise ValueError(f"Expected `{name}` to be 2-D (N, D), but got shape {tuple(features.shape)}.")
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"Expected `{name}` to be finite, but it contains NaN or Inf values.")
