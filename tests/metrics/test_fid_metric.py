"""FrechetInceptionDistance: parity with torchmetrics and torch-fidelity on one weights file, state, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _inception_reference import INCEPTION_TERMS, torch_fidelity_float64
from _numerics import assert_float32_close
from _stub_extractor import STUB_FEATURES as D
from _stub_extractor import StubExtractor

from percep_lightning.backbones import FIDInceptionV3, InceptionFeatures
from percep_lightning.metrics import FrechetDistance
from percep_lightning.metrics.fid import FrechetInceptionDistance

pytestmark = pytest.mark.filterwarnings("ignore:F?I?D statistics from .* samples:UserWarning")


@pytest.fixture(scope="module")
def backbone(inception_weights):
    return FIDInceptionV3(weights=inception_weights)


@pytest.fixture(scope="module")
def image_sets(photos):
    """8 real and 8 generated uint8 images: photographs and blurred, shifted copies of others."""
    real = photos(8, 48, dtype=torch.uint8)
    others = photos(16, 48, dtype=torch.float32)[8:]
    fake = torch.nn.functional.avg_pool2d(others, 3, stride=1, padding=1).mul(0.9).add(0.05)
    return real, (fake * 255 + 0.5).floor().to(torch.uint8)


@pytest.fixture(scope="module")
def ours(backbone, image_sets):
    real, fake = image_sets
    metric = FrechetInceptionDistance(backbone=backbone)
    for chunk in real.split(3):  # uneven batches: the statistics stream
        metric.update(chunk, real=True)
    metric.update(fake, real=False)
    return metric


@pytest.mark.slow
def test_matches_torch_fidelity(ours, image_sets, inception_weights):
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    extractor = torch_fidelity_float64(inception_weights, ["2048"])
    with torch.no_grad():
        stats = [fid_features_to_statistics(extractor(x)[0].double()) for x in image_sets]
    expected = fid_statistics_to_metric(stats[0], stats[1], verbose=False)["frechet_inception_distance"]
    mu, sigma, n = ours.real_statistics()
    assert n == 8
    # Our features are float32 (float64 statistics): the covariance inherits their round-off.
    assert_float32_close(mu, torch.from_numpy(stats[0]["mu"]), terms=INCEPTION_TERMS)
    assert_float32_close(sigma, torch.from_numpy(stats[0]["sigma"]), terms=INCEPTION_TERMS)
    assert float(ours.compute()) == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_matches_torchmetrics(ours, image_sets, inception_weights):
    from torchmetrics.image.fid import FrechetInceptionDistance as TMFrechetInceptionDistance

    reference = TMFrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=str(inception_weights), antialias=False
    )
    reference.set_dtype(torch.float64)
    real, fake = image_sets
    reference.update(real, real=True)
    reference.update(fake, real=False)
    assert float(ours.compute()) == pytest.approx(float(reference.compute()), rel=1e-4)


@pytest.fixture
def spy_backbone(monkeypatch):
    """The shared random backbone with its forward replaced by a recorder of the pixels it receives."""
    backbone = _tiny_backbone()
    received = []

    def forward(images):
        received.append(images)
        return InceptionFeatures(torch.zeros(images.shape[0], 2048), torch.zeros(images.shape[0], 1008))

    monkeypatch.setattr(backbone, "forward", forward)
    return backbone, received


def test_float_input_quantisation(spy_backbone):
    """Float input reaches the network as documented: "round" is floor(255 x + 0.5), "truncate" (255 x).byte()."""
    backbone, received = spy_backbone
    x = torch.tensor([0.0, 0.5 / 255, 1.49 / 255, 0.3, 0.999, 1.0]).view(1, 1, 2, 3).expand(2, 3, 2, 3)
    FrechetInceptionDistance(backbone=backbone).update(x, real=True)
    FrechetInceptionDistance(backbone=backbone, quantize="truncate").update(x, real=False)
    uint8 = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    FrechetInceptionDistance(backbone=backbone, quantize="truncate").update(uint8, real=True)
    assert all(r.dtype == torch.uint8 for r in received)
    assert received[0][0, 0].flatten().tolist() == [0, 1, 1, 77, 255, 255]
    assert received[1][0, 0].flatten().tolist() == [0, 0, 1, 76, 254, 255]
    assert torch.equal(received[2], uint8)  # uint8 input is never re-quantised


def test_grey_images_are_repeated(spy_backbone):
    backbone, received = spy_backbone
    grey = torch.randint(0, 256, (2, 1, 5, 5), dtype=torch.uint8)
    FrechetInceptionDistance(backbone=backbone).update(grey, real=True)
    assert torch.equal(received[0], grey.expand(-1, 3, -1, -1))


def _stub_metric(**kwargs) -> FrechetDistance:
    """The same streaming state logic as FID, on the 64-d stub extractor (a 64x64 eigendecomposition)."""
    return FrechetDistance(StubExtractor(), **kwargs)


def test_streaming_statistics_equal_batch_statistics():
    """Sums over uneven update batches give numpy's mean and n-1 covariance, in float64."""
    metric = _stub_metric()
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(40, D, generator=generator, dtype=torch.float64) + 3
    for chunk in real.split(7):
        metric.update_features(chunk.float(), real=True)
    mu, sigma, n = metric.real_statistics()
    assert n == 40 and mu.dtype == sigma.dtype == torch.float64
    x = real.float().double().numpy()
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


def test_fixed_real_statistics_and_reset():
    metric = _stub_metric(reset_real_features=False)
    real, fake = torch.randn(5, D, dtype=torch.float64), torch.randn(4, D, dtype=torch.float64)
    metric.update_features(real, real=True)
    metric.update_features(fake, real=False)
    value = metric.compute()
    mu, sigma, n = metric.real_statistics()
    metric.reset()  # keeps the real sums
    assert int(metric.real_num_samples) == 5 and int(metric.fake_num_samples) == 0
    metric.update_features(fake, real=False)
    torch.testing.assert_close(metric.compute(), value)

    fixed = _stub_metric()
    fixed.set_real_statistics(mu, sigma, n)
    fixed.update_features(fake, real=False)
    torch.testing.assert_close(fixed.compute(), value)
    fixed.reset()
    assert fixed.has_fixed_real_statistics  # survives reset
    with pytest.raises(RuntimeError, match="Real statistics were fixed"):
        fixed.update_features(real, real=True)
    fixed.clear_real_statistics()
    fixed.update_features(fake, real=False)
    with pytest.raises(ValueError, match="at least 2 real"):
        fixed.compute()
    with pytest.raises(ValueError, match=r"Expected `mu` of shape \(64,\)"):
        fixed.set_real_statistics(mu[:10], sigma, n)
    with pytest.raises(ValueError, match="`num_samples` to be >= 2"):
        fixed.set_real_statistics(mu, sigma, 1)


def test_compute_refreshes_after_update_features():
    metric = _stub_metric()
    metric.update_features(torch.randn(3, D), real=True)
    metric.update_features(torch.randn(3, D), real=False)
    first = metric.compute()
    metric.update_features(torch.randn(3, D) + 5, real=False)
    assert not torch.equal(metric.compute(), first)


def test_backbone_not_in_state_dict_and_stays_float32():
    metric = FrechetInceptionDistance(backbone=_tiny_backbone())
    assert not any(k.startswith(("Conv2d", "Mixed", "fc")) for k in metric.state_dict())
    assert list(metric.parameters()) == []
    metric.half()
    metric.to(torch.float16)
    assert next(metric.backbone.parameters()).dtype == torch.float32
    assert metric.real_outer_sum.dtype == torch.float64


def test_too_few_images_is_a_clear_error():
    metric = FrechetInceptionDistance(backbone=_tiny_backbone())
    metric.update_features(torch.randn(3, 2048), real=True)
    metric.update_features(torch.randn(1, 2048), real=False)
    with pytest.raises(ValueError, match="FID needs at least 2 generated images.*got 1"):
        metric.compute()
    empty = FrechetInceptionDistance(backbone=_tiny_backbone())
    with (
        pytest.warns(UserWarning, match="before the ``update``"),
        pytest.raises(ValueError, match="at least 2 real"),
    ):
        empty.compute()


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (
            torch.rand(2, 3, 8, 8) * 2,
            ValueError,
            r"Expected float `images` to be in \[0, 1\], but got values in",
        ),
        (torch.full((2, 3, 8, 8), -0.5), ValueError, r"to be in \[0, 1\]"),
        (torch.full((2, 3, 8, 8), float("nan")), ValueError, "NaN or Inf"),
        (
            torch.zeros(2, 8, 8, dtype=torch.uint8),
            ValueError,
            r"shape \(N, 3, H, W\) or \(N, 1, H, W\), but got \(2, 8, 8\)",
        ),
        (torch.zeros(2, 4, 8, 8, dtype=torch.uint8), ValueError, r"but got \(2, 4, 8, 8\)"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.int64), TypeError, "uint8 in \\[0, 255\\] or floating point"),
        (np.zeros((2, 3, 8, 8)), TypeError, "torch.Tensor"),
    ],
)
def test_bad_images(images, error, match):
    metric = FrechetInceptionDistance(backbone=_tiny_backbone())
    with pytest.raises(error, match=match):
        metric.update(images, real=True)


def test_bad_arguments():
    with pytest.raises(TypeError, match="Expected `real` to be a bool"):
        FrechetInceptionDistance(backbone=_tiny_backbone()).update(torch.zeros(2, 3, 8, 8), real=1)
    with pytest.raises(ValueError, match="Expected `quantize` to be one of"):
        FrechetInceptionDistance(backbone=_tiny_backbone(), quantize="nearest")
    with pytest.raises(TypeError, match="Expected `backbone` to be an FIDInceptionV3"):
        FrechetInceptionDistance(backbone=torch.nn.Identity())
    with pytest.raises(ValueError, match=r"shape \(N, 2048\)"):
        FrechetInceptionDistance(backbone=_tiny_backbone()).update_features(torch.zeros(2, 64), real=True)


_TINY: list[FIDInceptionV3] = []


def _tiny_backbone() -> FIDInceptionV3:
    """A randomly initialised backbone for tests that never run it (built once)."""
    if not _TINY:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _TINY.append(FIDInceptionV3(weights=None))
    return _TINY[0]


def _two_identical_processes(tensor, group=None):
    """A gather as two processes holding the same state would return it."""
    return [tensor.clone(), tensor.clone()]


def test_real_statistics_inside_a_callers_sync_context():
    """With ``sync_on_compute=False`` the caller synchronises once; real_statistics() must not unsync early."""
    metric = _stub_metric(
        sync_on_compute=False,
        dist_sync_fn=_two_identical_processes,
        distributed_available_fn=lambda: True,
    )
    metric.update_features(torch.randn(3, D, dtype=torch.float64), real=True)
    metric.update_features(torch.randn(4, D, dtype=torch.float64), real=False)
    with metric.sync_context(dist_sync_fn=metric.dist_sync_fn):
        _, _, n = metric.real_statistics()
        assert n == 6 and int(metric.fake_num_samples) == 8  # still the gathered states
        metric.compute()
    assert int(metric.real_num_samples) == 3 and int(metric.fake_num_samples) == 4  # local states restored
