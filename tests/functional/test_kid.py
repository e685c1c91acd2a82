"""kernel_inception_distance equals torch-fidelity's kid on the same features, seed and subsets."""

from __future__ import annotations

import pytest
import torch

from percep_lightning.backbones import FIDInceptionV3
from percep_lightning.functional import kernel_inception_distance


def _torch_fidelity_kid(real, fake, subsets, subset_size, seed=2020, **kernel):
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    out = kid_features_to_metric(
        fake.double(),  # torch-fidelity's input 1 is the generated set
        real.double(),
        kid_subsets=subsets,
        kid_subset_size=subset_size,
        kid_kernel="poly",
        kid_kernel_poly_degree=kernel.get("degree", 3),
        kid_kernel_poly_gamma=kernel.get("gamma"),
        kid_kernel_poly_coef0=kernel.get("coef0", 1),
        rng_seed=seed,
        verbose=False,
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


@pytest.fixture(scope="module")
def features(inception_weights, photos):
    """Pool3 features of 12 real photographs and of 10 blurred, brightened other photographs."""
    net = FIDInceptionV3(weights=inception_weights)
    real = photos(12, 64, dtype=torch.uint8)
    others = photos(22, 64)[12:]
    fake = torch.nn.functional.avg_pool2d(others, 3, stride=1, padding=1).mul(0.8).add(0.1)
    with torch.inference_mode():
        return net(real).pool3, net((fake * 255).round().to(torch.uint8)).pool3


@pytest.mark.parametrize(
    ("subsets", "subset_size"),
    [(50, 8), (1, 6)],  # many subsets: full-kernel sums; one subset: per-subset kernels
)
def test_matches_torch_fidelity(features, subsets, subset_size):
    real, fake = features
    mean, std = kernel_inception_distance(real, fake, subsets=subsets, subset_size=subset_size)
    expected_mean, expected_std = _torch_fidelity_kid(real, fake, subsets, subset_size)
    assert mean.dtype == torch.float64
    assert abs(expected_mean) > 1e-4  # the sets differ: not a trivial zero
    assert float(mean) == pytest.approx(expected_mean, rel=1e-6)
    assert float(std) == pytest.approx(expected_std, rel=1e-6, abs=1e-12)


def test_kernel_options_and_seed(features):
    real, fake = features
    kernel = {"degree": 2, "gamma": 0.01, "coef0": 0.5}
    mean, std = kernel_inception_distance(real, fake, subsets=20, subset_size=7, seed=3, **kernel)
    expected = _torch_fidelity_kid(real, fake, 20, 7, seed=3, **kernel)
    assert (float(mean), float(std)) == pytest.approx(expected, rel=1e-6)


def test_two_paths_agree(features):
    """The full-kernel and the per-subset sums give the same value (float64, independent routes)."""
    from percep_lightning.functional import kid

    real, fake = features
    x, y = fake.double(), real.double()
    idx_x = torch.stack(
        [torch.randperm(10, generator=torch.Generator().manual_seed(i))[:6] for i in range(5)]
    )
    idx_y = torch.stack(
        [torch.randperm(12, generator=torch.Generator().manual_seed(9 + i))[:6] for i in range(5)]
    )

    def kernel(a, b):
        return (a @ b.transpose(-1, -2) / 2048 + 1) ** 3

    full = kid._subset_sums_from_full_kernels(x, y, idx_x, idx_y, kernel)
    per = kid._subset_sums_per_subset(x, y, idx_x, idx_y, kernel)
    for a, b in zip(full, per, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_subset_larger_than_sets_uses_all_samples_with_a_warning(features):
    real, fake = features
    with pytest.warns(
        UserWarning, match=r"`subset_size`=1000 is larger than the sets \(12 real, 10 generated"
    ):
        mean, std = kernel_inception_distance(real, fake, subsets=5, subset_size=1000)
    expected = _torch_fidelity_kid(real, fake, 5, 10)
    assert (float(mean), float(std)) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_errors(features):
    real, fake = features
    with pytest.raises(ValueError, match=r"KID needs at least 2 real samples, but got 1"):
        kernel_inception_distance(real[:1], fake)
    with pytest.raises(ValueError, match=r"at least 2 generated samples, but got 0"):
        kernel_inception_distance(real, fake[:0])
    with pytest.raises(ValueError, match=r"same feature dimension.*\(12, 2048\) and \(10, 16\)"):
        kernel_inception_distance(real, fake[:, :16])
    with pytest.raises(ValueError, match=r"Expected `subsets` to be >= 1, but got 0"):
        kernel_inception_distance(real, fake, subsets=0)
    with pytest.raises(TypeError, match=r"Expected `subset_size` to be an integer, but got float 2.5"):
        kernel_inception_distance(real, fake, subset_size=2.5)
    with pytest.raises(TypeError, match=r"Expected `real_features` to be a floating-point tensor"):
        kernel_inception_distance(real.long(), fake)
    with pytest.raises(ValueError, match=r"Expected `fake_features` to be finite"):
        kernel_inception_distance(real, fake * float("nan"))


def test_float64_maths_under_autocast(features):
    real, fake = features
    expected = kernel_inception_distance(real, fake, subsets=10, subset_size=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = kernel_inception_distance(real, fake, subsets=10, subset_size=6)
    assert got == expected
