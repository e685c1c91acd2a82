"""InceptionScore: parity with torch-fidelity's ISC on one weights file, process-independent order, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from percep_lightning.backbones import FIDInceptionV3
from percep_lightning.functional.inception_score import inception_score
from percep_lightning.metrics.inception_score import InceptionScore


@pytest.mark.slow
def test_matches_torch_fidelity(inception_weights, photos):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_isc import isc_features_to_metric

    images = photos(10, 40, dtype=torch.uint8)
    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(inception_weights)
    )
    with torch.no_grad():
        (logits,) = extractor(images)
    expected = isc_features_to_metric(logits, splits=10)

    metric = InceptionScore(weights=inception_weights)  # torch-fidelity's defaults: 10 splits, seed 2020
    for chunk in images.split(4):
        metric.update(chunk)
    mean, std = metric.compute()
    assert float(mean) == pytest.approx(expected["inception_score_mean"], rel=1e-4)
    assert float(std) == pytest.approx(expected["inception_score_std"], rel=1e-4, abs=1e-7)

    three = isc_features_to_metric(logits, splits=3)
    metric3 = InceptionScore(backbone=metric.backbone, splits=3)
    for chunk in images.split(4):
        metric3.update(chunk)
    mean3, std3 = metric3.compute()
    assert float(mean3) == pytest.approx(three["inception_score_mean"], rel=1e-4)
    assert float(std3) == pytest.approx(three["inception_score_std"], rel=1e-4, abs=1e-7)


def test_indices_restore_the_dataset_order():
    """Logits added in a process-interleaved order with their indices give the single-process value."""
    logits = torch.randn(11, 1008, generator=torch.Generator().manual_seed(0)) * 3
    single = InceptionScore(backbone=_tiny_backbone(), splits=3)
    single.update_logits(logits)
    interleaved = InceptionScore(backbone=_tiny_backbone(), splits=3)
    order = torch.cat([torch.arange(0, 11, 2), torch.arange(1, 11, 2)])  # rank 0 then rank 1 of 2
    for part in order.split(4):
        interleaved.update_logits(logits[part], indices=part)
    expected = inception_score(logits, splits=3)
    for metric in (single, interleaved):
        mean, std = metric.compute()
        torch.testing.assert_close(mean, expected[0])
        torch.testing.assert_close(std, expected[1])


def test_compute_refreshes_and_reset():
    metric = InceptionScore(backbone=_tiny_backbone(), splits=2)
    metric.update_logits(torch.randn(4, 1008))
    first = metric.compute()[0]
    metric.update_logits(torch.randn(4, 1008) * 10)
    assert not torch.equal(metric.compute()[0], first)
    metric.reset()
    assert metric.logits == [] and metric.indices == []


def test_too_few_images_is_a_clear_error():
    metric = InceptionScore(backbone=_tiny_backbone())
    metric.update_logits(torch.randn(9, 1008))
    with pytest.raises(ValueError, match=r"splits=10 needs at least 10 images .* but got 9"):
        metric.compute()


def test_partial_indices_are_an_error():
    metric = InceptionScore(backbone=_tiny_backbone(), splits=2)
    metric.update_logits(torch.randn(3, 1008), indices=torch.arange(3))
    metric.update_logits(torch.randn(3, 1008))
    with pytest.raises(ValueError, match="`indices` for every image or for none"):
        metric.compute()


def test_bad_arguments():
    with pytest.raises(ValueError, match="`splits` to be >= 1"):
        InceptionScore(backbone=_tiny_backbone(), splits=0)
    with pytest.raises(TypeError, match="`splits` to be an integer"):
        InceptionScore(backbone=_tiny_backbone(), splits=2.5)
    metric = InceptionScore(backbone=_tiny_backbone())
    with pytest.raises(ValueError, match=r"shape \(N, 1008\)"):
        metric.update_logits(torch.randn(3, 1000))
    with pytest.raises(ValueError, match=r"`indices` to have shape \(3,\)"):
        metric.update_logits(torch.randn(3, 1008), indices=torch.arange(4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        metric.update_logits(torch.full((3, 1008), float("nan")))
    with pytest.raises(ValueError, match=r"Expected float `images` to be in \[0, 1\]"):
        metric.update(torch.full((1, 3, 8, 8), 255.0))
    assert list(metric.parameters()) == [] and metric.state_dict() == {}


def test_state_is_logits_only():
    metric = InceptionScore(backbone=_tiny_backbone(), splits=2)
    metric.update_logits(torch.randn(5, 1008, dtype=torch.float64))
    assert [tuple(t.shape) for t in metric.logits] == [(5, 1008)] and metric.logits[0].dtype == torch.float32
    np.testing.assert_equal(metric.higher_is_better, True)


_TINY: list[FIDInceptionV3] = []


def _tiny_backbone() -> FIDInceptionV3:
    if not _TINY:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _TINY.append(FIDInceptionV3(weights=None))
    return _TINY[0]
