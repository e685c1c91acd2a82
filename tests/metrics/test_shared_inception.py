"""SharedInception: one Inception forward feeds FID and IS exactly as their own image updates would."""

from __future__ import annotations

import warnings

import pytest
import torch

from percep_lightning.backbones import FIDInceptionV3
from percep_lightning.metrics import FrechetInceptionDistance, InceptionScore, SharedInception


@pytest.fixture(scope="module")
def backbone():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return FIDInceptionV3(weights=None)


def test_one_forward_equals_separate_updates(backbone, photos):
    real, fake = photos(6, 32)[:3], photos(6, 32)[3:]
    shared_fid = FrechetInceptionDistance(backbone=backbone)
    shared_is = InceptionScore(backbone=backbone, splits=1)
    shared = SharedInception(backbone)
    shared.update(fake, real=False, metrics=[shared_fid, shared_is], indices=torch.arange(3))
    shared.update(real, real=True, metrics=[shared_fid])

    fid = FrechetInceptionDistance(backbone=backbone)
    fid.update(fake, real=False)
    fid.update(real, real=True)
    inception_score = InceptionScore(backbone=backbone, splits=1)
    inception_score.update(fake, torch.arange(3))

    for name in ("fake_features_sum", "fake_outer_sum", "real_features_sum", "real_num_samples"):
        assert torch.equal(getattr(shared_fid, name), getattr(fid, name)), name
    assert torch.equal(torch.cat(shared_is.logits), torch.cat(inception_score.logits))
    assert shared_fid.update_called and shared_is.update_called


def test_compute_is_refreshed_after_precomputed_updates(backbone):
    metric = InceptionScore(backbone=backbone, splits=1)
    metric.update_logits(torch.randn(4, 1008))
    first = metric.compute()[0]
    metric.update_logits(torch.randn(4, 1008) * 10)
    assert not torch.equal(metric.compute()[0], first)


def test_fid_warns_once_per_compute(backbone):
    metric = FrechetInceptionDistance(backbone=backbone)
    metric.update_features(torch.randn(4, 2048), real=True)
    metric.update_features(torch.randn(3, 2048), real=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric.compute()
    messages = [str(w.message) for w in caught if "FID statistics from" in str(w.message)]
    assert len(messages) == 1 and "4 real and 3 generated" in messages[0]


def test_errors(backbone):
    with pytest.raises(TypeError, match="Expected `backbone` to be an FIDInceptionV3"):
        SharedInception(torch.nn.Identity())
    with pytest.raises(ValueError, match="`quantize`"):
        SharedInception(backbone, quantize="nearest")
    shared = SharedInception(backbone)
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="generated images only: expected `real=False`"):
        shared.update(images, real=True, metrics=[InceptionScore(backbone=backbone)])
    with pytest.raises(TypeError, match="has neither"):
        shared.update(images, real=False, metrics=[torch.nn.Identity()])
