"""Fréchet distance between Gaussians fitted to features, and the statistics it is computed from.

The Fréchet Inception Distance (Heusel et al. 2017) compares two sets of image features through the
Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` fitted to them:

.. math::
    d^2 = \\lVert \\mu_1 - \\mu_2 \\rVert^2 + \\operatorname{tr}\\Sigma_1 + \\operatorname{tr}\\Sigma_2
          - 2 \\operatorname{tr}\\big((\\Sigma_1 \\Sigma_2)^{1/2}\\big)

Everything here runs in float64 with ``torch.linalg`` only (no scipy). The trace of the matrix square root
is the sum of the square roots of the eigenvalues of ``sigma1 @ sigma2``; that product is not symmetric,
but it has the same eigenvalues as the symmetric positive semi-definite matrix ``L^T sigma2 L`` where
``sigma1 = L L^T`` (a Cholesky factor, or ``sigma1^{1/2}`` when ``sigma1`` is singular), so a symmetric
eigenvalue solver gives them exactly and several times faster than the general one used by torch-fidelity
and torchmetrics.

The statistics helpers support streaming: a metric keeps the float64 running sums returned by
:func:`feature_sums` (they add up across batches and processes), and :func:`feature_statistics` turns them
into the mean and the unbiased covariance at the end. Reading and writing statistics files lives in
:mod:`percep_lightning.metrics.stats_io`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from percep_lightning.functional.inputs import check_bool, check_int

__all__ = [
    "feature_statistics",
    "feature_sums",
    "fid_infinity",
    "fid_infinity_from_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
]


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Fréchet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    .. math::
        d^2 = \\lVert \\mu_1 - \\mu_2 \\rVert^2 + \\operatorname{tr}\\Sigma_1 + \\operatorname{tr}\\Sigma_2
              - 2 \\sum_i \\sqrt{\\lambda_i(\\Sigma_1 \\Sigma_2)}

    The eigenvalues ``lambda_i`` of ``sigma1 @ sigma2`` are those of the symmetric matrix ``L^T sigma2 L``
    with ``sigma1 = L L^T`` (Cholesky; the eigendecomposition square root ``sigma1^{1/2}`` when ``sigma1``
    is singular, e.g. fitted on fewer samples than dimensions). Eigenvalues below zero, which can only
    come from rounding for positive semi-definite inputs, are clamped to zero before the square root, so
    no complex numbers appear. The exact value is a squared Wasserstein distance and never negative, so
    a result that rounding pushes slightly below zero is returned as ``0``.

    Args:
        mu1: mean of the first set of features, ``(D,)``.
        sigma1: covariance of the first set, ``(D, D)``, symmetric positive semi-definite.
        mu2: mean of the second set, ``(D,)``.
        sigma2: covariance of the second set, ``(D, D)``, symmetric positive semi-definite.

    Returns:
        The distance as a 0-dim float64 tensor, on the inputs' device (on the CPU for MPS inputs, as MPS
        has no float64).

    Raises:
        TypeError: if an argument is not a floating-point tensor.
        ValueError: on wrong or mismatched shapes, inputs on different devices, or NaN/Inf values.

    Shape:
        - ``mu1``, ``mu2``: ``(D,)``
        - ``sigma1``, ``sigma2``: ``(D, D)``
        - Output: ``()``

    Example:
        >>> import torch
        >>> from percep_lightning.functional.fid import frechet_distance
        >>> mu, sigma = torch.zeros(3), torch.eye(3)
        >>> frechet_distance(mu, sigma, mu + 1, 4 * sigma)  # 3 * 1^2 + 3 * (1 - 2)^2
        tensor(6., dtype=torch.float64)
    """
    _check_statistics(mu1, sigma1, "mu1", "sigma1")
    _check_statistics(mu2, sigma2, "mu2", "sigma2")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"Expected `mu1` and `mu2` (and `sigma1`, `sigma2`) to have the same feature dimension, but got "
            f"`mu1` {tuple(mu1.shape)} and `mu2` {tuple(mu2.shape)}."
        )
    devices = {t.device for t in (mu1, sigma1, mu2, sigma2)}
    if len(devices) > 1:
        raise ValueError(
            "Expected `mu1`, `sigma1`, `mu2` and `sigma2` to be on one device, but got "
            f"{mu1.device}, {sigma1.device}, {mu2.device} and {sigma2.device}."
        )
    mu1, sigma1, mu2, sigma2 = (_float64(t) for t in (mu1, sigma1, mu2, sigma2))

    diff = mu1 - mu2
    trace_sqrt = _trace_sqrt_product(sigma1, sigma2)
    distance = diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return distance.clamp(min=0)


def frechet_distance_from_features(features1: Tensor, features2: Tensor) -> Tensor:
    """Fréchet distance between Gaussians fitted to two feature sets (mean and unbiased covariance).

    Statistics are computed in float64 from centred features; see :func:`frechet_distance` for the formula.

    Args:
        features1: the first set, ``(N1, D)`` with ``N1 >= 2``.
        features2: the second set, ``(N2, D)`` with ``N2 >= 2``.

    Returns:
        The distance as a 0-dim float64 tensor.

    Raises:
        TypeError: if an argument is not a floating-point tensor.
        ValueError: on a rank other than 2, different feature dimensions, fewer than 2 rows, or NaN/Inf.

    Warns:
        UserWarning: when a set has fewer rows than dimensions (its covariance is rank-deficient and the
            value is unreliable).

    Shape:
        - ``features1``: ``(N1, D)``; ``features2``: ``(N2, D)``
        - Output: ``()``

    Example:
        >>> import torch
        >>> from percep_lightning.functional.fid import frechet_distance_from_features
        >>> x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
        >>> d = frechet_distance_from_features(x, x + 1)  # same covariance, means 1 apart per dimension
        >>> round(d.item(), 6)
        2.0
    """
    stats = []
    for name, features in (("features1", features1), ("features2", features2)):
        _check_features(features, name)
        x = _float64(features)
        n, dim = x.shape
        _check_sample_count(n, dim, name)
        mu = x.mean(dim=0)
        centred = x - mu
        stats.append((mu, centred.T @ centred / (n - 1)))
    if features1.shape[1] != features2.shape[1]:
        raise ValueError(
            "Expected `features1` and `features2` to have the same feature dimension, but got shapes "
            f"{tuple(features1.shape)} and {tuple(features2.shape)}."
        )
    (mu1, sigma1), (mu2, sigma2) = stats
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def fid_infinity(
    real_features: Tensor,
    fake_features: Tensor,
    *,
    num_points: int = 15,
    min_samples: int = 5000,
    seed: int = 2020,
    paired: bool = False,
) -> Tensor:
    r"""FID extrapolated to infinitely many generated samples (Chong & Forsyth 2020), ``FID_inf``.

    FID is biased upwards by an amount that, to first order, is proportional to ``1/N`` for ``N`` generated
    samples. ``FID_N`` is computed on random subsets of ``N`` samples for ``num_points`` values of ``N``
    evenly spaced from ``min_samples`` to the number of generated samples
    (``numpy.linspace(min_samples, n, num_points).astype(int32)``), a least-squares line
    ``FID_N = FID_inf + slope / N`` is fitted, and its intercept is returned.

    Subsets follow the reference code: one index array ``arange(n)`` is shuffled in place with
    ``numpy.random.RandomState(seed).shuffle`` before each ``N`` and its first ``N`` entries are taken.
    With ``paired=False`` (Chong & Forsyth) only the generated set is subsampled and the real statistics
    come from every real sample; with ``paired=True`` (StyleID's ``art_fid_inf``) both sets are indexed by
    the same subset, which needs sets of equal size.

    Args:
        real_features: ``(N_real, D)`` reference features.
        fake_features: ``(N_fake, D)`` generated features.
        num_points: the number of subset sizes (the references use 15), at least 2.
        min_samples: the smallest subset size (the references use 5000), at least 2 and below ``N_fake``.
        seed: the seed of ``numpy.random.RandomState`` that draws the subsets.
        paired: subsample both sets with the same indices (StyleID) instead of only the generated one.

    Returns:
        ``FID_inf`` as a 0-dim float64 tensor (it may be slightly negative for very close sets).

    Raises:
        TypeError: if the features are not floating-point tensors or an option has the wrong type.
        ValueError: on bad shapes or NaN/Inf, ``num_points < 2``, ``min_samples < 2``, fewer generated
            samples than ``min_samples + 1``, or unequal set sizes with ``paired=True``.

    Example:
        >>> import torch
        >>> from percep_lightning.functional import fid_infinity
        >>> g = torch.Generator().manual_seed(0)
        >>> real, fake = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g) + 0.5
        >>> value = fid_infinity(real, fake, num_points=5, min_samples=100)
        >>> bool(0.5 < value < 1.5), value.dtype  # the squared mean difference is 4 * 0.5 ** 2
        (True, torch.float64)
    """
    for name, features in (("real_features", real_features), ("fake_features", fake_features)):
        _check_features(features, name)
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(
            "Expected `real_features` and `fake_features` to have the same feature dimension, but got shapes "
            f"{tuple(real_features.shape)} and {tuple(fake_features.shape)}."
        )
    check_bool(paired, "paired")
    n = fake_features.shape[0]
    _check_infinity_options(n, num_points, min_samples, seed)
    if paired and real_features.shape[0] != n:
        raise ValueError(
            "Expected `real_features` and `fake_features` to have the same number of samples with "
            f"`paired=True`, but got {real_features.shape[0]} and {n}."
        )
    real = _float64(real_features)
    if paired:
        return _extrapolate_fid(real, _float64(fake_features), num_points, min_samples, seed)
    return _extrapolate_fid(
        _mean_and_covariance(real), _float64(fake_features), num_points, min_samples, seed
    )


def _extrapolate_fid(
    real: Tensor | tuple[Tensor, Tensor], fake: Tensor, num_points: int, min_samples: int, seed: int
) -> Tensor:
    """FID_inf from float64 generated features and either real features (paired) or real ``(mu, sigma)``."""
    n = fake.shape[0]
    sizes = np.linspace(min_samples, n, num_points).astype(np.int32)
    order = np.arange(n)
    rng = np.random.RandomState(int(seed))
    values = []
    for size in sizes:
        rng.shuffle(order)
        subset = torch.from_numpy(order[:size].copy()).to(fake.device)
        mu_fake, sigma_fake = _mean_and_covariance(fake[subset])
        mu_real, sigma_real = real if isinstance(real, tuple) else _mean_and_covariance(real[subset])
        values.append(frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake))
    fids = torch.stack(values)
    inverse = torch.from_numpy(1.0 / sizes.astype(np.float64)).to(fids.device)
    centred = inverse - inverse.mean()
    slope = (centred * (fids - fids.mean())).sum() / (centred * centred).sum()
    return fids.mean() - slope * inverse.mean()


def fid_infinity_from_statistics(
    mu_real: Tensor,
    sigma_real: Tensor,
    fake_features: Tensor,
    *,
    num_points: int = 15,
    min_samples: int = 5000,
    seed: int = 2020,
) -> Tensor:
    """:func:`fid_infinity` (``paired=False``) with the real side given by its mean and covariance.

    This is the form a streaming metric uses: the real set is summarised by its statistics (or loaded from
    a cache), and only the generated features are kept.

    Args:
        mu_real: ``(D,)`` mean of the real features.
        sigma_real: ``(D, D)`` covariance of the real features.
        fake_features: ``(N_fake, D)`` generated features.
        num_points: the number of subset sizes, at least 2.
        min_samples: the smallest subset size, at least 2 and below ``N_fake``.
        seed: the seed of ``numpy.random.RandomState`` that draws the subsets.

    Returns:
        ``FID_inf`` as a 0-dim float64 tensor.

    Raises:
        TypeError, ValueError: as :func:`fid_infinity`.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.fid import fid_infinity_from_statistics
        >>> fake = torch.randn(300, 3, generator=torch.Generator().manual_seed(0))
        >>> value = fid_infinity_from_statistics(torch.zeros(3), torch.eye(3), fake, num_points=4, min_samples=50)
        >>> value.shape, value.dtype
        (torch.Size([]), torch.float64)
    """
    _check_statistics(mu_real, sigma_real, "mu_real", "sigma_real")
    _check_features(fake_features, "fake_features")
    if fake_features.shape[1] != mu_real.shape[0]:
        raise ValueError(
            f"Expected `fake_features` to have {mu_real.shape[0]} features like `mu_real`, but got shape "
            f"{tuple(fake_features.shape)}."
        )
    _check_infinity_options(fake_features.shape[0], num_points, min_samples, seed)
    fake = _float64(fake_features)
    real = (_float64(mu_real).to(fake.device), _float64(sigma_real).to(fake.device))
    return _extrapolate_fid(real, fake, num_points, min_samples, seed)


def _check_infinity_options(n: int, num_points: int, min_samples: int, seed: int) -> None:
    check_int(num_points, "num_points")
    check_int(seed, "seed")
    check_int(min_samples, "min_samples", minimum=2)
    if num_points < 2:
        raise ValueError(f"Expected `num_points` to be >= 2 (a line needs two points), but got {num_points}.")
    if n <= min_samples:
        raise ValueError(
            f"FID-infinity needs at least {min_samples + 1} generated samples (more than `min_samples`="
            f"{min_samples}), but got {n}; add samples or lower `min_samples`."
        )


def _mean_and_covariance(x: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 mean and unbiased covariance (``numpy.cov(x, rowvar=False)``) of the rows of ``x``."""
    mu = x.mean(dim=0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def feature_sums(features: Tensor) -> tuple[Tensor, Tensor, int]:
    """Float64 running sums of a batch of features, to be added up across batches and processes.

    Args:
        features: a batch of features, ``(N, D)``.

    Returns:
        ``(features_sum, outer_sum, n)``: the float64 column sums ``(D,)``, the float64 sum of outer
        products ``X^T X`` ``(D, D)``, and the row count ``N``.

    Raises:
        TypeError: if ``features`` is not a floating-point tensor.
        ValueError: if it is not 2-D or holds NaN/Inf.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.fid import feature_sums
        >>> s, outer, n = feature_sums(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> s, outer, n
        (tensor([4., 6.], dtype=torch.float64), tensor([[10., 14.],
                [14., 20.]], dtype=torch.float64), 2)
    """
    _check_features(features, "features")
    x = _float64(features)
    return x.sum(dim=0), x.T @ x, x.shape[0]


def feature_statistics(features_sum: Tensor, outer_sum: Tensor, n: int | Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance from streaming sums (see :func:`feature_sums`).

    .. math::
        \\mu = \\frac{1}{n} \\sum_i x_i, \\qquad
        \\Sigma = \\frac{\\sum_i x_i x_i^T - n \\mu \\mu^T}{n - 1}

    This equals ``numpy.mean(X, axis=0)`` and ``numpy.cov(X, rowvar=False)``. Keep the sums in float64:
    the subtraction cancels digits when the mean is large compared with the spread.

    Args:
        features_sum: sum of the feature vectors, ``(D,)``.
        outer_sum: sum of their outer products, ``(D, D)``.
        n: number of feature vectors summed (an int or a one-element tensor), at least 2.

    Returns:
        ``(mu, sigma)`` in float64, shapes ``(D,)`` and ``(D, D)``.

    Raises:
        TypeError: if a sum is not a floating-point tensor or ``n`` is not an integer.
        ValueError: if ``n < 2``, on wrong or mismatched shapes, or NaN/Inf sums.

    Warns:
        UserWarning: when ``n < D`` (the covariance is rank-deficient and the FID is unreliable).

    Example:
        >>> import torch
        >>> from percep_lightning.functional.fid import feature_statistics, feature_sums
        >>> mu, sigma = feature_statistics(*feature_sums(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])))
        >>> mu
        tensor([3., 2.], dtype=torch.float64)
        >>> sigma
        tensor([[ 4., -2.],
                [-2.,  4.]], dtype=torch.float64)
    """
    _check_statistics(features_sum, outer_sum, "features_sum", "outer_sum")
    n = _as_count(n)
    dim = features_sum.shape[0]
    _check_sample_count(n, dim, "n")
    total = _float64(features_sum)
    outer = _float64(outer_sum)
    mu = total / n
    sigma = (outer - n * torch.outer(mu, mu)) / (n - 1)
    return mu, sigma


def _trace_sqrt_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """``tr((sigma1 sigma2)^{1/2})`` via the eigenvalues of a symmetric PSD matrix similar to the product.

    With ``sigma = L L^T`` (Cholesky), ``L^T sigma_other L`` is similar to the product. The trace is
    symmetric in the two covariances, so the factor is taken from whichever is positive definite (e.g.
    cached statistics of a large real set beside a small generated one); only when both are singular
    does it fall back to the PSD square root from a full eigendecomposition.
    """
    for factored, other in ((sigma1, sigma2), (sigma2, sigma1)):  # noqa: B007 (`other` is used below)
        factor, info = torch.linalg.cholesky_ex(factored)
        if int(info) == 0:
            break
    else:  # both singular (fewer samples than dimensions on both sides)
        # sigma1 = U diag(l) U^T; only its r numerically non-zero eigenvalues matter, and with
        # factor = U_r diag(l_r)^1/2 (D x r) the remaining eigenproblem is r x r instead of D x D.
        eigenvalues, eigenvectors = torch.linalg.eigh(sigma1)
        tolerance = eigenvalues.abs().max() * sigma1.shape[0] * torch.finfo(sigma1.dtype).eps
        keep = eigenvalues > tolerance
        factor, other = eigenvectors[:, keep] * eigenvalues[keep].sqrt(), sigma2
    product = factor.T @ other @ factor
    product = (product + product.T) / 2
    return torch.linalg.eigvalsh(product).clamp(min=0).sqrt().sum()


def _float64(x: Tensor) -> Tensor:
    """``x`` as float64, moved to the CPU from devices without float64 (MPS)."""
    if x.device.type == "mps":
        x = x.cpu()
    return x.to(torch.float64)


def _check_features(features: Tensor, name: str) -> None:
    _check_float_tensor(features, name)
    if features.ndim != 2:
        raise ValueError(f"Expected `{name}` to be 2-D (N, D), but got shape {tuple(features.shape)}.")
    _check_finite(features, name)


def _check_statistics(mu: Tensor, sigma: Tensor, mu_name: str, sigma_name: str) -> None:
    _check_float_tensor(mu, mu_name)
    _check_float_tensor(sigma, sigma_name)
    if mu.ndim != 1:
        raise ValueError(f"Expected `{mu_name}` to be 1-D (D,), but got shape {tuple(mu.shape)}.")
    dim = mu.shape[0]
    if sigma.shape != (dim, dim):
        raise ValueError(
            f"Expected `{sigma_name}` to have shape (D, D) = {(dim, dim)} to match `{mu_name}` "
            f"{tuple(mu.shape)}, but got {tuple(sigma.shape)}."
        )
    _check_finite(mu, mu_name)
    _check_finite(sigma, sigma_name)


def _check_float_tensor(x: object, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"Expected `{name}` to be a floating-point tensor, but got dtype {x.dtype}.")


def _check_finite(x: Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"Expected `{name}` to be finite, but it contains NaN or Inf values.")


def _as_count(n: int | Tensor) -> int:
    if isinstance(n, Tensor):
        if n.numel() != 1 or n.is_floating_point() or n.is_complex() or n.dtype == torch.bool:
            raise TypeError(f"Expected `n` to be an integer or a one-element integer tensor, but got {n!r}.")
        return int(n.item())
    return check_int(n, "n")


def _check_sample_count(n: int, dim: int, name: str) -> None:
    if n < 2:
        raise ValueError(f"FID needs at least 2 images to estimate a covariance, but got {n} (`{name}`).")
    if n < dim:
        warnings.warn(
            f"FID statistics from {n} samples of {dim}-dimensional features (`{name}`): the covariance is "
            f"rank-deficient (n < D) and the FID value is unreliable; use at least {dim} images.",
            UserWarning,
            stacklevel=3,
        )
