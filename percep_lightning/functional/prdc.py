r"""Precision, recall, density and coverage of generated features against real ones (package ``prdc`` 0.2).

Every sample gets a ball whose radius is the distance to its ``k``-th nearest neighbour in its own set
(itself excluded). Precision (Kynkäänniemi et al. 2019) is the share of generated samples inside some real
ball, recall the share of real samples inside some generated ball; density and coverage (Naeem et al.
2020) are their outlier-robust versions. The formulas are in :func:`prdc`.

How it is computed, exactly and in bounded memory. No ``N x M`` matrix is held: squared distances
``|a|^2 + |b|^2 - 2 a.b`` are computed in tiles of at most ``_BLOCK x _BLOCK`` pairs, each set's radii from
the tiles on and above the diagonal of its own distance matrix (a tile gives the nearest neighbours of its
rows and, read by columns, of its columns). The tiles are float32 where float32 matrix products round as
IEEE float32 (float64 otherwise), and every decision is nevertheless the one float64 distances give: a tile
entry is within a proven bound of the exact distance (see :func:`_error_coefficient`), so a radius is
known within that bound from the tiles, and a comparison with a radius is settled by the tile unless the
two are closer than twice the bound. Those few pairs, and the radii they involve, are recomputed from
the features in float64 as ``sum((a - b)^2)``, which has no cancellation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from percep_lightning.functional._features import check_feature_sets
from percep_lightning.functional.inputs import check_int

__all__ = ["PRDC", "prdc"]

_BLOCK = 2048  # rows and columns of a distance tile: 16 MiB in float32
_SPARE = 8  # nearest neighbours kept per sample beyond the k-th, so that the exact k-th is usually among them
_GATHER = 2**22  # float64 elements gathered at once when distances are recomputed exactly (32 MiB)
_SAFETY = 2.0  # margin on the proven rounding-error bound of a tile entry


class PRDC(NamedTuple):
    """The four values of :func:`prdc`, each a 0-dim float64 tensor."""

    precision: Tensor
    """Share of fake samples inside the ball of some real sample."""
    recall: Tensor
    """Share of real samples inside the ball of some fake sample."""
    density: Tensor
    """Number of (real ball, fake sample inside it) pairs, divided by ``k`` and the number of fake samples."""
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

    Every comparison is decided on float64 distances whatever the input dtype (the ``prdc`` package
    rounds distances to the input's dtype, so on float32 features a count may differ from ours where a
    distance and a radius agree to float32 precision). Coincident samples are at distance exactly 0: a
    sample with ``k`` others at its position has radius 0, a ball that contains nothing. Memory stays
    bounded: no ``N x M`` matrix is formed.

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

    real, fake = _prepare(real_features, fake_features)
    inside, covered, recalled = _cross_counts(real, _Radii(real, k), fake, _Radii(fake, k))
    return PRDC(
        precision=(inside > 0).to(torch.float64).mean(),
        recall=recalled.to(torch.float64).mean(),
        density=inside.sum().to(torch.float64) / (k * fake.size),
        coverage=covered.to(torch.float64).mean(),
    )


# --------------------------------------------------------------------------------- tiles and their error


def _prepare(real_features: Tensor, fake_features: Tensor) -> tuple[_Features, _Features]:
    """Both sets, centred on the real mean, in the tile dtype, with their error bounds."""
    device = real_features.device if real_features.device.type != "mps" else torch.device("cpu")  # no float64
    real_features, fake_features = real_features.to(device), fake_features.to(device)
    # A common shift leaves distances unchanged and makes the squared norms, hence the error bound, smaller.
    centre = real_features.mean(dim=0, dtype=torch.float64)
    largest = 0.0  # the largest |feature - centre|, from each column's extremes
    for x in (real_features, fake_features):
        low, high = x.aminmax(dim=0)
        largest = max(largest, float((low.to(torch.float64) - centre).abs().max()))
        largest = max(largest, float((high.to(torch.float64) - centre).abs().max()))
    dtype = _tile_dtype(device, real_features.shape[1], largest)
    return _Features.build(real_features, centre, dtype), _Features.build(fake_features, centre, dtype)


def _float32_matmul_is_ieee(device: torch.device) -> bool:
    """Whether float32 matrix products on ``device`` round in float32, not TF32 or bfloat16."""
    if device.type not in ("cpu", "cuda"):
        return False
    try:
        backend = getattr(
            torch.backends.cuda if device.type == "cuda" else torch.backends.mkldnn, "matmul", None
        )
        precision = getattr(backend, "fp32_precision", None)
        if precision is None:  # torch before the per-backend setting
            tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
            return torch.get_float32_matmul_precision() == "highest" and not tf32
        if precision == "none":  # inherits the global setting
            precision = getattr(torch.backends, "fp32_precision", "none")
        return precision in ("none", "ieee")
    except (AttributeError, RuntimeError):
        return False


def _tile_dtype(device: torch.device, dim: int, largest: float) -> torch.dtype:
    """float32 tiles where their error bound holds and nothing overflows, float64 otherwise (``largest``:
    the largest absolute centred feature)."""
    if _float32_matmul_is_ieee(device) and dim * 2**-24 < 1e-2 and 4 * dim * largest**2 < 2.0**120:
        return torch.float32
    return torch.float64


def _error_coefficient(dim: int, dtype: torch.dtype) -> float:
    r"""``c`` such that ``|tile_ij - d_ij| <= c (|a_i|^2 + |b_j|^2)``, ``d_ij`` the exact squared distance.

    A tile entry is the product of ``[a, |a|^2, 1]`` and ``[-2b, 1, |b|^2]`` (``a``, ``b``: the centred
    features rounded to the tile dtype, with unit round-off ``u``). Rounding the features moves a squared
    distance by at most ``~4u (|a|^2 + |b|^2)``; the stored squared norms, those of the features before
    rounding, rounded, differ from ``|a|^2`` and ``|b|^2`` by ``~3u`` times the same;
    the product of length ``D + 2``, taken in any order, errs by at most
    :math:`\gamma_{D+2} (2 \sum_k |a_k b_k| + |a|^2 + |b|^2) \le 2 \gamma_{D+2} (|a|^2 + |b|^2)`, with
    :math:`\gamma_n = nu / (1 - nu)` (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1). The
    float64 ``sum((a - b)^2)`` that settles close calls errs by at most :math:`\gamma^{(64)}_{D+2}\, d_{ij}
    \le 2 \gamma^{(64)}_{D+2} (|a|^2 + |b|^2)`. The sum of the terms, rounded up, times :data:`_SAFETY`.
    """

    def gamma(n: int, u: float) -> float:
        return n * u / (1 - n * u)

    u = torch.finfo(dtype).eps / 2
    return _SAFETY * (2 * gamma(dim + 2, u) + 8 * u + 2 * gamma(dim + 2, 2.0**-53))


class _Features(NamedTuple):
    """One feature set as the tiles read it."""

    original: Tensor
    """``(n, D)`` the features as given; exact distances are recomputed from them in float64."""
    left: Tensor
    """``(n, D + 2 + pad)`` ``[a, |a|^2, 1, 0...]``, ``a`` the features minus the common centre, in the tile
    dtype; with :meth:`right`, ``left_i . right_j = |a_i - a_j|^2``."""
    err: Tensor
    """``(n,)`` float64: a tile entry differs from the exact squared distance by at most ``err_i + err_j``."""

    @staticmethod
    def build(original: Tensor, centre: Tensor, dtype: torch.dtype) -> _Features:
        n, dim = original.shape
        width = dim + 2 + (-(dim + 2) % 8)  # zero columns up to a multiple of 8: faster products, exact
        left = original.new_zeros((n, width), dtype=dtype)
        sq = original.new_empty(n, dtype=torch.float64)
        for s in range(0, n, _BLOCK):  # float64 centring a block at a time: no (n, D) float64 copy
            centred = original[s : s + _BLOCK].to(torch.float64) - centre
            sq[s : s + _BLOCK] = centred.square().sum(dim=1)
            left[s : s + _BLOCK, :dim] = centred
        left[:, dim], left[:, dim + 1] = sq, 1
        # the absolute term covers products that underflow to subnormal numbers
        tiny = _SAFETY * 4 * (dim + 2) * torch.finfo(dtype).tiny
        return _Features(original, left, _error_coefficient(dim, dtype) * sq + tiny)

    def right(self, cols: slice | Tensor) -> Tensor:
        """``[-2a, 1, |a|^2, 0...]`` for the samples ``cols`` (exact: a sign and a power of 2)."""
        left, dim = self.left[cols], self.original.shape[1]
        right = torch.zeros_like(left)
        torch.mul(left[:, :dim], -2, out=right[:, :dim])
        right[:, dim], right[:, dim + 1] = 1, left[:, dim]
        return right

    @property
    def size(self) -> int:
        return self.left.shape[0]


def _tile(a: _Features, rows: slice | Tensor, b: _Features, cols: slice | Tensor) -> Tensor:
    """Squared distances ``|a_i|^2 + |b_j|^2 - 2 a_i . b_j`` of one tile, in the tile dtype."""
    return a.left[rows] @ b.right(cols).T


def _tiles(a: _Features, b: _Features, *, upper: bool = False) -> Iterator[tuple[slice, slice, Tensor]]:
    """``(rows, cols, tile)`` over the squared distances between ``a`` and ``b``, one tile at a time.

    With ``upper`` (``a`` is ``b``), only the tiles on and above the diagonal. Each tile is written into
    the same buffer, so it is valid until the next one is made.
    """
    buffer = a.left.new_empty(min(_BLOCK, a.size) * min(_BLOCK, b.size))
    for j in range(0, b.size, _BLOCK):
        cols = slice(j, min(j + _BLOCK, b.size))
        right = b.right(cols).T
        for i in range(0, j + 1 if upper else a.size, _BLOCK):
            rows = slice(i, min(i + _BLOCK, a.size))
            yield rows, cols, torch.mm(a.left[rows], right, out=_view(buffer, rows, cols))


def _view(buffer: Tensor, rows: slice, cols: slice) -> Tensor:
    """The first entries of a flat ``buffer`` as a contiguous ``(len(rows), len(cols))`` tile."""
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    return buffer[: shape[0] * shape[1]].view(shape)


def _pairs(mask: Tensor, row_offset: int, col_offset: int) -> tuple[Tensor, Tensor]:
    """The ``(row, column)`` indices of the few true entries of a tile's mask, offset to whole-set indices."""
    rows = mask.any(dim=1).nonzero(as_tuple=True)[0]
    r, c = mask[rows].nonzero(as_tuple=True)
    return rows[r] + row_offset, c + col_offset


def _exact(a: Tensor, rows: Tensor, b: Tensor, cols: Tensor) -> Tensor:
    """float64 ``sum((a_i - b_j)^2)`` for the index pairs ``(rows, cols)``, a bounded number at a time."""
    out = torch.empty(rows.shape[0], dtype=torch.float64, device=a.device)
    step = max(1, _GATHER // a.shape[1])
    for s in range(0, rows.shape[0], step):
        diff = a[rows[s : s + step]].to(torch.float64) - b[cols[s : s + step]].to(torch.float64)
        out[s : s + step] = diff.square_().sum(dim=1)
    return out


def _outward(threshold: Tensor, band: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``threshold -/+ band`` in ``dtype``, rounded down / up: a tile entry below the first is surely below
    ``threshold`` exactly, one at or above the second surely not."""
    low, high = threshold - band, threshold + band
    low_t, high_t = low.to(dtype), high.to(dtype)
    low_t = torch.where(
        low_t.to(torch.float64) > low, torch.nextafter(low_t, low_t.new_tensor(-math.inf)), low_t
    )
    high_t = torch.where(
        high_t.to(torch.float64) < high, torch.nextafter(high_t, high_t.new_tensor(math.inf)), high_t
    )
    return low_t, high_t


# --------------------------------------------------------------------------------- radii


class _Radii:
    """The squared ball radii of one feature set: each known within ``approx -/+ width`` from the tiles,
    and computed exactly (float64, from differences) only for the samples a close comparison involves.

    The tiles on and above the diagonal give every sample's ``k + _SPARE`` nearest others by tile
    distance. With ``E_i >= err_i + err_j`` for every ``j``, a tile entry ``t`` has its exact value in
    ``[t - E_i, t + E_i]``, so the exact ``k``-th lies within ``E_i`` of the tile ``k``-th (``width``).
    """

    def __init__(self, x: _Features, k: int) -> None:
        self.x, self.k = x, k
        self.keep = min(k + _SPARE, x.size - 1)
        nearest, self.index = _nearest_by_tiles(x, self.keep)
        self.nearest = nearest.to(torch.float64)
        self.width = x.err + x.err.max()
        self.approx = self.nearest[:, k - 1]
        self._exact = torch.full_like(self.approx, math.nan)

    def exact(self, rows: Tensor) -> Tensor:
        """The exact squared radii of ``rows``; ``-inf`` for radius 0 (``k + 1`` coincident samples), a
        ball that contains nothing, as in the reference, which compares distances clipped at 0."""
        todo = rows[self._exact[rows].isnan()].unique()
        if todo.numel():
            kth = self._kth(todo)
            self._exact[todo] = torch.where(kth > 0, kth, -math.inf)
        return self._exact[rows]

    def _kth(self, rows: Tensor) -> Tensor:
        """Exact k-th nearest distances of ``rows``: where the tile k-th is more than ``2 E_i`` from its
        neighbours in rank, it is the exact k-th's sample; elsewhere every sample whose exact distance is
        at most the exact k-th lies within ``reach = tile k-th + 2 E_i``, among the kept neighbours where
        they extend beyond that reach, else (rare: many near-equal distances) in the row's tiles, computed
        again."""
        k, n, original = self.k, self.x.size, self.x.original
        values, index, bound = self.nearest[rows], self.index[rows], 2 * self.width[rows]
        kth = values[:, k - 1]
        # a lower bound on the tile distances ranked after the k-th: the next kept one; none when every
        # other sample is kept; unknown (the k-th itself: never clear) when the list ends at the k-th
        if self.keep > k:
            above = values[:, k]
        else:
            above = torch.full_like(kth, math.inf) if self.keep == n - 1 else kth
        below = values[:, k - 2] if k > 1 else torch.full_like(kth, -math.inf)
        clear = (above - kth > bound) & (kth - below > bound)
        out = torch.empty_like(kth)
        out[clear] = _exact(original, rows[clear], original, index[clear, k - 1])
        reach = kth + bound
        complete = (values[:, -1] > reach) | (self.keep == n - 1)
        at, slots = ((values <= reach.unsqueeze(1)) & (complete & ~clear).unsqueeze(1)).nonzero(as_tuple=True)
        pair_rows, pair_cols = rows[at], index[at, slots]
        missing = ~complete
        if bool(missing.any()):
            more_rows, more_cols = _within_reach(self.x, rows[missing], reach[missing])
            pair_rows, pair_cols = torch.cat([pair_rows, more_rows]), torch.cat([pair_cols, more_cols])
        distances = _exact(original, pair_rows, original, pair_cols)
        out[~clear] = _kth_smallest_per_row(pair_rows, distances, k, n)[rows[~clear]]
        return out


def _nearest_by_tiles(x: _Features, keep: int) -> tuple[Tensor, Tensor]:
    """Every sample's ``keep`` smallest tile distances to other samples, ascending, and their indices.

    Only the tiles on and above the diagonal are computed: tile ``(I, J)`` read by rows gives the
    neighbours of block ``I`` among ``J``, read by columns those of ``J`` among ``I``.
    """
    n = x.size
    nearest = torch.full((n, keep), math.inf, dtype=x.left.dtype, device=x.left.device)
    index = torch.zeros((n, keep), dtype=torch.int64, device=x.left.device)

    def merge(rows: slice, values: Tensor, columns: Tensor) -> None:
        values, order = torch.cat([nearest[rows], values], dim=1).topk(keep, dim=1, largest=False)
        nearest[rows], index[rows] = values, torch.cat([index[rows], columns], dim=1).gather(1, order)

    for rows, cols, tile in _tiles(x, x, upper=True):
        if rows == cols:
            tile.fill_diagonal_(math.inf)  # a sample is not its own neighbour
        values, columns = tile.topk(min(keep, tile.shape[1]), dim=1, largest=False)
        merge(rows, values, columns + cols.start)
        if rows != cols:
            values, columns = tile.topk(min(keep, tile.shape[0]), dim=0, largest=False)
            merge(cols, values.T, columns.T + rows.start)
    return nearest, index


def _within_reach(x: _Features, rows: Tensor, reach: Tensor) -> tuple[Tensor, Tensor]:
    """Index pairs ``(i, j)``, ``i`` in ``rows``, ``j != i``, whose tile distance is at most ``reach_i``."""
    found_rows, found_cols = [], []
    for s in range(0, rows.shape[0], _BLOCK):
        chunk, limit = rows[s : s + _BLOCK], reach[s : s + _BLOCK].unsqueeze(1)
        for j in range(0, x.size, _BLOCK):
            cols = slice(j, min(j + _BLOCK, x.size))
            near = _tile(x, chunk, x, cols).to(torch.float64) <= limit
            here = ((chunk >= j) & (chunk < cols.stop)).nonzero(as_tuple=True)[0]
            near[here, chunk[here] - j] = False  # a sample is not its own neighbour
            r, c = _pairs(near, 0, j)
            found_rows.append(chunk[r])
            found_cols.append(c)
    return torch.cat(found_rows), torch.cat(found_cols)


def _kth_smallest_per_row(rows: Tensor, values: Tensor, k: int, n: int) -> Tensor:
    """For each row ``0..n-1``, the ``k``-th smallest of its ``values`` (NaN for rows with fewer)."""
    order = values.argsort()
    rows, values = rows[order], values[order]
    order = rows.sort(stable=True).indices  # grouped by row, ascending values within a row
    values = values[order]
    counts = torch.bincount(rows, minlength=n)
    first = counts.cumsum(0) - counts
    has = counts >= k
    out = torch.full((n,), math.nan, dtype=values.dtype, device=values.device)
    out[has] = values[first[has] + k - 1]
    return out


# --------------------------------------------------------------------------------- real x fake


def _cross_counts(
    real: _Features, real_radii: _Radii, fake: _Features, fake_radii: _Radii
) -> tuple[Tensor, Tensor, Tensor]:
    """Per fake sample the number of real balls containing it; per real sample whether its ball contains a
    fake sample, and whether it lies in some fake ball.

    A tile entry below a radius's lower bound minus the entry's error bound is inside, one at or above
    the radius's upper bound plus the error bound outside; the pairs in between are decided on their exact
    distance and the exact radius.
    """
    dtype, device = real.left.dtype, real.left.device
    ball_low, ball_high = _outward(real_radii.approx, real_radii.width + real.err + fake.err.max(), dtype)
    fake_low, fake_high = _outward(fake_radii.approx, fake_radii.width + fake.err + real.err.max(), dtype)
    inside = torch.zeros(fake.size, dtype=torch.int64, device=device)
    covered = torch.zeros(real.size, dtype=torch.bool, device=device)
    recalled = torch.zeros(real.size, dtype=torch.bool, device=device)
    size = min(_BLOCK, real.size) * min(_BLOCK, fake.size)
    surely_buffer, unsure_buffer = (torch.empty(size, dtype=torch.bool, device=device) for _ in range(2))
    for rows, cols, tile in _tiles(real, fake):
        surely, unsure = _view(surely_buffer, rows, cols), _view(unsure_buffer, rows, cols)

        torch.lt(tile, ball_low[rows].unsqueeze(1), out=surely)
        inside[cols] += surely.sum(dim=0, dtype=torch.int32)
        covered[rows] |= surely.any(dim=1)
        torch.lt(tile, ball_high[rows].unsqueeze(1), out=unsure).bitwise_xor_(surely)
        r, c = _pairs(unsure, rows.start, cols.start)
        if r.numel():
            hit = _exact(real.original, r, fake.original, c) < real_radii.exact(r)
            inside.index_add_(0, c[hit], torch.ones_like(c[hit]))
            covered[r[hit]] = True

        # recall: only the rows not already inside some fake ball (usually few after the first tiles)
        open_rows = (~recalled[rows]).nonzero(as_tuple=True)[0]
        if open_rows.numel() == 0:
            continue
        part = tile[open_rows] if open_rows.numel() < tile.shape[0] else tile
        in_fake_ball = part < fake_low[cols].unsqueeze(0)
        recalled[open_rows + rows.start] = in_fake_ball.any(dim=1)
        r, c = _pairs((part < fake_high[cols].unsqueeze(0)).bitwise_xor_(in_fake_ball), 0, cols.start)
        if r.numel():
            r = open_rows[r] + rows.start
            recalled[r[_exact(real.original, r, fake.original, c) < fake_radii.exact(c)]] = True
    return inside, covered, recalled
