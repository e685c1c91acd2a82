"""KernelInceptionDistance: torch-fidelity parity through the network, streaming order, reset, 2 processes."""

from __future__ import annotations

import warnings

import pytest
import torch

from percep_lightning.backbones import FIDInceptionV3
from percep_lightning.functional import kernel_inception_distance
from percep_lightning.metrics import KernelInceptionDistance


@pytest.fixture(scope="module")
def backbone(inception_weights):
    return FIDInceptionV3(weights=inception_weights)


@pytest.fixture(scope="module")
def image_sets(photos):
    real = photos(8, 48, dtype=torch.uint8)
    others = photos(16, 48)[8:]
    fake = torch.nn.functional.avg_pool2d(others, 3, stride=1, padding=1).mul(0.9).add(0.05)
    return real, (fake * 255 + 0.5).floor().to(torch.uint8)


def _features(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, 2048, generator=torch.Generator().manual_seed(seed)).abs() + shift


@pytest.mark.slow
def test_images_match_torch_fidelity(backbone, image_sets, inception_weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    real, fake = image_sets
    metric = KernelInceptionDistance(backbone=backbone, subsets=40, subset_size=6)
    for chunk in real.split(3):
        metric.update(chunk, real=True)
    metric.update(fake, real=False)
    mean, std = metric.compute()

    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(inception_weights)
    )
    extractor.feature_extractor_internal_dtype = torch.float64  # float64 reference, as test_inception.py
    extractor = extractor.double()
    with torch.no_grad():
        real_f, fake_f = (extractor(x)[0].double() for x in (real, fake))
    expected = kid_features_to_metric(
        fake_f, real_f, kid_subsets=40, kid_subset_size=6, kid_kernel="poly", kid_kernel_poly_degree=3,
        kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=2020, verbose=False,
    )  # fmt: skip
    # ours runs in float32, the reference in float64: KID inherits the float32 round-off of the features
    assert float(mean) == pytest.approx(expected[KEY_METRIC_KID_MEAN], rel=1e-4)
    assert float(std) == pytest.approx(expected[KEY_METRIC_KID_STD], rel=1e-3)


@pytest.fixture(scope="module")
def random_backbone():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FIDInceptionV3(weights=None)


def test_update_features_equals_functional_and_indices_restore_order(random_backbone):
    real, fake = _features(9, 0), _features(7, 1, shift=0.1)
    expected = kernel_inception_distance(real, fake, subsets=25, subset_size=5)

    in_order = KernelInceptionDistance(backbone=random_backbone, subsets=25, subset_size=5)
    in_order.update_features(real, real=True)
    in_order.update_features(fake, real=False)
    assert in_order.compute() == expected

    shuffled = KernelInceptionDistance(backbone=random_backbone, subsets=25, subset_size=5)
    for side, features in (("real", real), ("fake", fake)):
        perm = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(5))
        for chunk in perm.split(4):
            shuffled.update_features(features[chunk], real=side == "real", indices=chunk)
    assert shuffled.compute() == expected


def test_reset_keeps_real_features_when_asked(random_backbone):
    real, fake = _features(6, 0), _features(6, 1, shift=0.1)
    metric = KernelInceptionDistance(
        backbone=random_backbone, subsets=5, subset_size=4, reset_real_features=False
    )
    metric.update_features(real, real=True)
    metric.update_features(fake, real=False)
    first = metric.compute()
    metric.reset()
    metric.update_features(fake, real=False)
    assert metric.compute() == first
    assert metric.fake_features[0].shape == (6, 2048) and len(metric.fake_features) == 1


def test_errors(random_backbone):
    metric = KernelInceptionDistance(backbone=random_backbone, subsets=5, subset_size=4)
    metric.update_features(_features(3, 0), real=True)
    metric.update_features(_features(1, 1), real=False)
    with pytest.raises(ValueError, match=r"KID needs at least 2 generated samples, but got 1"):
        metric.compute()
    with pytest.raises(ValueError, match=r"Expected `features` to have shape \(N, 2048\), but got \(2, 5\)"):
        metric.update_features(torch.zeros(2, 5), real=True)
    with pytest.raises(TypeError, match=r"Expected `real` to be a bool, but got int 1"):
        metric.update_features(_features(2, 0), real=1)
    with pytest.raises(ValueError, match=r"Expected `indices` to have shape \(2,\), but got \(3,\)"):
        metric.update_features(_features(2, 0), real=True, indices=torch.arange(3))
    with pytest.raises(ValueError, match=r"Expected `subset_size` to be >= 1, but got 0"):
        KernelInceptionDistance(backbone=random_backbone, subset_size=0)
    with pytest.raises(
        ValueError, match=r"Expected `resize` to be one of \('tensorflow', 'pytorch_fid', 'clean'"
    ):
        KernelInceptionDistance(weights=None, resize="area")
    with pytest.raises(TypeError, match=r"Expected `backbone` to be an FIDInceptionV3"):
        KernelInceptionDistance(backbone=torch.nn.Identity())


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    """2 gloo processes, each with a strided share of the features, compute what 1 process computes."""
    import torch.multiprocessing as mp
    from _kid_ddp import worker

    real, fake = _features(9, 0), _features(7, 1, shift=0.1)
    expected = kernel_inception_distance(real, fake, subsets=30, subset_size=5)
    mp.spawn(worker, args=(2, str(tmp_path / "store"), real, fake, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert float(got["mean"]) == pytest.approx(float(expected[0]), rel=1e-6)
        assert float(got["std"]) == pytest.approx(float(expected[1]), rel=1e-6)


def test_autocast_does_not_change_the_features(random_backbone, photos):
    images = photos(2, 32)
    results = []
    for autocast in (False, True):
        metric = KernelInceptionDistance(backbone=random_backbone, subsets=3, subset_size=2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            metric.update(images, real=True)
            metric.update(images.flip(-1), real=False)
        results.append(metric.compute())
    assert results[1] == results[0]
