"""Tests for percep_lightning.functional.fid: parity with torch-fidelity, torchmetrics and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torchmetrics.image.fid import _compute_fid

from percep_lightning.functional.fid import (
    feature_statistics,
    feature_sums,
    frechet_distance,
    frechet_distance_from_features,
)


def _features(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """Correlated Gaussian features: a random linear mix of white noise plus an offset."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
    return torch.randn(n, dim, generator=g, dtype=torch.float64) @ mix + shift


def _numpy_stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    a = x.numpy()
    return a.mean(axis=0), np.cov(a, rowvar=False)


def _scipy_fid(mu1, sigma1, mu2, sigma2) -> float:
    """The classic pytorch-fid / TTUR formula with scipy.linalg.sqrtm."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


def _nuclear_norm_fid(x1: torch.Tensor, x2: torch.Tensor) -> float:
    """Independent exact route: with S1 = A^T A and S2 = B^T B (A, B centred and scaled features), the
    nonzero eigenvalues of S1 S2 are the squared singular values of A B^T, so tr((S1 S2)^1/2) is the
    nuclear norm of A B^T. Valid for any N, including N < D."""
    a = (x1 - x1.mean(0)) / (x1.shape[0] - 1) ** 0.5
    b = (x2 - x2.mean(0)) / (x2.shape[0] - 1) ** 0.5
    diff = x1.mean(0) - x2.mean(0)
    trace_sqrt = torch.linalg.svdvals(a @ b.T).sum()
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * trace_sqrt)


@pytest.fixture(scope="module")
def two_sets() -> tuple[torch.Tensor, torch.Tensor]:
    return _features(300, 64, seed=0), _features(250, 64, seed=1, shift=0.3)


def test_matches_torch_fidelity_torchmetrics_scipy(two_sets):
    x1, x2 = two_sets
    mu1, sigma1 = _numpy_stats(x1)
    mu2, sigma2 = _numpy_stats(x2)
    ours = frechet_distance(*(torch.from_numpy(a) for a in (mu1, sigma1, mu2, sigma2)))
    assert ours.dtype == torch.float64 and ours.ndim == 0

    fidelity = fid_statistics_to_metric(
        fid_features_to_statistics(x1), fid_features_to_statistics(x2), verbose=False
    )["frechet_inception_distance"]
    tm = _compute_fid(*(torch.from_numpy(a) for a in (mu1, sigma1, mu2, sigma2))).item()
    ref_scipy = _scipy_fid(mu1, sigma1, mu2, sigma2)
    ref_svd = _nuclear_norm_fid(x1, x2)
    for ref in (fidelity, tm, ref_scipy, ref_svd):
        assert ours.item() == pytest.approx(ref, rel=1e-6)
    assert ours.item() > 0.1  # a real difference, not a degenerate comparison


def test_from_features_matches_statistics(two_sets):
    x1, x2 = two_sets
    mu1, sigma1 = _numpy_stats(x1)
    mu2, sigma2 = _numpy_stats(x2)
    expected = _scipy_fid(mu1, sigma1, mu2, sigma2)
    assert frechet_distance_from_features(x1.float(), x2.float()).item() == pytest.approx(expected, rel=1e-5)
    assert frechet_distance_from_features(x1, x2).item() == pytest.approx(expected, rel=1e-9)


def test_symmetric_and_float32_input(two_sets):
    x1, x2 = two_sets
    s1, s2 = (feature_statistics(*feature_sums(x)) for x in (x1, x2))
    forward = frechet_distance(*s1, *s2)
    assert frechet_distance(*s2, *s1).item() == pytest.approx(forward.item(), rel=1e-9)
    single = frechet_distance(*(t.float() for t in (*s1, *s2)))
    assert single.dtype == torch.float64
    assert single.item() == pytest.approx(forward.item(), rel=1e-5)


@pytest.mark.parametrize("n1, n2", [(20, 30), (10, 200), (200, 10)])  # both, first, second singular
def test_fewer_samples_than_dimensions(n1, n2):
    x1, x2 = _features(n1, 64, seed=2), _features(n2, 64, seed=3, shift=0.5)
    with pytest.warns(UserWarning, match="rank-deficient"):
        ours = frechet_distance_from_features(x1, x2)
    assert torch.isfinite(ours) and not ours.is_complex() and ours.item() >= 0
    assert ours.item() == pytest.approx(_nuclear_norm_fid(x1, x2), rel=1e-6)


def test_singular_covariance_takes_eigh_route():
    # Exact zeros on the diagonal make the Cholesky factorisation fail, so the PSD square root is used.
    a = torch.tensor([4.0, 0.0, 1.0, 0.0, 9.0], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 0.0, 0.0, 9.0], dtype=torch.float64)
    mu1 = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    mu2 = mu1.flip(0)
    expected = float(((a.sqrt() - b.sqrt()) ** 2).sum() + ((mu1 - mu2) ** 2).sum())
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    # A common rotation keeps the closed form and makes the matrices non-diagonal.
    ours = frechet_distance(q @ mu1, q @ torch.diag(a) @ q.T, q @ mu2, q @ torch.diag(b) @ q.T)
    assert ours.item() == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)).item() == pytest.approx(
        expected, rel=1e-12
    )


def test_identical_distributions_give_zero():
    x = _features(20, 64, seed=4)  # rank-deficient covariance
    with pytest.warns(UserWarning, match="rank-deficient"):
        mu, sigma = feature_statistics(*feature_sums(x))
    d = frechet_distance(mu, sigma, mu, sigma)
    assert 0 <= d.item() <= 1e-6 * sigma.trace().item()
    full = _features(300, 16, seed=5)
    mu, sigma = feature_statistics(*feature_sums(full))
    assert 0 <= frechet_distance(mu, sigma, mu, sigma).item() <= 1e-10 * sigma.trace().item()


def test_streaming_statistics_match_numpy():
    x = _features(157, 12, seed=6, shift=2.0).float()
    chunks = torch.split(x, [50, 1, 64, 42])
    total, outer, n = feature_sums(chunks[0])
    for chunk in chunks[1:]:
        s, o, m = feature_sums(chunk)
        total, outer, n = total + s, outer + o, n + m
    assert total.dtype == outer.dtype == torch.float64 and n == 157
    mu, sigma = feature_statistics(total, outer, torch.tensor(n))
    a = x.double().numpy()
    np.testing.assert_allclose(mu.numpy(), a.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(a, rowvar=False, ddof=1), rtol=1e-10, atol=1e-12)


def test_sample_count_errors_and_warnings():
    x = torch.randn(1, 4)
    with pytest.raises(ValueError, match="at least 2 images.*got 1"):
        feature_statistics(*feature_sums(x))
    with pytest.raises(ValueError, match="at least 2 images.*got 1"):
        frechet_distance_from_features(x, torch.randn(8, 4))
    with pytest.warns(UserWarning, match=r"3 samples of 4-dimensional.*rank-deficient"):
        feature_statistics(*feature_sums(torch.randn(3, 4)))
    with pytest.raises(TypeError, match="`n` to be an integer"):
        feature_statistics(torch.zeros(4), torch.zeros(4, 4), 3.0)


def test_argument_errors():
    mu, sigma = torch.zeros(3), torch.eye(3)
    with pytest.raises(ValueError, match=r"`mu1` to be 1-D.*\(1, 3\)"):
        frechet_distance(mu[None], sigma, mu, sigma)
    with pytest.raises(ValueError, match=r"`sigma2` to have shape.*\(3, 3\).*got \(3, 4\)"):
        frechet_distance(mu, sigma, mu, torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"same feature dimension.*\(3,\).*\(4,\)"):
        frechet_distance(mu, sigma, torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="`sigma1` to be finite"):
        frechet_distance(mu, sigma * float("nan"), mu, sigma)
    with pytest.raises(TypeError, match="`mu2` to be a torch.Tensor.*ndarray"):
        frechet_distance(mu, sigma, np.zeros(3), sigma)
    with pytest.raises(TypeError, match="`sigma1` to be a floating-point.*int64"):
        frechet_distance(mu, torch.eye(3, dtype=torch.long), mu, sigma)
    with pytest.raises(ValueError, match=r"`features1` to be 2-D.*\(5,\)"):
        frechet_distance_from_features(torch.zeros(5), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"same feature dimension.*\(5, 2\).*\(5, 3\)"):
        frechet_distance_from_features(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match="`features2` to be finite"):
        frechet_distance_from_features(torch.randn(5, 2), torch.full((5, 2), float("inf")))
