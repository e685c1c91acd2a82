"""LPIPSLoss equals the lpips package (0.1.4, v0.1) loaded with the same trunk weights."""

from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from _numerics import assert_float32_close

from percep_lightning.losses.lpips import LPIPS_NETS, LPIPSLoss

lpips = pytest.importorskip("lpips")

# End index (exclusive) of each of the lpips package's slices of torchvision's `features`.
_SLICE_ENDS = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30), "squeeze": (2, 5, 8, 10, 11, 12, 13)}


def _package_lpips(net, path, spatial=False):
    """lpips.LPIPS with the v0.1 lin weights and the trunk loaded from the torchvision file at ``path``."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):  # its prints, torchvision's warnings
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, spatial=spatial)
    ends = _SLICE_ENDS[net]
    state = {}
    for key, value in torch.load(path, weights_only=True).items():
        if key.startswith("features."):
            index, rest = key.split(".", 2)[1:]
            k = next(s for s, end in enumerate(ends) if int(index) < end)
            state[f"slice{k + 1}.{index}.{rest}"] = value
    model.net.load_state_dict(state, strict=True)
    return model.eval()


# Float32 round-off accumulates mostly over the trunks' longest reduction (3 x 3 x 512 taps in VGG16's conv5).
TRUNK_TERMS = 3 * 3 * 512


@pytest.fixture
def pair(photos):
    x = photos(2, 64)
    noisy = (x + 0.08 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return x, torch.cat([noisy[:1], blurred[1:]])


@pytest.mark.slow
@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_equals_lpips_package(net, torchvision_weights, pair):
    path = torchvision_weights(LPIPS_NETS[net][0])
    preds, target = pair
    # The package's own model evaluated in float64: our float32 result is within float32 round-off of it.
    with torch.no_grad():
        expected = _package_lpips(net, path).double()(preds.double(), target.double(), normalize=True)
    ours = LPIPSLoss(net, weights=path, reduction="none")
    got = ours(preds, target)
    assert got.shape == expected.shape == (2, 1, 1, 1)
    assert_float32_close(got, expected, terms=TRUNK_TERMS)
    assert (got > 1e-3).all()  # not trivially equal
    # [-1, 1] input equals the package's default (normalize=False)
    signed = LPIPSLoss(net, input_range=(-1, 1), weights=path, reduction="sum")
    assert_float32_close(signed(preds * 2 - 1, target * 2 - 1), expected.sum(), terms=TRUNK_TERMS)


def test_spatial_equals_lpips_package(torchvision_weights, pair):
    path = torchvision_weights("alexnet")
    preds, target = pair
    with torch.no_grad():
        package = _package_lpips("alex", path, spatial=True).double()
        expected = package(preds.double(), target.double(), normalize=True)
    got = LPIPSLoss("alex", spatial=True, weights=path, reduction="none")(preds, target)
    assert got.shape == expected.shape == (2, 1, 64, 64)
    assert_float32_close(got, expected, terms=TRUNK_TERMS)
    mean = LPIPSLoss("alex", spatial=True, weights=path)(preds, target)
    assert_float32_close(mean, expected.mean(), terms=TRUNK_TERMS)


def test_lin_weights_are_non_persistent_buffers_of_the_package(torchvision_weights):
    loss = LPIPSLoss("squeeze", weights=torchvision_weights("squeezenet1_1"))
    assert len(loss.lin_weights) == 7 and [w.shape[1] for w in loss.lin_weights] == [
        64,
        128,
        256,
        384,
        384,
        512,
        512,
    ]
    assert list(loss.state_dict()) == [] and list(loss.parameters()) == []
    assert {name for name, _ in loss.named_buffers()} == {"shift", "scale", *(f"lin{i}" for i in range(7))}


def test_zero_at_equal_inputs_with_finite_gradient(torchvision_weights, pair):
    loss = LPIPSLoss("alex", weights=torchvision_weights("alexnet"))
    preds = pair[0].clone()
    preds[:, :, :8] = 0  # dark regions: feature vectors that are exactly zero
    preds.requires_grad_(True)
    value = loss(preds, preds.detach().clone())
    assert value == 0
    value.backward()
    assert torch.isfinite(preds.grad).all()


def test_target_builds_no_graph_backbone_frozen_and_moves(torchvision_weights, pair):
    loss = LPIPSLoss("alex", weights=torchvision_weights("alexnet")).train()
    trunk = loss._held("trunk")
    assert not trunk.training and not any(p.requires_grad for p in trunk.parameters())
    preds, target = (x.clone().requires_grad_(True) for x in pair)
    loss(preds, target).backward()
    assert target.grad is None and preds.grad is not None
    assert all(p.grad is None for p in trunk.parameters())
    loss.double()
    assert next(trunk.parameters()).dtype == torch.float64 and loss.lin0.dtype == torch.float64
    assert loss(pair[0].double(), pair[1].double()).dtype == torch.float64


def test_grayscale_is_repeated(torchvision_weights, pair):
    loss = LPIPSLoss("alex", weights=torchvision_weights("alexnet"), reduction="none")
    gray_p, gray_t = pair[0].mean(1, keepdim=True), pair[1].mean(1, keepdim=True)
    torch.testing.assert_close(
        loss(gray_p, gray_t), loss(gray_p.repeat(1, 3, 1, 1), gray_t.repeat(1, 3, 1, 1))
    )


def test_bfloat16_autocast_close_to_float32(torchvision_weights, pair):
    # The trunk runs in bfloat16 under autocast; the LPIPS distance itself in float32.
    loss = LPIPSLoss("alex", weights=torchvision_weights("alexnet"))
    results = {}
    for enabled in (False, True):
        preds = pair[0].clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            value = loss(preds, pair[1])
        value.backward()
        results[enabled] = value.detach(), preds.grad
    (v32, g32), (v16, g16) = results[False], results[True]
    assert v16.dtype == torch.float32 and torch.isfinite(v16) and torch.isfinite(g16).all()
    assert abs(v16 - v32) / v32 < 1e-2  # measured 3e-3
    assert F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0) > 0.9  # measured 0.99


def test_errors(torchvision_weights):
    with pytest.raises(
        ValueError, match=r"Expected `net` to be one of \('alex', 'vgg', 'squeeze'\), but got 'resnet'"
    ):
        LPIPSLoss("resnet", weights=None)
    with pytest.raises(ValueError, match=r"Expected `reduction` to be one of"):
        LPIPSLoss(reduction="avg", weights=None)
    with pytest.raises(ValueError, match=r"Expected `input_range` to satisfy low < high, but got \(0, 0\)"):
        LPIPSLoss(input_range=(0, 0), weights=None)
    loss = LPIPSLoss("alex", weights=torchvision_weights("alexnet"))
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to have the same shape"):
        loss(x, torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to be 4-D"):
        loss(x[0], x[0])
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to have 1 or 3 channels, but got 4"):
        loss(torch.rand(1, 4, 32, 32), torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"Expected `target` to be finite"):
        loss(x, x / 0)
    with pytest.warns(
        UserWarning, match=r"far outside the declared input_range \(0.0, 1.0\): `preds` in .* and `target` in"
    ):
        loss(x * 255, x * 255)


@pytest.mark.parametrize(
    ("net", "arch"), [("alex", "alexnet"), ("vgg", "vgg16"), ("squeeze", "squeezenet1_1")]
)
def test_images_smaller_than_the_network_raise_with_the_minimum(net, arch, torchvision_weights):
    loss = LPIPSLoss(net, weights=torchvision_weights(arch))
    side = loss._held("trunk").min_size[0]
    # the minimum is torchvision's own: one pixel less and its trunk fails in a pooling layer
    trunk = torchvision.models.get_model(arch).features[: _SLICE_ENDS[net][-1]].eval()
    trunk(torch.zeros(1, 3, side, side))
    with pytest.raises(RuntimeError):
        trunk(torch.zeros(1, 3, side - 1, side - 1))
    small = torch.rand(1, 3, side - 1, side + 5)
    deepest = LPIPS_NETS[net][1][-1]
    with pytest.raises(
        ValueError,
        match=rf"Expected `preds` and `target` to be at least {side}x{side} pixels for {arch} up to {deepest}, "
        rf"but got {side - 1}x{side + 5}",
    ):
        loss(small, small)


def test_memory_format_choice_keeps_the_value(torchvision_weights, pair):
    path = torchvision_weights("alexnet")
    reference = LPIPSLoss("alex", weights=path, reduction="none").double()(*(x.double() for x in pair))
    for fmt in ("contiguous", "channels_last"):
        value = LPIPSLoss("alex", weights=path, memory_format=fmt, reduction="none")(*pair)
        # the deepest sums: 3x3 convolutions over 384 channels, then a spatial mean of the maps
        assert_float32_close(value, reference, terms=3 * 3 * 384 * 64, msg=fmt)
    with pytest.raises(ValueError, match=r"Expected `memory_format` to be one of"):
        LPIPSLoss("alex", weights=path, memory_format="NHWC")
