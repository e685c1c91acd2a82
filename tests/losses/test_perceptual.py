"""VGGPerceptualLoss: equal to a direct torchvision computation (BasicSR's PerceptualLoss convention)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from _numerics import assert_float32_close

from percep_lightning.backbones.torchvision_trunks import TorchvisionFeatures, layer_index
from percep_lightning.functional.perceptual import gram_matrix
from percep_lightning.losses.perceptual import DEFAULT_LAYER_WEIGHTS, VGGPerceptualLoss, _walk_pair

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


_MODELS: dict = {}
# Float32 round-off accumulates mostly over the trunk's longest reduction (3 x 3 x 512 taps in conv5).
VGG_TERMS = 3 * 3 * 512


def _torchvision_model(arch, path, dtype=torch.float32):
    """torchvision's own model with the file's weights (built on the meta device: no slow random init)."""
    if (arch, path, dtype) not in _MODELS:
        with torch.device("meta"):
            model = getattr(torchvision.models, arch)(weights=None)
        model.load_state_dict(torch.load(path, weights_only=True), assign=True)
        _MODELS[arch, path, dtype] = model.eval().to(dtype)
    return _MODELS[arch, path, dtype]


def _torchvision_features(arch, path, x, layers):
    """Walk torchvision's own trunk on ImageNet-normalised [0, 1] images, cloning the wanted outputs."""
    model = _torchvision_model(arch, path, x.dtype)
    h, out = (x - MEAN.to(x.dtype)) / STD.to(x.dtype), {}
    wanted = {layer_index(arch, name): name for name in layers}
    for i, layer in enumerate(model.features.eval()[: max(wanted) + 1]):
        h = layer(h)
        if i in wanted:
            out[wanted[i]] = h.clone()
    return out


_CRITERIA = {
    "l1": F.l1_loss,
    "l2": F.mse_loss,
    "fro": lambda x, y: torch.norm(x - y, p="fro"),
}


def _reference(arch, path, preds, target, layer_weights, criterion, style_weight=0.0, perceptual_weight=1.0):
    """BasicSR's PerceptualLoss on torchvision's trunk, evaluated wholly in float64."""
    crit = _CRITERIA[criterion]
    preds, target = preds.double(), target.double()
    fp = _torchvision_features(arch, path, preds, layer_weights)
    with torch.no_grad():
        ft = _torchvision_features(arch, path, target, layer_weights)
    total = perceptual_weight * sum(w * crit(fp[k], ft[k]) for k, w in layer_weights.items())
    if style_weight:
        total = total + style_weight * sum(
            w * crit(gram_matrix(fp[k]), gram_matrix(ft[k])) for k, w in layer_weights.items()
        )
    return total


@pytest.fixture
def images(photos):
    preds = photos(2, 32)
    target = (preds + 0.1 * torch.randn(preds.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    return preds, target


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["l1", "l2", "fro"])
def test_equals_torchvision_computation(criterion, torchvision_weights, images):
    path = torchvision_weights("vgg19")
    preds, target = images
    loss = VGGPerceptualLoss(criterion=criterion, style_weight=2.0, weights=path)  # default layers
    total = loss(preds, target)
    perceptual = _reference("vgg19", path, preds, target, DEFAULT_LAYER_WEIGHTS, criterion)
    style = _reference(
        "vgg19", path, preds, target, DEFAULT_LAYER_WEIGHTS, criterion, 1.0, perceptual_weight=0
    )
    assert_float32_close(total, perceptual + 2.0 * style, terms=VGG_TERMS)
    assert_float32_close(loss.parts["perceptual"], perceptual, terms=VGG_TERMS)
    assert_float32_close(loss.parts["style"], style, terms=VGG_TERMS)
    # style off (the default): the perceptual term alone
    alone = VGGPerceptualLoss(criterion=criterion, weights=path)
    assert_float32_close(alone(preds, target), perceptual, terms=VGG_TERMS)
    assert set(alone.parts) == {"perceptual", *(f"perceptual/{k}" for k in DEFAULT_LAYER_WEIGHTS)}


def test_default_layers_are_real_esrgans_pre_activation_layers():
    assert DEFAULT_LAYER_WEIGHTS == {
        "conv1_2": 0.1,
        "conv2_2": 0.1,
        "conv3_4": 1.0,
        "conv4_4": 1.0,
        "conv5_4": 1.0,
    }


@pytest.mark.slow
def test_vgg16_relu_layers_signed_input_range_and_style_layers(torchvision_weights, images):
    path = torchvision_weights("vgg16")
    preds, target = images
    layer_weights = {"relu1_2": 0.5, "relu3_3": 1.0}
    loss = VGGPerceptualLoss(
        layer_weights,
        criterion="l2",
        perceptual_weight=0.5,
        style_weight=3.0,
        style_layer_weights={"relu2_2": 1.0},
        input_range=(-1, 1),
        arch="vgg16",
        weights=path,
    )
    got = loss(preds * 2 - 1, target * 2 - 1)
    expected = _reference("vgg16", path, preds, target, layer_weights, "l2", perceptual_weight=0.5)
    style = _reference(
        "vgg16", path, preds, target, {"relu2_2": 1.0}, "l2", style_weight=1.0, perceptual_weight=0
    )
    assert_float32_close(got, expected + 3.0 * style, terms=VGG_TERMS)
    assert set(loss.parts) == {
        "perceptual",
        "perceptual/relu1_2",
        "perceptual/relu3_3",
        "style",
        "style/relu2_2",
    }
    assert_float32_close(loss.parts["perceptual"], expected / 0.5, terms=VGG_TERMS)
    assert_float32_close(loss.parts["style"], style, terms=VGG_TERMS)
    assert all(not v.requires_grad for v in loss.parts.values())


def test_trunk_stops_at_deepest_used_layer_and_skips_zero_weights(torchvision_weights):
    loss = VGGPerceptualLoss(
        {"relu2_1": 1.0, "relu5_1": 0.0},
        style_layer_weights={"relu4_1": 1.0},
        weights=torchvision_weights("vgg19"),
    )
    assert len(loss._held("vgg").layers) == layer_index("vgg19", "relu2_1") + 1  # style off: relu4_1 unused


def test_reduction_none_grayscale_and_sum(torchvision_weights, images):
    path = torchvision_weights("vgg19")
    preds, target = images
    gray_p, gray_t = preds.mean(1, keepdim=True), target.mean(1, keepdim=True)
    per_image = VGGPerceptualLoss({"relu2_2": 1.0}, weights=path, reduction="none")(gray_p, gray_t)
    assert per_image.shape == (2,)
    rgb = VGGPerceptualLoss({"relu2_2": 1.0}, weights=path, reduction="sum")(
        gray_p.repeat(1, 3, 1, 1), gray_t.repeat(1, 3, 1, 1)
    )
    torch.testing.assert_close(per_image.sum(), rgb)


CHEAP_LAYERS = {"conv1_2": 0.1, "relu2_2": 1.0, "conv3_1": 1.0}


def test_zero_at_equal_inputs_with_finite_gradient(torchvision_weights, images):
    loss = VGGPerceptualLoss(CHEAP_LAYERS, style_weight=1.0, weights=torchvision_weights("vgg19"))
    preds = images[0].clone().requires_grad_(True)
    value = loss(preds, images[0].clone())
    assert value == 0
    value.backward()
    assert torch.isfinite(preds.grad).all()


def test_target_builds_no_graph_and_backbone_is_frozen_and_not_saved(torchvision_weights, images):
    loss = VGGPerceptualLoss(CHEAP_LAYERS, style_weight=1.0, weights=torchvision_weights("vgg19"))
    loss.train()
    trunk = loss._held("vgg")
    assert not trunk.training and not any(p.requires_grad for p in trunk.parameters())
    assert list(loss.parameters()) == [] and list(loss.state_dict()) == []
    preds, target = (x.clone().requires_grad_(True) for x in images)
    loss(preds, target).backward()
    assert target.grad is None and preds.grad is not None
    assert all(p.grad is None for p in trunk.parameters())
    loss.double()
    assert next(trunk.parameters()).dtype == torch.float64
    assert loss(images[0].double(), images[1].double()).dtype == torch.float64


def test_bfloat16_autocast_close_to_float32(torchvision_weights, images):
    # The trunk runs in bfloat16 under autocast (8-bit mantissa); the criteria and Gram matrices in float32.
    loss = VGGPerceptualLoss(CHEAP_LAYERS, style_weight=1.0, weights=torchvision_weights("vgg19"))
    results = {}
    for enabled in (False, True):
        preds = images[0].clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            value = loss(preds, images[1])
        value.backward()
        results[enabled] = value.detach(), preds.grad
    (v32, g32), (v16, g16) = results[False], results[True]
    assert v16.dtype == torch.float32 and torch.isfinite(v16) and torch.isfinite(g16).all()
    assert abs(v16 - v32) / v32 < 1e-2  # measured 1e-3
    assert F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0) > 0.9  # measured 0.96


def test_errors(torchvision_weights):
    path = torchvision_weights("vgg19")
    with pytest.raises(
        ValueError, match=r"Unknown layer 'relu6_1' for vgg19; valid names are: conv1_1, relu1_1, conv1_2"
    ):
        VGGPerceptualLoss({"relu6_1": 1.0}, weights=None)
    with pytest.raises(
        ValueError, match=r"Expected `criterion` to be one of \('l1', 'l2', 'fro'\), but got 'l3'"
    ):
        VGGPerceptualLoss(criterion="l3", weights=None)
    with pytest.raises(
        ValueError, match=r"Expected `arch` to be one of \('vgg19', 'vgg16'\), but got 'vgg11'"
    ):
        VGGPerceptualLoss(arch="vgg11", weights=None)
    with pytest.raises(ValueError, match=r"Expected `input_range` to satisfy low < high, but got \(1, 0\)"):
        VGGPerceptualLoss(input_range=(1, 0), weights=None)
    with pytest.raises(ValueError, match=r"Expected `input_range` to be two numbers"):
        VGGPerceptualLoss(input_range=(0, 1, 2), weights=None)
    with pytest.raises(ValueError, match=r"Expected `style_weight` to be a finite number >= 0, but got -1.0"):
        VGGPerceptualLoss(style_weight=-1, weights=None)
    with pytest.raises(ValueError, match=r"Expected at least one layer with a non-zero weight"):
        VGGPerceptualLoss({"relu1_1": 0.0}, weights=None)
    with pytest.raises(ValueError, match=r"Expected `reduction` to be one of"):
        VGGPerceptualLoss(reduction="batchmean", weights=None)

    loss = VGGPerceptualLoss({"relu1_1": 1.0}, weights=path)
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(
        ValueError,
        match=r"Expected `preds` and `target` to have the same shape, but got \(1, 3, 16, 16\) and \(1, 3, 16, 8",
    ):
        loss(x, x[..., :8])
    with pytest.raises(
        ValueError,
        match=r"Expected `preds` and `target` to be 4-D \(N, C, H, W\), but got shape \(3, 16, 16\)",
    ):
        loss(x[0], x[0])
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to have 1 or 3 channels, but got 2"):
        loss(x[:, :2], x[:, :2])
    with pytest.raises(
        ValueError, match=r"Expected `target` to be finite, but it contains NaN or Inf values"
    ):
        loss(x, x.clone().index_fill_(3, torch.tensor([0]), float("inf")))
    with pytest.raises(ValueError, match=r"Expected `preds` to be finite"):
        loss(x * float("nan"), x)
    with pytest.raises(
        TypeError, match=r"Expected `preds` to be a floating-point tensor, but got dtype torch.uint8"
    ):
        loss((x * 255).byte(), x)


def test_far_outside_input_range_warns_once(torchvision_weights):
    loss = VGGPerceptualLoss({"relu1_1": 1.0}, weights=torchvision_weights("vgg19"))
    x = torch.rand(1, 3, 16, 16)
    with pytest.warns(
        UserWarning, match=r"far outside the declared input_range \(0.0, 1.0\): `preds` in .* and `target` in"
    ) as record:
        loss(x * 255, x * 255)
    assert len([w for w in record if "input_range" in str(w.message)]) == 1
    with pytest.warns(
        UserWarning, match=r"input_range \(0.0, 1.0\): `preds` in \[-(0.9\d*|1), (0.9\d*|1)\]\. Pass"
    ):
        loss(x * 2 - 1, x)


@pytest.mark.parametrize(
    ("criterion", "layer_weights", "style_layer_weights"),
    [
        ("l1", DEFAULT_LAYER_WEIGHTS, None),  # pre-activations only: every ReLU in place
        ("l2", {"conv1_2": 0.5, "relu2_2": 1.0, "conv3_1": 2.0}, {"conv3_1": 1.0, "relu1_1": 0.3}),
        ("fro", {"relu1_2": 1.0, "conv2_1": 0.7}, None),
    ],
)
def test_values_and_gradients_equal_float64_torchvision(
    criterion, layer_weights, style_layer_weights, torchvision_weights, images
):
    # Our module in float64 against plain autograd through torchvision's own float64 trunk (no custom
    # backward, no in-place ReLU after a cloned pre-activation): the same maths to float64 round-off.
    path = torchvision_weights("vgg19")
    preds, target = (x.double() for x in images)
    style_weight = 0.0 if style_layer_weights is None else 2.0
    loss = VGGPerceptualLoss(
        layer_weights,
        criterion=criterion,
        style_weight=style_weight,
        style_layer_weights=style_layer_weights,
        weights=path,
    ).double()
    ours_x = preds.clone().requires_grad_(True)
    ours = loss(ours_x, target)
    ours.backward()

    trunk = copy.deepcopy(_torchvision_model("vgg19", path).features).double()
    ref_x = preds.clone().requires_grad_(True)
    crit = _CRITERIA[criterion]
    style_layers = style_layer_weights or {}
    wanted = {layer_index("vgg19", name): name for name in {**layer_weights, **style_layers}}

    def features(x):
        h, out = (x - MEAN.double()) / STD.double(), {}
        for i, layer in enumerate(trunk[: max(wanted) + 1]):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h.clone()
        return out

    fp = features(ref_x)
    with torch.no_grad():
        ft = features(target)
    reference = sum(w * crit(fp[k], ft[k]) for k, w in layer_weights.items())
    if style_layers:
        reference = reference + style_weight * sum(
            w * crit(gram_matrix(fp[k]), gram_matrix(ft[k])) for k, w in style_layers.items()
        )
    reference.backward()
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=0)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-9, atol=1e-14)


def test_float32_gradient_close_to_float64(torchvision_weights, images):
    # l2 has a smooth gradient, so float32 round-off (not sign flips) is all that separates the two.
    path = torchvision_weights("vgg19")
    grads = {}
    for dtype in (torch.float32, torch.float64):
        loss = VGGPerceptualLoss(criterion="l2", weights=path).to(dtype)
        x = images[0].detach().to(dtype).clone().requires_grad_(True)
        loss(x, images[1].to(dtype)).backward()
        grads[dtype] = x.grad
    g32, g64 = grads[torch.float32].double(), grads[torch.float64]
    assert ((g32 - g64).norm() / g64.norm()) < 1e-4


def test_images_smaller_than_the_deepest_layer_raise(torchvision_weights):
    loss = VGGPerceptualLoss(weights=torchvision_weights("vgg19"))  # conv5_4: after four 2x2 poolings
    x = torch.rand(1, 3, 15, 64)
    with pytest.raises(
        ValueError,
        match=r"Expected `preds` and `target` to be at least 16x16 pixels for vgg19 up to conv5_4, but got 15x64",
    ):
        loss(x, x)
    with pytest.raises(RuntimeError):  # what torchvision's own trunk does at that size
        _torchvision_model("vgg19", torchvision_weights("vgg19")).features[:35](x)
    assert loss(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)) > 0
    shallow = VGGPerceptualLoss({"relu2_1": 1.0}, weights=torchvision_weights("vgg19"))
    with pytest.raises(ValueError, match=r"at least 2x2 pixels for vgg19 up to relu2_1, but got 1x1"):
        shallow(x[..., :1, :1], x[..., :1, :1])


def test_memory_format_is_a_choice_that_keeps_the_values(torchvision_weights, images):
    path = torchvision_weights("vgg19")
    reference = VGGPerceptualLoss(CHEAP_LAYERS, criterion="l2", weights=path).double()(
        *(x.double() for x in images)
    )
    for fmt in ("contiguous", "channels_last", "auto"):
        loss = VGGPerceptualLoss(CHEAP_LAYERS, criterion="l2", weights=path, memory_format=fmt)
        value = loss(*images)
        # each layout against float64: the mean runs over 2x64x32x32 squared differences
        assert_float32_close(value, reference, terms=2 * 64 * 32 * 32, msg=fmt)
        weight = loss._held("vgg").layers[0].weight
        if fmt == "channels_last":
            assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
        if fmt == "contiguous":
            assert weight.is_contiguous()
    with pytest.raises(
        ValueError, match=r"Expected `memory_format` to be one of \('auto', 'measure', 'channels_last', "
    ):
        VGGPerceptualLoss(weights=None, memory_format="nhwc")


def _walk_reference(net, photos):
    """A fresh input for the walk, the target, and the plain forward's maps (both sides) and its gradient of
    ``sum(map.square().mean())``, the loss the walk tests rebuild pair by pair."""
    x, y = photos(2, 32), photos(2, 32).flip(-1)
    x1 = x.clone().requires_grad_(True)
    expected = net(x1)
    sum(f.square().mean() for f in expected.values()).backward()
    return x.clone().requires_grad_(True), y, expected, net(y), x1.grad


def test_walk_yields_the_forward_features_and_gradients(torchvision_weights, photos):
    layers = ["conv1_2", "relu2_1", "conv3_1", "relu3_1"]
    net = TorchvisionFeatures(
        "vgg19", layers, weights=torchvision_weights("vgg19"), memory_format="contiguous"
    )
    x2, y, expected, expected_y, expected_grad = _walk_reference(net, photos)
    total, names = 0, []
    # conv1_2 and conv3_1 reduced on the spot: the ReLUs after them then run in place
    for name, a, b in _walk_pair(net, x2, y, consumed={"conv1_2", "conv3_1"}):
        names.append(name)
        torch.testing.assert_close(b, expected_y[name], rtol=0, atol=0)
        torch.testing.assert_close(a, expected[name], rtol=0, atol=0)
        assert not b.requires_grad
        # square() saves its input, which the in-place ReLU after a consumed layer overwrites: use a copy
        total = total + (a.clone() if name.startswith("conv") else a).square().mean()
    total.backward()
    assert names == layers
    torch.testing.assert_close(x2.grad, expected_grad, rtol=0, atol=0)


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
def test_walk_hands_consumed_target_maps_over_and_fuses_the_relu_and_pooling_after_them(
    torchvision_weights, photos, memory_format
):
    # conv1_2 (then ReLU and pooling), conv3_1 (then ReLU and conv3_2), relu3_2, and conv3_3, the deepest
    layers = ["conv1_2", "relu2_1", "conv3_1", "relu3_2", "conv3_3"]
    net = TorchvisionFeatures(
        "vgg19", layers, weights=torchvision_weights("vgg19"), memory_format=memory_format
    )
    x2, y, expected, expected_y, expected_grad = _walk_reference(net, photos)
    terms, seen = [], []

    def fuse(name, a, b, pool):
        seen.append((name, pool is not None))
        torch.testing.assert_close(a, expected[name], rtol=0, atol=0)
        torch.testing.assert_close(b, expected_y[name], rtol=0, atol=0)
        terms.append(a.clone().square().mean())
        b.fill_(float("nan"))  # the target has gone on already: the caller may overwrite its map
        a = torch.relu(a)  # the caller's own ReLU and pooling
        return a if pool is None else pool(a)

    consumed = {"conv1_2", "conv3_1", "conv3_3"}
    names = []
    for name, a, b in _walk_pair(net, x2, y, consumed=consumed, fuse=fuse):
        names.append(name)
        torch.testing.assert_close(b, expected_y[name], rtol=0, atol=0)
        torch.testing.assert_close(a, expected[name], rtol=0, atol=0)
        terms.append((a.clone() if name in consumed else a).square().mean())
        if name in consumed:
            b.fill_(float("nan"))
    sum(terms).backward()
    assert seen == [("conv1_2", True), ("conv3_1", False)]
    assert names == ["relu2_1", "relu3_2", "conv3_3"]  # conv3_3 has no ReLU after it: yielded
    torch.testing.assert_close(x2.grad, expected_grad, rtol=0, atol=0)
