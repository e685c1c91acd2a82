"""fid_infinity equals the reference fit (StyleID's / Chong & Forsyth's loop) written out with numpy and scipy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import linalg

from percep_lightning.functional import fid_infinity
from percep_lightning.functional.fid import fid_infinity_from_statistics


def _reference_frechet(mu1, sigma1, mu2, sigma2):
    """StyleID's compute_frechet_distance (scipy sqrtm)."""
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def _reference_fid_infinity(real, fake, num_points, min_samples, seed, paired):
    """The reference loop with a seeded RandomState in place of the global ``np.random.shuffle``."""
    rng = np.random.RandomState(seed)
    idcs = np.arange(fake.shape[0])
    batches = np.linspace(start=min_samples, stop=fake.shape[0], num=num_points).astype("int32")
    fids = []
    for batch in batches:
        rng.shuffle(idcs)
        sub_fake = fake[idcs[:batch]]
        sub_real = real[idcs[:batch]] if paired else real
        fids.append(
            _reference_frechet(
                np.mean(sub_real, axis=0), np.cov(sub_real, rowvar=False),
                np.mean(sub_fake, axis=0), np.cov(sub_fake, rowvar=False),
            )
        )  # fmt: skip
    slope, intercept = np.polyfit(1 / batches, np.array(fids), 1)  # least squares line, as LinearRegression
    return intercept


@pytest.fixture(scope="module")
def patch_features(photos):
    """16-d features of real photographs: 4x4 grey thumbnails of random 32x32 crops (well conditioned)."""
    images = photos(7, 128).mean(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(0)

    def crops(n, offset):
        out = []
        for _ in range(n):
            i = int(torch.randint(len(images), (1,), generator=g))
            top, left = (int(v) for v in torch.randint(0, 96, (2,), generator=g))
            crop = images[i : i + 1, :, top : top + 32, left : left + 32] + offset
            out.append(torch.nn.functional.adaptive_avg_pool2d(crop, 4).flatten())
        return torch.stack(out).double()

    return crops(300, 0.0), crops(300, 0.05)


@pytest.mark.parametrize("paired", [False, True])
def test_matches_the_reference_fit(patch_features, paired):
    real, fake = patch_features
    got = fid_infinity(real, fake, num_points=6, min_samples=100, seed=7, paired=paired)
    expected = _reference_fid_infinity(real.numpy(), fake.numpy(), 6, 100, 7, paired)
    assert got.dtype == torch.float64
    assert abs(expected) > 1e-4
    assert float(got) == pytest.approx(expected, rel=1e-8)


def test_from_statistics_equals_unpaired(patch_features):
    real, fake = patch_features
    mu = real.mean(dim=0)
    sigma = torch.from_numpy(np.cov(real.numpy(), rowvar=False))
    got = fid_infinity_from_statistics(mu, sigma, fake.float(), num_points=4, min_samples=50)
    expected = fid_infinity(real, fake.float(), num_points=4, min_samples=50)
    assert float(got) == pytest.approx(float(expected), rel=1e-10)


def test_errors(patch_features):
    real, fake = patch_features
    with pytest.raises(ValueError, match=r"FID-infinity needs at least 301 generated samples .*but got 300"):
        fid_infinity(real, fake, min_samples=300)
    with pytest.raises(ValueError, match=r"Expected `num_points` to be >= 2 .* but got 1"):
        fid_infinity(real, fake, num_points=1, min_samples=10)
    with pytest.raises(ValueError, match=r"same number of samples with `paired=True`, but got 200 and 300"):
        fid_infinity(real[:200], fake, min_samples=10, paired=True)
    with pytest.raises(ValueError, match=r"same feature dimension"):
        fid_infinity(real[:, :4], fake, min_samples=10)
    with pytest.raises(TypeError, match=r"Expected `min_samples` to be an integer, but got float"):
        fid_infinity(real, fake, min_samples=10.0)


def test_float64_maths_under_autocast(patch_features):
    real, fake = (t.float() for t in patch_features)
    expected = fid_infinity(real, fake, num_points=3, min_samples=100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fid_infinity(real, fake, num_points=3, min_samples=100)
    assert got == expected
