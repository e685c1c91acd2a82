"""FrechetInceptionDistance(infinity=True): FID-infinity over the streamed real statistics and kept features."""

from __future__ import annotations

import warnings

import pytest
import torch

from percep_lightning.backbones import FIDInceptionV3
from percep_lightning.functional.fid import feature_statistics, feature_sums, fid_infinity_from_statistics
from percep_lightning.metrics import FrechetInceptionDistance

pytestmark = pytest.mark.filterwarnings("ignore:FID statistics from .* samples:UserWarning")


@pytest.fixture(scope="module")
def random_backbone():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FIDInceptionV3(weights=None)


def _features(n, seed, shift=0.0):
    return torch.randn(n, 2048, generator=torch.Generator().manual_seed(seed)).abs() + shift


@pytest.mark.slow  # 2048-d eigendecompositions
def test_infinity_equals_functional_in_dataset_order(random_backbone):
    real, fake = _features(12, 0), _features(20, 1, 0.2)
    mu, sigma = feature_statistics(*feature_sums(real))
    expected = fid_infinity_from_statistics(mu, sigma, fake, num_points=2, min_samples=8)

    metric = FrechetInceptionDistance(
        backbone=random_backbone, infinity=True, infinity_num_points=2, infinity_min_samples=8
    )
    metric.update_features(real, real=True)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(3))
    for chunk in perm.split(6):
        metric.update_features(fake[chunk], real=False, indices=chunk)
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-10)


def test_infinity_needs_more_than_min_samples(random_backbone):
    metric = FrechetInceptionDistance(backbone=random_backbone, infinity=True, infinity_min_samples=8)
    metric.update_features(_features(4, 0), real=True)
    metric.update_features(_features(8, 1), real=False)
    with pytest.raises(ValueError, match=r"FID-infinity needs at least 9 generated samples .*but got 8"):
        metric.compute()
    with pytest.raises(TypeError, match=r"Expected `infinity` to be a bool, but got str"):
        FrechetInceptionDistance(backbone=random_backbone, infinity="yes")
    with pytest.raises(ValueError, match=r"Expected `infinity_num_points` to be >= 2, but got 1"):
        FrechetInceptionDistance(backbone=random_backbone, infinity=True, infinity_num_points=1)
