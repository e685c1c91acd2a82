"""DISTSLoss equals the official DISTS_pytorch code (dists-pytorch 0.1) loaded with the same VGG16 file."""

from __future__ import annotations

import filecmp
from importlib import resources

import pytest
import torch
import torch.nn.functional as F
from _dists_reference import DISTS_pt, official_dists, official_weights_file
from _numerics import assert_float32_close

from percep_lightning.backbones.dists_weights import DISTS_CHANNELS, dists_alpha_beta
from percep_lightning.backbones.l2pool_vgg import DISTS_LAYERS, L2Pool2d, L2PoolVGG16
from percep_lightning.backbones.weights import WeightsUnavailableError
from percep_lightning.functional.dists import dists_distance, dists_stage_dissimilarity
from percep_lightning.losses import DISTSLoss

# Float32 round-off accumulates mostly over the trunk's longest reduction (3 x 3 x 512 taps in conv5).
TRUNK_TERMS = 3 * 3 * 512


@pytest.fixture(scope="module")
def vgg16(torchvision_weights):
    return torchvision_weights("vgg16")


@pytest.fixture(scope="module")
def official(vgg16):
    return official_dists(vgg16)


@pytest.fixture(scope="module")
def official64(vgg16):
    return official_dists(vgg16).double()


@pytest.fixture(scope="module")
def pair(photos):
    """Three photographs and three distortions: noise, blur and a different photograph."""
    target = photos(3, 48)
    noisy = (target + 0.2 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    blurred = F.avg_pool2d(target, 5, stride=1, padding=2, count_include_pad=False)
    return torch.cat([noisy[:1], blurred[1:2], target[:1]]), target


def test_alpha_beta_are_the_official_file_normalised():
    path = resources.files("percep_lightning.backbones.dists_weights") / "weights.pt"
    assert filecmp.cmp(str(path), official_weights_file(), shallow=False)
    alpha, beta = dists_alpha_beta()
    assert [a.numel() for a in alpha] == [b.numel() for b in beta] == list(DISTS_CHANNELS)
    total = sum(float(a.double().sum() + b.double().sum()) for a, b in zip(alpha, beta, strict=True))
    assert abs(total - 1) < 1e-6


@pytest.mark.slow
def test_values_equal_the_official_code_on_photographs(official64, vgg16, pair):
    preds, target = pair
    with torch.no_grad():
        expected = official64(preds.double(), target.double())  # float64: the exact value of the formula
    got = DISTSLoss(weights=vgg16, reduction="none")(preds, target)
    assert got.shape == expected.shape == (3,) and got.dtype == torch.float32
    assert_float32_close(got, expected, terms=TRUNK_TERMS)
    # each value to 1e-5 relative (2e-6 measured): summing alpha (1 - S1) + beta (1 - S2) loses no digits
    # to the reference's `1 - sum`, whose own float32 value is ~7e-5 relative from float64 at a 0.001 distance
    assert ((got.double() - expected).abs() / expected).max() <= 1e-5
    assert (expected > 0.01).all()
    # [-1, 1] and [0, 255] inputs are mapped to [0, 1] first
    signed = DISTSLoss(weights=vgg16, input_range=(-1, 1), reduction="sum")(preds * 2 - 1, target * 2 - 1)
    assert_float32_close(signed, expected.sum(), terms=TRUNK_TERMS)
    bytes_ = DISTSLoss(weights=vgg16, input_range=(0, 255), reduction="mean")(preds * 255, target * 255)
    assert_float32_close(bytes_, expected.mean(), terms=TRUNK_TERMS)


@pytest.mark.slow
def test_gradient_equals_the_official_code(official64, vgg16, pair):
    preds, target = pair
    reference = preds.double().clone().requires_grad_(True)
    official64(reference, target.double(), require_grad=True, batch_average=True).backward()
    expected = reference.grad
    # float64: the same mathematics, up to alpha and beta rounded once to float32
    ours64 = preds.double().clone().requires_grad_(True)
    DISTSLoss(weights=vgg16).double()(ours64, target.double()).backward()
    assert ((ours64.grad - expected).norm() / expected.norm()) < 1e-6
    # float32. DISTS' gradient is ill-conditioned where an L2-pooled window is nearly all zero (the slope of
    # sqrt(w x^2 + 1e-12) goes from 0 to 1/2 within 1e-5 of x = 0, where float32 convolutions leave round-off):
    # any float32 implementation is off by 1e-5 to 1e-2 relative depending on the image and on the kernels'
    # summation order (here: the official code 2e-5, ours 2e-5 in the contiguous layout and 2.6e-3
    # channels-last at 64 px; 3.5e-4 for the official code on other photographs). The direction stays exact.
    ours32 = preds.clone().requires_grad_(True)
    DISTSLoss(weights=vgg16)(ours32, target).backward()
    assert ((ours32.grad.double() - expected).norm() / expected.norm()) < 2e-2
    assert F.cosine_similarity(ours32.grad.double().flatten(), expected.flatten(), dim=0) > 0.9999


def test_function_equals_module(vgg16, pair):
    preds, target = pair
    loss = DISTSLoss(weights=vgg16, reduction="none")
    trunk = L2PoolVGG16(vgg16)
    mean, std = loss.mean, loss.std
    with torch.no_grad():
        preds_maps, target_maps = trunk((preds - mean) / std), trunk((target - mean) / std)
    value = dists_distance(
        [preds, *(preds_maps[n] for n in DISTS_LAYERS)],
        [target, *(target_maps[n] for n in DISTS_LAYERS)],
        *dists_alpha_beta(),
    )
    torch.testing.assert_close(loss(preds, target), value, rtol=0, atol=0)


def test_zero_at_equal_inputs_with_finite_gradient(vgg16, pair):
    loss = DISTSLoss(weights=vgg16)
    preds = pair[1].clone()
    preds[:, :, :20] = 0  # dark regions: L2-pooled windows that are exactly zero
    preds.requires_grad_(True)
    value = loss(preds, preds.detach().clone())
    assert value == 0
    value.backward()
    assert torch.isfinite(preds.grad).all()


def test_stage_node_gradcheck_and_equals_its_autograd_formula():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 4, generator=generator, dtype=torch.float64)
    y = (x + 0.3 * torch.rand(x.shape, generator=generator, dtype=torch.float64)).clamp_min(0)
    alpha = torch.rand(3, generator=generator, dtype=torch.float64) / 6
    beta = torch.rand(3, generator=generator, dtype=torch.float64) / 6
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: dists_stage_dissimilarity(a, y, alpha, beta), (x,))
    # the written-out backward equals autograd through the formula (taken when the target requires grad)
    y_grad = y.clone().requires_grad_(True)
    (fused,) = torch.autograd.grad(dists_stage_dissimilarity(x, y, alpha, beta).sum(), x)
    (graph,) = torch.autograd.grad(dists_stage_dissimilarity(x, y_grad, alpha, beta).sum(), x)
    torch.testing.assert_close(fused, graph, rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_loss_gradcheck_float64_on_a_tiny_image(vgg16):
    loss = DISTSLoss(weights=vgg16).double()
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 17, 17, generator=generator, dtype=torch.float64)
    preds = (target + 0.2 * torch.rand(target.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    preds.requires_grad_(True)
    # fast mode: the Jacobian along random directions (a full one takes 2 x 289 forwards of VGG16)
    assert torch.autograd.gradcheck(
        lambda p: loss(p, target), (preds,), eps=1e-7, atol=1e-7, rtol=1e-4, fast_mode=True
    )


def test_l2_pooling_equals_the_official_layer_with_its_gradient():
    x = torch.rand(2, 64, 9, 8, dtype=torch.float64)
    x[:, :, :3] = 0  # windows that are all zero: the square root's steepest point
    official = DISTS_pt.L2pooling(channels=64).double()
    ours = L2Pool2d(64).double()
    torch.testing.assert_close(ours(x), official(x), rtol=0, atol=0)
    cotangent = torch.randn(2, 64, 5, 4, dtype=torch.float64)
    (expected,) = torch.autograd.grad(official(x.requires_grad_(True)), x, cotangent)
    (got,) = torch.autograd.grad(ours(x), x, cotangent)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15)
    small = torch.rand(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(L2Pool2d(2).double(), (small,))


def test_trunk_minimum_size_keeps_relu5_3_at_two_by_two(vgg16):
    trunk = L2PoolVGG16(vgg16)
    assert trunk.min_size == (17, 17)
    with torch.no_grad():
        maps = trunk(torch.zeros(1, 3, 17, 17))
    assert tuple(maps["relu5_3"].shape[-2:]) == (2, 2)
    loss = DISTSLoss(weights=vgg16)
    for shape in ((1, 3, 16, 16), (1, 3, 17, 16)):
        small = torch.rand(shape)
        with pytest.raises(
            ValueError,
            match=rf"Expected `preds` and `target` to be at least 17x17 pixels for DISTS \(relu5_3 of VGG16 "
            rf"at least 2x2\), but got {shape[2]}x{shape[3]}",
        ):
            loss(small, small)


@pytest.mark.slow
def test_frozen_outside_the_module_tree_and_target_builds_no_graph(vgg16, pair):
    loss = DISTSLoss(weights=vgg16).train()
    trunk = loss.trunk
    assert not trunk.training and not any(p.requires_grad for p in trunk.parameters())
    assert list(loss.state_dict()) == [] and list(loss.parameters()) == []
    preds, target = (x.clone().requires_grad_(True) for x in pair)
    loss(preds, target).backward()
    assert target.grad is None and preds.grad is not None
    assert all(p.grad is None for p in trunk.parameters())
    loss.double()
    assert next(trunk.parameters()).dtype == torch.float64 and loss.alpha0.dtype == torch.float64
    assert loss(pair[0][:1, :, :24, :24].double(), pair[1][:1, :, :24, :24].double()).dtype == torch.float64


@pytest.mark.slow
def test_grayscale_is_repeated_and_layouts_agree(vgg16, pair):
    loss = DISTSLoss(weights=vgg16, reduction="none", memory_format="contiguous")
    gray_p, gray_t = pair[0].mean(1, keepdim=True), pair[1].mean(1, keepdim=True)
    torch.testing.assert_close(
        loss(gray_p, gray_t), loss(gray_p.repeat(1, 3, 1, 1), gray_t.repeat(1, 3, 1, 1))
    )
    reference = DISTSLoss(weights=vgg16, reduction="none").double()(*(x.double() for x in pair))
    for fmt in ("contiguous", "channels_last"):
        value = DISTSLoss(weights=vgg16, memory_format=fmt, reduction="none")(*pair)
        assert_float32_close(value, reference, terms=TRUNK_TERMS, msg=fmt)


@pytest.mark.slow
def test_bfloat16_autocast_finite_and_close_to_float32(vgg16, pair):
    # The trunk runs in bfloat16 under autocast; the statistics in float32.
    loss = DISTSLoss(weights=vgg16)
    results = {}
    for enabled in (False, True):
        preds = pair[0].clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            value = loss(preds, pair[1])
        value.backward()
        results[enabled] = value.detach(), preds.grad
    (v32, g32), (v16, g16) = results[False], results[True]
    assert v16.dtype == torch.float32 and torch.isfinite(v16) and torch.isfinite(g16).all()
    assert abs(v16 - v32) / v32 < 2e-2
    assert F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0) > 0.9


def test_default_weights_offline_name_the_file_and_wrong_files_are_refused(torchvision_weights):
    with pytest.raises(
        WeightsUnavailableError, match=r"vgg16-397923af\.pth.*\n.*\n.*\n.*weights download vgg16"
    ):
        DISTSLoss()
    with pytest.raises(RuntimeError, match=r"do not match the official vgg16 format"):
        DISTSLoss(weights=torchvision_weights("alexnet"))


def test_errors(vgg16):
    with pytest.raises(ValueError, match=r"Expected `reduction` to be one of"):
        DISTSLoss(weights=None, reduction="avg")
    with pytest.raises(ValueError, match=r"Expected `input_range` to satisfy low < high, but got \(1, 0\)"):
        DISTSLoss(weights=None, input_range=(1, 0))
    with pytest.raises(ValueError, match=r"Expected `memory_format` to be one of"):
        DISTSLoss(weights=None, memory_format="NHWC")
    loss = DISTSLoss(weights=vgg16)
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(TypeError, match=r"Expected `preds` to be a torch.Tensor, but got ndarray"):
        loss(x.numpy(), x)
    with pytest.raises(
        TypeError, match=r"Expected `target` to be a floating-point tensor, but got dtype torch.uint8"
    ):
        loss(x, (x * 255).byte())
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to have the same shape"):
        loss(x, torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to be 4-D"):
        loss(x[0], x[0])
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to have 1 or 3 channels, but got 4"):
        loss(torch.rand(1, 4, 32, 32), torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"Expected `target` to be finite"):
        loss(x, x / 0)
    with pytest.warns(UserWarning, match=r"far outside the declared input_range \(0.0, 1.0\)"):
        loss(x * 255, x * 255)


def test_function_errors():
    x = [torch.rand(1, 3, 4, 4)]
    w = [torch.ones(3)]
    with pytest.raises(
        ValueError, match=r"Expected as many `preds_features`, `target_features`, `alpha` and `beta`"
    ):
        dists_distance(x, x, w, [])
    with pytest.raises(ValueError, match=r"Expected 4-D feature maps of the same shape"):
        dists_distance(x, [torch.rand(1, 3, 4, 5)], w, w)
    with pytest.raises(
        ValueError, match=r"Expected one `alpha` and one `beta` weight per channel \(3\), but got 2"
    ):
        dists_distance(x, x, [torch.ones(2)], w)
