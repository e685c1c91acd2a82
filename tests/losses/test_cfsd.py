"""CFSDLoss equals StyleID's PatchSimi (jiwoogit/StyleID, evaluation/image_metrics.py) on the same VGG19."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from _numerics import assert_float32_close

from percep_lightning.losses.cfsd import CFSDLoss

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _patch_simi(vgg_features, stylized, content, dtype=torch.float32):
    """StyleID's PatchSimi.forward for one pair: VGG19 features[:12] output, full (hw)^2 matrices.

    ``dtype`` is the dtype of the similarity and KL computation on the float32 features.
    """

    def similarity(image, log):
        feats = vgg_features((image - MEAN) / STD).to(dtype)
        b, c, h, w = feats.shape
        f = torch.transpose(feats, 1, 3).reshape(b, h * w, c).div(c)
        m = torch.bmm(f, f.transpose(1, 2))
        return (F.log_softmax(m, dim=-1) if log else F.softmax(m, dim=-1)).reshape(b, -1)

    return F.kl_div(similarity(stylized, True), similarity(content, False), reduction="batchmean")


@pytest.fixture(scope="module")
def vgg19_path(torchvision_weights, tmp_path_factory):
    """The random VGG19 file with the five convolutions up to relu3_1 scaled by 2.

    Randomly initialised, relu3_1 features are ~30x smaller than pretrained ones, the similarity
    matrices ~1e-4 and the softmax rows uniform to 1e-4: CFSD is then ~1e-8, below what the float32
    reference resolves. Scaled, the matrices reach ~0.1 as with pretrained weights.
    """
    state = torch.load(torchvision_weights("vgg19"), weights_only=True)
    for index in (0, 2, 5, 7, 10):
        state[f"features.{index}.weight"] = state[f"features.{index}.weight"] * 2
    path = tmp_path_factory.mktemp("cfsd_weights") / "vgg19-random-scaled.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def reference_features(vgg19_path):
    with torch.device("meta"):
        model = torchvision.models.vgg19(weights=None)
    model.load_state_dict(torch.load(vgg19_path, weights_only=True), assign=True)
    return model.features[:12].eval()


@pytest.fixture
def pair(photos):
    content = photos(2, 32)
    stylized = (content.flip(-1) * 0.7 + 0.3 * photos(3, 32)[1:]).clamp(0, 1)  # a different image per pair
    return stylized, content


def _exact(reference_features, stylized, content):
    """StyleID's PatchSimi evaluated wholly in float64 (trunk included): value and gradient of the mean."""
    trunk = copy.deepcopy(reference_features).double()
    x = stylized.double().requires_grad_(True)
    per_pair = torch.stack(
        [_patch_simi(trunk, x[i : i + 1], content[i : i + 1].double(), torch.float64) for i in range(len(x))]
    )
    per_pair.mean().backward()
    return per_pair.detach(), x.grad


# Float32 round-off accumulates mostly over the trunk's longest reduction (3 x 3 x 256 taps).
TERMS = 3 * 3 * 256


def test_equals_styleid_patch_simi(vgg19_path, reference_features, pair):
    stylized, content = pair
    expected, _ = _exact(reference_features, stylized, content)
    assert (expected > 1e-3).all()  # a real distance, not rounding noise
    got = CFSDLoss(weights=vgg19_path, reduction="none")(stylized, content)
    assert_float32_close(got, expected, terms=TERMS)
    # the dataset value: mean over pairs (the reference runs batch size 1)
    assert_float32_close(CFSDLoss(weights=vgg19_path)(stylized, content), expected.mean(), terms=TERMS)


def test_chunked_equals_unchunked_with_gradient(vgg19_path, reference_features, pair):
    stylized, content = pair
    expected, expected_grad = _exact(reference_features, stylized, content)
    for chunk_size in (7, 64, 10_000):  # 8x8 relu3_1 maps: 64 rows
        x = stylized.clone().requires_grad_(True)
        value = CFSDLoss(weights=vgg19_path, chunk_size=chunk_size)(x, content)
        value.backward()
        assert_float32_close(value, expected.mean(), terms=TERMS, msg=f"value, chunk_size={chunk_size}")
        assert_float32_close(x.grad, expected_grad, terms=TERMS, msg=f"gradient, chunk_size={chunk_size}")


def test_zero_at_equal_inputs_with_finite_gradient(vgg19_path, pair):
    content = pair[1]
    x = content.clone().requires_grad_(True)
    value = CFSDLoss(weights=vgg19_path)(x, content.clone())
    assert value == 0
    value.backward()
    assert torch.isfinite(x.grad).all()


def test_content_builds_no_graph_backbone_frozen_not_saved(vgg19_path, pair):
    loss = CFSDLoss(weights=vgg19_path).train()
    trunk = loss._held("vgg")
    assert not trunk.training and not any(p.requires_grad for p in trunk.parameters())
    assert len(trunk.layers) == 12  # features[:12], up to relu3_1
    assert list(loss.state_dict()) == [] and list(loss.parameters()) == []
    stylized, content = (x.clone().requires_grad_(True) for x in pair)
    loss(stylized, content).backward()
    assert content.grad is None and stylized.grad is not None
    assert all(p.grad is None for p in trunk.parameters())


def test_autocast_runs_the_trunk_in_float32(vgg19_path, reference_features, pair):
    loss = CFSDLoss(weights=vgg19_path)
    stylized, content = pair
    expected, expected_grad = _exact(reference_features, stylized, content)
    x = stylized.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x, content)
    value.backward()
    assert value.dtype == torch.float32
    # float32 accuracy, not bfloat16's 8-bit mantissa
    assert_float32_close(value, expected.mean(), terms=TERMS)
    assert_float32_close(x.grad, expected_grad, terms=TERMS)


def test_errors(vgg19_path):
    with pytest.raises(ValueError, match=r"Expected `chunk_size` to be >= 1, but got 0"):
        CFSDLoss(chunk_size=0, weights=None)
    with pytest.raises(ValueError, match=r"Expected `reduction` to be one of"):
        CFSDLoss(reduction="batchmean", weights=None)
    with pytest.raises(ValueError, match=r"Expected `input_range` to be two numbers"):
        CFSDLoss(input_range="0-1", weights=None)
    loss = CFSDLoss(weights=vgg19_path)
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to have the same shape"):
        loss(x, torch.rand(1, 3, 16, 32))
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to have 1 or 3 channels, but got 2"):
        loss(x[:, :2], x[:, :2])
    with pytest.raises(ValueError, match=r"Expected `preds` to be finite"):
        loss(x.log() * 0 - x / 0, x)
    with pytest.warns(UserWarning, match=r"far outside the declared input_range \(0.0, 1.0\): `target` in"):
        loss(x, x * 255)


def test_images_smaller_than_relu3_1_needs_raise(vgg19_path):
    loss = CFSDLoss(weights=vgg19_path)  # relu3_1 follows two 2x2 poolings
    x = torch.rand(1, 3, 3, 16)
    with pytest.raises(
        ValueError,
        match=r"Expected `preds` and `target` to be at least 4x4 pixels for vgg19 up to relu3_1, but got 3x16",
    ):
        loss(x, x)
    assert torch.isfinite(loss(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)))
