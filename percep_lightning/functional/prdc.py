r"""Precision, recall, density and coverage of generated features against real ones (package ``prdc`` 0.2).

Every sample gets a ball around it whose radius is the distance to its ``k``-th nearest neighbour in its
own set (itself excluded). With real features :math:`x_1..x_N`, their radii :math:`r_i`, generated (fake)
features :math:`y_1..y_M` and their radii :math:`s_j`:

.. math::
    \mathrm{precision} = \frac{1}{M} \sum_j \big[\exists i: \|x_i - y_j\| < r_i\big] \qquad
    \mathrm{recall} = \frac{1}{N} \sum_i \big[\exists j: \|x_i - y_j\| < s_j\big]

    \mathrm{density} = \frac{1}{kM} \sum_j \sum_i \big[\|x_i - y_j\| < r_i\big] \qquad
    \mathrm{coverage} = \frac{1}{N} \sum_i \big[\min_j \|x_i - y_j\| < r_i\big]

Precision (Kynkäänniemi et al. 2019) is the share of generated samples inside the real manifold, recall the
share of real samples inside the generated manifold; density and coverage (Naeem et al. 2020) are their
outlier-robust versions. Kynkäänniemi's precision and recall use ``k = 3`` and ``<=``; with continuous
features a distance equals a radius with probability zero, so ``k=3`` here gives their values.

No ``N x M`` distance matrix is held: distances are computed in float64 tiles of at most
``_BLOCK x _BLOCK`` pairs, each set's radii from the upper triangle of its own distance matrix (a tile
gives the nearest neighbours of its rows and of its columns), the four counts accumulated tile by tile.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from percep_lightning.functional._features import check_feature_sets
from percep_lightning.functional.inputs import check_int

__all__ = ["PRDC", "prdc"]

_BLOCK = 4096  # rows and columns of a distance tile: 128 MiB in float64


class PRDC(NamedTuple):
    """The four values of :func:`prdc`, each a 0-dim float64 tensor."""

    precision: Tensor
    """Share of fake samples inside the ball of some real sample."""
    recall: Tensor
    """Share of real samples inside the ball of some fake sample."""
    density: Tensor
    """Mean over fake samples of the number of real balls containing them, divided by ``k``."""
    coverage: Tensor
    """Share of real samples whose ball contains at least one fake sample."""


def prdc(real_features: Tensor, fake_features: Tensor, *, k: int = 5) -> PRDC:
    r"""Precision, recall, density and coverage of fake (generated) features against real ones.

    Equal to ``prdc.compute_prdc(real_features, fake_features, nearest_k=k)`` (package ``prdc`` 0.2, the
    convention of Naeem et al. 2020 and of dgm-eval): the radius of a sample is the distance to its
    ``k``-th nearest neighbour in its own set, itself excluded, and a sample is inside a ball when its
    distance to the centre is strictly smaller than the radius:

    .. math::
        \mathrm{precision} = \frac{1}{M} \sum_j \big[\exists i: \|x_i - y_j\| < r_i\big], \quad
        \mathrm{recall} = \frac{1}{N} \sum_i \big[\exists j: \|x_i - y_j\| < s_j\big],

        \mathrm{density} = \frac{1}{kM} \sum_{i, j} \big[\|x_i - y_j\| < r_i\big], \quad
        \mathrm{coverage} = \frac{1}{N} \sum_i \big[\min_j \|x_i - y_j\| < r_i\big],

    with real features :math:`x_i` (radii :math:`r_i`) and fake features :math:`y_j` (radii :math:`s_j`).
    Precision asks whether the fake samples look real (fidelity), recall whether the real samples are
    reproduced (diversity); a generator that collapses onto a few real modes has high precision and low
    recall. Kynkäänniemi et al.'s precision and recall are ``k=3`` (their code compares with ``<=``, which
    differs only where a distance equals a radius exactly: probability zero for continuous features).

    Distances are computed in float64 whatever the input dtype (the ``prdc`` package rounds them to the
    input's dtype, so on float32 features a count may differ from ours where a distance and a radius agree
    to float32 precision). Coincident samples are at distance zero up to round-off, here as in ``prdc``.
    Memory stays bounded: no ``N x M`` matrix is formed.

    Args:
        real_features: ``(N, D)`` features of the real (reference) samples.
        fake_features: ``(M, D)`` features of the generated samples.
        k: the neighbour whose distance is a sample's radius; ``prdc`` and dgm-eval use 5, Kynkäänniemi
            et al. 3.

    Returns:
        :class:`PRDC` ``(precision, recall, density, coverage)``: 0-dim float64 tensors on the features'
        device (the CPU for MPS tensors, which have no float64). Density can exceed 1; the others lie in
        [0, 1].

    Raises:
        TypeError: if the features are not floating-point tensors or ``k`` is not an integer.
        ValueError: on shapes other than ``(N, D)`` and ``(M, D)``, NaN/Inf features, ``k < 1``, or ``k`` not
            smaller than the number of samples of a set.

    Example:
        >>> import torch
        >>> from percep_lightning.functional import prdc
        >>> real = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
        >>> collapsed = 0.05 * torch.randn(100, 4, generator=torch.Generator().manual_seed(1))
        >>> out = prdc(real, collapsed, k=5)
        >>> float(out.precision), float(out.recall) < 0.2
        (1.0, True)
    """
    check_feature_sets(real_features, fake_features, ("real_features", "fake_features"))
    k = check_int(k, "k", minimum=1)
    for which, n in (("real", real_features.shape[0]), ("fake", fake_features.shape[0])):
        if k >= n:
            raise ValueError(
                f"Expected `k` to be smaller than the number of {which} samples ({n}), but got {k}."
            )

    device = real_features.device if real_features.device.type != "mps" else torch.device("cpu")  # no float64
    real, fake = real_features.to(device, torch.float64), fake_features.to(device, torch.float64)
    real_sq, fake_sq = real.square().sum(dim=1), fake.square().sum(dim=1)
    real_radii = _ball_thresholds(_kth_neighbour(real, real_sq, k))
    fake_radii = _ball_thresholds(_kth_neighbour(fake, fake_sq, k))
    inside_real, covered, recalled = _cross_counts(real, real_sq, real_radii, fake, fake_sq, fake_radii)
    n_fake = fake.shape[0]
    return PRDC(
        precision=(inside_real > 0).to(torch.float64).mean(),
        recall=recalled.to(torch.float64).mean(),
        density=inside_real.sum().to(torch.float64) / (k * n_fake),
        coverage=covered.to(torch.float64).mean(),
    )


def _squared_distances(a: Tensor, a_sq: Tensor, b: Tensor, b_sq: Tensor) -> Tensor:
    """``|a_i|^2 + |b_j|^2 - 2 a_i . b_j`` for every pair: one ``(len(a), len(b))`` tile."""
    return torch.addmm(b_sq.unsqueeze(0), a, b.T, alpha=-2.0).add_(a_sq.unsqueeze(1))


def _kth_neighbour(x: Tensor, x_sq: Tensor, k: int) -> Tensor:
    """Squared distance of every row of ``x`` to its ``k``-th nearest other row.

    Only tiles on or above the diagonal are computed: tile ``(I, J)`` holds ``d(x_I, x_J)`` and, read by
    columns, ``d(x_J, x_I)``, so it updates the nearest neighbours of both row blocks.
    """
    n = x.shape[0]
    nearest = torch.full((n, k), math.inf, dtype=x.dtype, device=x.device)

    def merge(rows: slice, candidates: Tensor) -> None:
        both = torch.cat([nearest[rows], candidates], dim=1)
        nearest[rows] = both.topk(k, dim=1, largest=False).values

    starts = range(0, n, _BLOCK)
    for i in starts:
        rows = slice(i, min(i + _BLOCK, n))
        for j in starts[i // _BLOCK :]:
            cols = slice(j, min(j + _BLOCK, n))
            tile = _squared_distances(x[rows], x_sq[rows], x[cols], x_sq[cols])
            if i == j:
                tile.fill_diagonal_(math.inf)  # a sample is not its own neighbour
            merge(rows, tile.topk(min(k, tile.shape[1]), dim=1, largest=False).values)
            if i != j:
                merge(cols, tile.topk(min(k, tile.shape[0]), dim=0, largest=False).values.T)
    return nearest[:, k - 1]


def _ball_thresholds(kth_squared: Tensor) -> Tensor:
    """Squared radii for ``d^2 < threshold`` tests, as the reference compares clipped distances.

    The reference clips squared distances at 0 before its square root, so a radius of 0 (``k + 1``
    coincident samples) contains nothing; ``-inf`` says so whatever the round-off sign of a tile entry.
    """
    return torch.where(kth_squared > 0, kth_squared, -math.inf)


def _cross_counts(
    real: Tensor, real_sq: Tensor, real_radii: Tensor, fake: Tensor, fake_sq: Tensor, fake_radii: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Per fake sample the number of real balls containing it; per real sample whether its ball contains a
    fake sample, and whether it lies in some fake ball."""
    n_real, n_fake = real.shape[0], fake.shape[0]
    inside_real = torch.zeros(n_fake, dtype=torch.int64, device=real.device)
    covered = torch.zeros(n_real, dtype=torch.bool, device=real.device)
    recalled = torch.zeros(n_real, dtype=torch.bool, device=real.device)
    for i in range(0, n_real, _BLOCK):
        rows = slice(i, min(i + _BLOCK, n_real))
        for j in range(0, n_fake, _BLOCK):
            cols = slice(j, min(j + _BLOCK, n_fake))
            tile = _squared_distances(real[rows], real_sq[rows], fake[cols], fake_sq[cols])
            in_real_ball = tile < real_radii[rows].unsqueeze(1)
            inside_real[cols] += in_real_ball.sum(dim=0, dtype=torch.int32)
            covered[rows] |= in_real_ball.any(dim=1)
            recalled[rows] |= (tile < fake_radii[cols].unsqueeze(0)).any(dim=1)
    return inside_real, covered, recalled
