"""CFSD metric: equal to StyleID's evaluation code on one VGG19 file, streaming state, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from percep_lightning.metrics.cfsd import CFSD


@pytest.fixture(scope="module")
def vgg_path(torchvision_weights, tmp_path_factory):
    """The random VGG19 file with its first convolution scaled by 100 (biases are zero, so every later map
    scales too): relu3_1 then has the magnitude of the pretrained network's, and the patch similarities
    are O(1) instead of 1e-4, where every CFSD would be ~0."""
    state = torch.load(torchvision_weights("vgg19"), weights_only=True)
    state = {k: v.clone() for k, v in state.items()}
    state["features.0.weight"] *= 100
    path = tmp_path_factory.mktemp("cfsd_vgg") / "vgg19-scaled.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def metric_factory(vgg_path):
    shared = CFSD(weights=vgg_path)

    def make(**kwargs):
        return CFSD(backbone=shared.backbone, **kwargs)

    return make


def styleid_cfsd(stylized: torch.Tensor, content: torch.Tensor, vgg_path) -> float:
    """StyleID's ``PatchSimi`` + ``compute_cfsd``, written out: one pair at a time, mean over pairs."""
    vgg = torchvision.models.vgg19()
    vgg.load_state_dict(torch.load(vgg_path, weights_only=True))
    trunk = vgg.features[:12].eval()  # up to "conv3" (relu3_1, index 11)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def similarity(x):
        feat = trunk((x - mean) / std)
        b, c, h, w = feat.shape
        feat = feat.transpose(1, 3).reshape(b, h * w, c) / c
        return torch.bmm(feat, feat.transpose(1, 2))

    values = []
    with torch.no_grad():
        for s, c in zip(stylized, content, strict=True):
            m_s, m_c = similarity(s[None]), similarity(c[None])
            values.append(
                F.kl_div(
                    m_s.log_softmax(-1).view(1, -1), m_c.softmax(-1).view(1, -1), reduction="batchmean"
                ).item()
            )
    return sum(values) / len(values)


@pytest.mark.slow
def test_matches_styleid(metric_factory, vgg_path, photos):
    content = photos(3, 32)
    stylized = (F.avg_pool2d(content, 3, stride=1, padding=1) * 0.8 + 0.1).flip(-1)
    metric = metric_factory(chunk_size=100)
    metric.update(stylized[:2], content[:2])  # batches stream into a sum and a count
    metric.update(stylized[2:], content[2:])
    expected = styleid_cfsd(stylized, content, vgg_path)
    assert expected > 1e-2
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-4)
    assert int(metric.num_images) == 3 and metric.value_sum.dtype == torch.float64


def test_identical_pairs_are_zero_and_uint8_equals_float(metric_factory, photos):
    images = photos(2, 24, dtype=torch.uint8)
    metric = metric_factory()
    metric.update(images, images)
    assert float(metric.compute()) == pytest.approx(0.0, abs=1e-6)
    a, b = metric_factory(), metric_factory()
    noisy = images.flip(-2)
    a.update(noisy, images)
    b.update(noisy.float() / 255, images.float() / 255)
    torch.testing.assert_close(a.compute(), b.compute())


def test_chunk_size_does_not_change_the_value(metric_factory, photos):
    content = photos(1, 32)
    stylized = content.roll(5, dims=-1)
    values = []
    for chunk_size in (7, 64, 10_000):
        metric = metric_factory(chunk_size=chunk_size)
        metric.update(stylized, content)
        values.append(float(metric.compute()))
    assert values == pytest.approx([values[0]] * 3, rel=1e-5)


def test_backbone_is_held_outside_the_state(metric_factory):
    metric = metric_factory()
    assert list(metric.parameters()) == [] and metric.state_dict() == {}
    metric.to(torch.float16)
    assert next(metric.backbone.parameters()).dtype == torch.float32
    assert metric.value_sum.dtype == torch.float64


def test_errors(metric_factory):
    metric = metric_factory()
    with (
        pytest.warns(UserWarning, match="before the ``update``"),
        pytest.raises(ValueError, match="at least 1 image pair"),
    ):
        metric.compute()
    with pytest.raises(ValueError, match=r"same shape, but got \(1, 3, 16, 16\) and \(1, 3, 16, 8\)"):
        metric.update(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 8))
    with pytest.raises(ValueError, match=r"Expected float `content` to be in \[0, 1\]"):
        metric.update(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16) + 1)
    with pytest.raises(ValueError, match="NaN or Inf"):
        metric.update(torch.full((1, 3, 8, 8), float("nan")), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="`chunk_size` to be >= 1, but got 0"):
        metric_factory(chunk_size=0)


def test_images_smaller_than_relu3_1_needs_raise(metric_factory):
    metric = metric_factory()
    with pytest.raises(
        ValueError,
        match=r"Expected `preds` and `content` to be at least 4x4 pixels for vgg19 up to relu3_1, but got 2x8",
    ):
        metric.update(torch.rand(1, 3, 2, 8), torch.rand(1, 3, 2, 8))
    metric.update(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))
    assert int(metric.num_images) == 1
