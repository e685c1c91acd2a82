r"""CMMD (Jayasumana et al. 2024): the maximum mean discrepancy of CLIP embeddings under a Gaussian kernel.

The estimator of the reference code (google-research ``cmmd/distance.py``, ``mmd``) with the kernel
:math:`k(a, b) = \exp(-\gamma \|a - b\|^2)`, :math:`\gamma = 1 / (2 \sigma^2)`, every mean taken over all
pairs, the diagonal included (the biased, minimum-variance estimator):

.. math::
    \mathrm{CMMD} = s \Big(\frac{1}{n^2} \sum_{i, i'} k(x_i, x_{i'}) + \frac{1}{m^2} \sum_{j, j'} k(y_j, y_{j'})
        - \frac{2}{nm} \sum_{i, j} k(x_i, y_j)\Big)

with :math:`\sigma = 10` and the scale :math:`s = 1000` of the paper. The embeddings are CLIP ViT-L/14
(336 px) image embeddings, L2-normalised; this function takes any features.

The three means are each close to 1 and their difference is small, so the sums are taken in float64 over
:math:`k - 1 = \operatorname{expm1}(-\gamma \|a - b\|^2)` (the ones cancel exactly), in tiles of at most
``_BLOCK x _BLOCK`` pairs on the features' device: memory stays bounded whatever the number of samples.
The within-set sums use the symmetry of their kernel matrices (tiles on and above the diagonal only).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from percep_lightning.functional._features import check_feature_sets
from percep_lightning.functional.inputs import check_real

__all__ = ["cmmd"]

_BLOCK = 4096  # rows and columns of a kernel tile: 128 MiB in float64


def cmmd(x: Tensor, y: Tensor, *, sigma: float = 10.0, scale: float = 1000.0) -> Tensor:
    r"""CMMD between two sets of embeddings, as the reference ``distance.mmd`` computes it.

    .. math::
        \mathrm{CMMD} = s \big(\overline{K_{xx}} + \overline{K_{yy}} - 2\, \overline{K_{xy}}\big), \qquad
        K(a, b) = \exp\big(-\|a - b\|^2 / (2 \sigma^2)\big),

    where :math:`\overline{K}` is the mean over all ``n x n``, ``m x m`` or ``n x m`` pairs (diagonals
    included) and :math:`s` is ``scale``. The value is symmetric in ``x`` and ``y``, zero for identical
    sets, and does not change when both sets are shifted by the same vector.

    Computed in float64 whatever the input dtype (the result is a small difference of means close to 1),
    in bounded memory: tiles of at most 4096 x 4096 pairs, never a full kernel matrix.

    Args:
        x: ``(n, D)`` embeddings of one set (the reference images, for CMMD).
        y: ``(m, D)`` embeddings of the other set (the generated images); ``m`` may differ from ``n``.
        sigma: the kernel bandwidth :math:`\sigma` (the paper: 10, for L2-normalised CLIP embeddings).
        scale: the factor :math:`s` of the result (the paper: 1000).

    Returns:
        A 0-dim float64 tensor on the embeddings' device (the CPU for MPS tensors, which have no float64).

    Raises:
        TypeError: if ``x`` or ``y`` is not a floating-point tensor, or ``sigma`` / ``scale`` not a real number.
        ValueError: on shapes other than ``(n, D)`` and ``(m, D)`` with the same ``D >= 1`` and at least one
            row, NaN/Inf embeddings, or a ``sigma`` that is not finite and positive, or an infinite ``scale``.

    Example:
        >>> import torch
        >>> from percep_lightning.functional import cmmd
        >>> x = torch.nn.functional.normalize(torch.randn(100, 16), dim=1)
        >>> value = cmmd(x, x)
        >>> value.dtype, abs(float(value)) < 1e-9
        (torch.float64, True)
        >>> float(cmmd(x, x + 0.5)) > 0
        True
    """
    check_feature_sets(x, y, ("x", "y"))
    sigma = check_real(sigma, "sigma")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"Expected `sigma` to be finite and > 0, but got {sigma}.")
    scale = check_real(scale, "scale")
    if not math.isfinite(scale):
        raise ValueError(f"Expected `scale` to be finite, but got {scale}.")

    device = x.device if x.device.type != "mps" else torch.device("cpu")
    x, y = x.to(device), y.to(device)
    # ||a - b|| does not change under a common shift; centring makes |a|^2 + |b|^2 - 2ab cancel less.
    centre = x.mean(dim=0, dtype=torch.float64)
    x_rows, y_rows = _rows(x, centre), _rows(y, centre)
    gamma = 1.0 / (2.0 * sigma * sigma)
    (n, dim), m = x.shape, y.shape[0]
    within_x = _kernel_deviation_sum(x_rows, x_rows, dim, gamma, symmetric=True) / (n * n)
    within_y = _kernel_deviation_sum(y_rows, y_rows, dim, gamma, symmetric=True) / (m * m)
    cross = _kernel_deviation_sum(x_rows, y_rows, dim, gamma, symmetric=False) / (n * m)
    return scale * (within_x + within_y - 2.0 * cross)


def _rows(x: Tensor, centre: Tensor) -> Tensor:
    """``[a, |a|^2, 1, 0...]`` in float64, ``a = x - centre``, with zero columns up to a multiple of 8 (faster
    products), built a block at a time (no second float64 copy of ``x``)."""
    n, dim = x.shape
    rows = x.new_zeros((n, dim + 2 + (-(dim + 2) % 8)), dtype=torch.float64)
    for s in range(0, n, _BLOCK):
        block = x[s : s + _BLOCK].to(torch.float64) - centre
        rows[s : s + _BLOCK, :dim] = block
        rows[s : s + _BLOCK, dim] = block.square().sum(dim=1)
    rows[:, dim + 1] = 1.0
    return rows


def _columns(rows: Tensor, dim: int, gamma: float) -> Tensor:
    """``-gamma [-2a, 1, |a|^2, 0...]`` from rows ``[a, |a|^2, 1, 0...]``: the product of a row and a column
    is ``-gamma (|a|^2 + |b|^2 - 2ab)``, the reference's squared distance times ``-gamma``."""
    columns = torch.zeros_like(rows)
    torch.mul(rows[:, :dim], 2.0 * gamma, out=columns[:, :dim])
    columns[:, dim] = -gamma
    torch.mul(rows[:, dim], -gamma, out=columns[:, dim + 1])
    return columns


def _kernel_deviation_sum(a: Tensor, b: Tensor, dim: int, gamma: float, *, symmetric: bool) -> Tensor:
    """``sum_ij (k(a_i, b_j) - 1)`` in tiles, from the rows of :func:`_rows` (``dim`` features); with
    ``symmetric`` (``a is b``) only the tiles on and above the diagonal, those off it counted twice."""
    n, m = a.shape[0], b.shape[0]
    buffer = a.new_empty(min(_BLOCK, n) * min(_BLOCK, m))  # every tile is written into it
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for j in range(0, m, _BLOCK):
        cols = slice(j, min(j + _BLOCK, m))
        columns = _columns(b[cols], dim, gamma)
        for i in range(0, j + 1 if symmetric else n, _BLOCK):
            rows = slice(i, min(i + _BLOCK, n))
            tile = buffer[: (rows.stop - i) * (cols.stop - j)].view(rows.stop - i, cols.stop - j)
            part = torch.mm(a[rows], columns.T, out=tile).expm1_().sum()
            total += part if not symmetric or i == j else 2.0 * part
    return total
