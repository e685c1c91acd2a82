"""CMMD and PRDC as metrics on a user's feature extractor (a 64-d stub): equal to their references on the
extractor's features, the roles of real and generated images, and their errors."""

from __future__ import annotations

import numpy as np
import prdc as prdc_package
import pytest
import torch
from _stub_extractor import StubExtractor
from torch import nn

from percep_lightning.metrics import CMMD, PRDC


def _features(images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return StubExtractor()(images)


def _reference_mmd(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """google-research ``cmmd/distance.py``'s estimator written out in float64 numpy (every pair, diagonal
    included)."""
    gamma = 1 / (2 * sigma**2)

    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        squared = -2 * a @ b.T + (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
        return float(np.exp(-gamma * squared).mean())

    return scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y))


@pytest.fixture(scope="module")
def image_sets(photos):
    """40 real crops of photographs and 30 generated ones from other photographs, blurred and darkened."""
    pictures = photos(6, 64)
    generator = torch.Generator().manual_seed(0)
    real = torch.stack([pictures[i % 3, :, y : y + 24, x : x + 24] for i, (y, x) in enumerate(
        torch.randint(0, 40, (40, 2), generator=generator).tolist())])  # fmt: skip
    others = torch.stack([pictures[3 + i % 3, :, y : y + 24, x : x + 24] for i, (y, x) in enumerate(
        torch.randint(0, 40, (30, 2), generator=generator).tolist())])  # fmt: skip
    fake = nn.functional.avg_pool2d(others, 3, stride=1, padding=1).mul(0.8)
    return real, fake


def test_cmmd_equals_the_reference_estimator_on_the_extractor_features(image_sets):
    real, fake = image_sets
    metric = CMMD(StubExtractor())
    for chunk in real.split(7):
        metric.update(chunk, real=True)
    for chunk in fake.split(7):
        metric.update(chunk, real=False)
    expected = _reference_mmd(_features(real).double().numpy(), _features(fake).double().numpy())
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-6)
    assert metric.higher_is_better is False


def test_cmmd_options_reach_the_estimator(image_sets):
    real, fake = image_sets
    metric = CMMD(StubExtractor(), sigma=2.0, scale=10.0)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected = _reference_mmd(_features(real).double().numpy(), _features(fake).double().numpy(), 2.0, 10.0)
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-6)


def test_prdc_equals_the_prdc_package_on_the_extractor_features(image_sets):
    real, fake = image_sets
    for k in (3, 5):
        metric = PRDC(StubExtractor(), k=k)
        for chunk in real.split(9):
            metric.update(chunk, real=True)
        metric.update(fake, real=False)
        got = metric.compute()
        expected = prdc_package.compute_prdc(
            _features(real).double().numpy(), _features(fake).double().numpy(), nearest_k=k
        )
        # counts exact: every value is a count divided by a set size (density also by k)
        assert round(float(got.precision) * 30) == round(expected["precision"] * 30)
        assert round(float(got.recall) * 40) == round(expected["recall"] * 40)
        assert round(float(got.density) * 30 * k) == round(expected["density"] * 30 * k)
        assert round(float(got.coverage) * 40) == round(expected["coverage"] * 40)


def test_real_and_generated_roles_follow_the_real_flag(image_sets):
    """A collapsed generated set (copies of a few real images, slightly perturbed) is faithful but not diverse:
    high precision, low recall and coverage."""
    real, _ = image_sets
    generator = torch.Generator().manual_seed(1)
    collapsed = (
        real[:2].repeat(15, 1, 1, 1) + 0.002 * torch.randn(30, 3, 24, 24, generator=generator)
    ).clamp(0, 1)
    metric = PRDC(StubExtractor(), k=3)
    metric.update(real, real=True)
    metric.update(collapsed, real=False)
    values = metric.compute()
    assert float(values.precision) > 0.9
    assert float(values.recall) < 0.3
    assert float(values.coverage) < 0.3


def test_reset_keeps_the_real_features_when_asked(image_sets):
    real, fake = image_sets
    metric = CMMD(StubExtractor(), reset_real_features=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    first = metric.compute()
    metric.reset()
    metric.update(fake, real=False)
    assert float(metric.compute()) == float(first)


def test_errors(image_sets):
    real, fake = image_sets
    with pytest.raises(ValueError, match="`k` to be >= 1"):
        PRDC(StubExtractor(), k=0)
    with pytest.raises(TypeError, match="`k` to be an integer"):
        PRDC(StubExtractor(), k=2.5)
    with pytest.raises(ValueError, match="`sigma` to be > 0"):
        CMMD(StubExtractor(), sigma=0.0)
    with pytest.raises(TypeError, match="`scale` to be a real number"):
        CMMD(StubExtractor(), scale="big")
    metric = CMMD(StubExtractor())
    metric.update(real, real=True)
    with pytest.raises(ValueError, match="at least 1 generated image"):
        metric.compute()
    small = PRDC(StubExtractor(), k=5)
    small.update(real[:5], real=True)
    small.update(fake[:10], real=False)
    with pytest.raises(ValueError, match="`k`"):
        small.compute()
