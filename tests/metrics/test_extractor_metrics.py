"""FrechetDistance and KernelDistance on a user's feature extractor (a 64-d stub): equal to the functional maths
on its features, in one process and two, and the extractor contract's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _stub_extractor import STUB_FEATURES, StubExtractor
from torch import nn

from percep_lightning.backbones import FeatureExtractor, ModuleExtractor, as_extractor
from percep_lightning.functional import cmmd, frechet_distance, kernel_inception_distance, prdc
from percep_lightning.functional.fid import fid_infinity_from_statistics
from percep_lightning.metrics import FrechetDistance, KernelDistance


def _crops(images: torch.Tensor, n: int, side: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, images.shape[0], (n,), generator=generator)
    corners = torch.randint(0, images.shape[-1] - side, (n, 2), generator=generator)
    return torch.stack(
        [images[i, :, y : y + side, x : x + side] for i, (y, x) in zip(picks, corners, strict=True)]
    )


@pytest.fixture(scope="module")
def image_sets(photos):
    """90 real and 70 generated images (more than the 64 feature dimensions): crops of real photographs,
    the generated ones from other photographs, blurred and darkened."""
    pictures = photos(7, 96)
    real = _crops(pictures[:4], 90, 24, seed=0)
    others = _crops(pictures[4:], 70, 24, seed=1)
    fake = nn.functional.avg_pool2d(others, 3, stride=1, padding=1).mul(0.8)
    return real, fake


def _features(images: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """The stub's features in the metric's batches (a float32 matmul's rounding depends on the batch)."""
    with torch.no_grad():
        return torch.cat([StubExtractor()(chunk) for chunk in images.split(batch)])


def _statistics64(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = features.double().numpy()
    return torch.from_numpy(x.mean(0)), torch.from_numpy(np.cov(x, rowvar=False))


def test_frechet_distance_equals_the_functional_form_on_the_extractor_features(image_sets):
    real, fake = image_sets
    metric = FrechetDistance(StubExtractor())
    assert metric.num_features == STUB_FEATURES  # probed: the stub declares no num_features
    for chunk in real.split(4):
        metric.update(chunk, real=True)
    for chunk in fake.split(4):
        metric.update(chunk, real=False)
    expected = frechet_distance(*_statistics64(_features(real)), *_statistics64(_features(fake)))
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-9)


def test_uint8_images_reach_a_float_extractor_in_0_1(image_sets):
    real, fake = image_sets
    to_uint8 = lambda x: (x * 255 + 0.5).floor().to(torch.uint8)  # noqa: E731
    a, b = FrechetDistance(StubExtractor()), FrechetDistance(StubExtractor())
    a.update(to_uint8(real), real=True)
    a.update(to_uint8(fake), real=False)
    b.update(to_uint8(real).float() / 255, real=True)
    b.update(to_uint8(fake).float() / 255, real=False)
    assert float(a.compute()) == float(b.compute())


def test_kernel_distance_equals_the_functional_form(image_sets):
    real, fake = image_sets
    metric = KernelDistance(StubExtractor(), subsets=20, subset_size=20)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected = kernel_inception_distance(_features(real), _features(fake), subsets=20, subset_size=20)
    mean, std = metric.compute()
    assert float(mean) == pytest.approx(float(expected[0]), rel=1e-9)
    assert float(std) == pytest.approx(float(expected[1]), rel=1e-9)
    # the kernel's default gamma is 1 / D of the extractor
    explicit = kernel_inception_distance(
        _features(real), _features(fake), subsets=20, subset_size=20, gamma=1 / STUB_FEATURES
    )
    assert float(mean) == pytest.approx(float(explicit[0]), rel=1e-12)


def test_frechet_distance_infinity_on_the_extractor_features(image_sets):
    real, fake = image_sets
    metric = FrechetDistance(StubExtractor(), infinity=True, infinity_num_points=4, infinity_min_samples=30)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    mu, sigma = _statistics64(_features(real))
    expected = fid_infinity_from_statistics(mu, sigma, _features(fake), num_points=4, min_samples=30)
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-9)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, image_sets):
    """2 gloo processes, each with a strided share of the images, compute what 1 process computes."""
    import torch.multiprocessing as mp
    from _extractor_ddp import worker

    real, fake = image_sets
    mu_r, sigma_r = _statistics64(_features(real))
    expected = {
        "fd": frechet_distance(mu_r, sigma_r, *_statistics64(_features(fake))),
        "fd_inf": fid_infinity_from_statistics(mu_r, sigma_r, _features(fake), num_points=4, min_samples=30),
        "kd": kernel_inception_distance(_features(real), _features(fake), subsets=20, subset_size=20)[0],
        "cmmd": cmmd(_features(real), _features(fake)),
        "prdc": prdc(real_features=_features(real), fake_features=_features(fake), k=3),
    }
    mp.spawn(worker, args=(2, str(tmp_path / "store"), real, fake, str(tmp_path)), nprocs=2, join=True)
    # The gathered float64 sums add the same terms in another order; the FD-infinity fit amplifies that.
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert float(got["fd"]) == pytest.approx(float(expected["fd"]), rel=1e-9)
        assert float(got["fd_inf"]) == pytest.approx(float(expected["fd_inf"]), rel=1e-7)
        assert float(got["kd"][0]) == pytest.approx(float(expected["kd"]), rel=1e-9)
        # every feature is gathered once, in dataset order: the whole-set computations are the same
        assert float(got["cmmd"]) == pytest.approx(float(expected["cmmd"]), rel=1e-12)
        assert [float(v) for v in got["prdc"]] == [float(v) for v in expected["prdc"]]


class _Declared(nn.Module):
    """A module that declares its feature size (no probe run)."""

    num_features = 5

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        return images.mean(dim=(2, 3)).repeat(1, 2)[:, :5]


def test_the_feature_size_comes_from_the_argument_the_attribute_or_one_probe():
    declared = _Declared()
    assert ModuleExtractor(declared).num_features == 5 and declared.calls == 0
    assert ModuleExtractor(nn.Flatten(), num_features=12).num_features == 12
    probed = ModuleExtractor(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()))
    assert probed.num_features == 12


def test_the_contract_is_recognised_and_wrapped():
    wrapped = as_extractor(StubExtractor())
    assert isinstance(wrapped, FeatureExtractor) and wrapped.input_format == "float"
    assert as_extractor(wrapped) is wrapped
    assert wrapped.identity == ModuleExtractor(StubExtractor()).identity  # same weights, same identity
    assert wrapped.identity != ModuleExtractor(StubExtractor(seed=1)).identity
    assert not any(p.requires_grad for p in wrapped.parameters())
    metric = FrechetDistance(wrapped)
    assert metric.extractor is wrapped
    assert list(metric.parameters()) == [] and not any("mix" in key for key in metric.state_dict())


def test_extractor_errors():
    with pytest.raises(TypeError, match="Expected `extractor` to be an nn.Module mapping images"):
        FrechetDistance(lambda x: x)
    with pytest.raises(ValueError, match=r"to return \(N, D\) features, but a \(1, 3, 224, 224\) image gave"):
        KernelDistance(nn.Identity())
    with pytest.raises(TypeError, match="Expected `num_features` to be an integer"):
        ModuleExtractor(nn.Flatten(), num_features=2.0)
    with pytest.raises(ValueError, match="Expected `input_format` to be one of"):
        ModuleExtractor(nn.Flatten(), num_features=2, input_format="int")
    metric = FrechetDistance(ModuleExtractor(nn.Flatten(), num_features=7))
    with pytest.raises(ValueError, match=r"to return features of shape \(2, 7\), but got \(2, 48\)"):
        metric.update(torch.rand(2, 3, 4, 4), real=True)
    with pytest.raises(ValueError, match=r"Expected `features` to have shape \(N, 64\)"):
        FrechetDistance(StubExtractor()).update_features(torch.zeros(3, 2048), real=True)
