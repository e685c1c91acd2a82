"""Gram matrix and the per-layer criteria of the VGG perceptual/style loss (BasicSR convention)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _numerics import assert_float32_close

from percep_lightning.functional import perceptual
from percep_lightning.functional.perceptual import (
    feature_distance,
    gram_matrix,
    l1_distance_then_relu,
    perceptual_distance,
    style_distance,
)


def _basicsr_gram(x):
    n, c, h, w = x.shape
    f = x.view(n, c, w * h)
    return f.bmm(f.transpose(1, 2)) / (c * h * w)


def test_gram_matches_basicsr_and_is_layout_independent():
    x = torch.randn(2, 5, 4, 3)
    expected = _basicsr_gram(x.double())
    assert_float32_close(gram_matrix(x), expected, terms=4 * 3)
    assert_float32_close(gram_matrix(x.contiguous(memory_format=torch.channels_last)), expected, terms=4 * 3)


def test_gram_float32_under_autocast():
    x = torch.randn(2, 4, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gram_matrix(x)
    assert out.dtype == torch.float32
    assert_float32_close(out, _basicsr_gram(x.double()), terms=8 * 8)  # float32 sums, not bfloat16


def test_gram_gradcheck_float64():
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram_matrix, (x,))
    assert gram_matrix(x).dtype == torch.float64


def test_gram_rejects_non_4d():
    with pytest.raises(
        ValueError, match=r"Expected `features` to be 4-D \(N, C, H, W\), but got shape \(2, 3\)"
    ):
        gram_matrix(torch.ones(2, 3))


@pytest.mark.parametrize(
    ("criterion", "reference"),
    [
        ("l1", F.l1_loss),
        ("l2", F.mse_loss),
        ("fro", lambda x, y: torch.norm(x - y, p="fro")),  # BasicSR: one norm over the whole batch
    ],
)
def test_criteria_match_basicsr(criterion, reference):
    x, y = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(feature_distance(x, y, criterion), reference(x, y))


@pytest.mark.parametrize("criterion", ["l1", "l2", "fro"])
def test_reduction_none_gives_per_image_values(criterion):
    x, y = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    per_image = feature_distance(x, y, criterion, reduction="none")
    assert per_image.shape == (3,)
    for i in range(3):
        torch.testing.assert_close(per_image[i], feature_distance(x[i : i + 1], y[i : i + 1], criterion))
    torch.testing.assert_close(feature_distance(x, y, criterion, reduction="sum"), per_image.sum())
    if criterion != "fro":
        torch.testing.assert_close(feature_distance(x, y, criterion), per_image.mean())
    else:  # BasicSR's batch norm: the root of the sum of the squared per-image norms
        torch.testing.assert_close(feature_distance(x, y, criterion), per_image.square().sum().sqrt())


@pytest.mark.parametrize("criterion", ["l1", "l2", "fro"])
def test_weighted_sums_and_gradcheck(criterion):
    p = {"a": torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)}
    t = {"a": torch.randn(2, 3, 4, 4, dtype=torch.float64)}
    expected = 0.5 * feature_distance(p["a"], t["a"], criterion)
    torch.testing.assert_close(perceptual_distance(p, t, {"a": 0.5}, criterion=criterion), expected)
    expected_style = 2.0 * feature_distance(gram_matrix(p["a"]), gram_matrix(t["a"]), criterion)
    torch.testing.assert_close(style_distance(p, t, {"a": 2.0}, criterion=criterion), expected_style)
    assert torch.autograd.gradcheck(
        lambda x: style_distance({"a": x}, t, {"a": 1.0}, criterion=criterion, reduction="none"), (p["a"],)
    )


def test_errors():
    x = torch.zeros(1, 2, 3, 3)
    with pytest.raises(
        ValueError, match=r"Expected `criterion` to be one of \('l1', 'l2', 'fro'\), but got 'l3'"
    ):
        feature_distance(x, x, "l3")
    with pytest.raises(ValueError, match=r"Expected `reduction` to be one of"):
        feature_distance(x, x, "l1", reduction="avg")
    with pytest.raises(
        ValueError, match=r"Expected feature maps of the same shape, but got \(1, 2, 3, 3\) and"
    ):
        feature_distance(x, torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"Layer .b. is missing from `preds_features`"):
        perceptual_distance({"a": x}, {"a": x}, {"b": 1.0})
    with pytest.raises(ValueError, match=r"at least one layer"):
        style_distance({"a": x}, {"a": x}, {})


@pytest.mark.parametrize("criterion", ["l1", "l2", "fro"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_feature_distance_gradcheck_and_autograd_equivalence(criterion, reduction):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: feature_distance(a, b, criterion, reduction), (x, y))
    # the same gradient as autograd through BasicSR's expressions, channels-last layout included
    xc = x.detach().contiguous(memory_format=torch.channels_last).float().requires_grad_(True)
    xr = x.detach().float().requires_grad_(True)
    feature_distance(xc, y.detach().float(), criterion, reduction).sum().backward()
    reference = {"l1": lambda d: d.abs(), "l2": lambda d: d.square()}
    d = xr - y.detach().float()
    if criterion == "fro":
        per_image = torch.stack([torch.norm(di, p="fro") for di in d])
        expected = torch.norm(d, p="fro") if reduction == "mean" else per_image
    else:
        per_image = reference[criterion](d).flatten(1).mean(1)
        expected = per_image.mean() if reduction == "mean" else per_image
    expected.sum().backward()
    torch.testing.assert_close(xc.grad, xr.grad)


@pytest.mark.parametrize("criterion", ["l1", "l2", "fro"])
def test_zero_gradient_at_equal_features(criterion):
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    for reduction in ("mean", "none"):
        value = feature_distance(x, x.detach().clone(), criterion, reduction)
        assert (value == 0).all()
        value.sum().backward()
        assert torch.isfinite(x.grad).all() and (x.grad == 0).all()
        x.grad = None


def test_l1_keeps_float32_precision_on_large_maps():
    # A 4x64x256x256 map: the L1 mean must stay as accurate as a plain float32 sum (1e-6 of float64).
    g = torch.Generator().manual_seed(0)
    preds, target = torch.rand(4, 64, 256, 256, generator=g), torch.rand(4, 64, 256, 256, generator=g)
    exact = (preds.double() - target.double()).abs().mean()
    assert feature_distance(preds, target, "l1").double().item() == pytest.approx(exact.item(), rel=1e-6)


def _strided(x):
    """The values of ``x`` in a map that is neither contiguous nor channels-last (every other column)."""
    return torch.stack([x, torch.zeros_like(x)], -1).flatten(-2)[..., ::2]


@pytest.mark.parametrize(
    ("layout", "pool"),
    # (an in-place ReLU on a view cannot share a node with the values: trunk outputs are never views)
    [("contiguous", False), ("contiguous", True), ("channels_last", False), ("channels_last", True), ("strided", True)],
)  # fmt: skip
def test_l1_then_relu_equals_autograd_in_float64_over_several_blocks(monkeypatch, layout, pool):
    monkeypatch.setattr(perceptual, "_BLOCK", 100)  # 5x6x7 = 210 values per image: three blocks
    g = torch.Generator().manual_seed(0)
    base, other = (
        torch.randn(3, 5, 6, 7, dtype=torch.float64, generator=g),
        torch.randn(3, 5, 6, 7, generator=g),
    )
    target = other.double()
    target[0, :, :2] = base[0, :, :2]  # ties: no gradient from the distance there
    base[1, :, 2:4] = -base[1, :, 2:4].abs()  # pooling windows with no positive value
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)  # any per-image gradient
    max_pool = torch.nn.MaxPool2d(2, 2, ceil_mode=True) if pool else None
    after = (lambda t: max_pool(torch.relu(t))) if pool else torch.relu
    upstream = torch.randn(after(base).shape, dtype=torch.float64, generator=g)
    arrange = {
        "contiguous": lambda t: t * 1.0,
        "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last) * 1.0,
        "strided": _strided,
    }[layout]

    leaf = base.clone().requires_grad_(True)
    reference = (leaf - target).abs().mean((1, 2, 3))
    activated = after(leaf)
    ((reference * weights).sum() + (activated * upstream).sum()).backward()

    x = base.clone().requires_grad_(True)
    t = arrange(target)
    values, ours = l1_distance_then_relu(arrange(x), t, pool=max_pool)  # a non-leaf, as a trunk's output
    ((values * weights).sum() + (ours * upstream).sum()).backward()

    torch.testing.assert_close(values, reference.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(ours.detach(), activated.detach(), rtol=0, atol=0)
    torch.testing.assert_close(x.grad, leaf.grad, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(t, torch.sign(base - target), rtol=0, atol=0)  # the target holds the sign


def test_l1_then_relu_float32_close_to_float64_on_a_large_map():
    g = torch.Generator().manual_seed(1)
    preds = torch.randn(2, 64, 96, 96, generator=g).contiguous(memory_format=torch.channels_last)
    target = torch.randn(2, 64, 96, 96, generator=g).contiguous(memory_format=torch.channels_last)
    exact = (preds.double() - target.double()).abs().mean((1, 2, 3))
    values, _ = l1_distance_then_relu(preds.clone(), target.clone())
    assert values.dtype == torch.float32
    assert_float32_close(values, exact, terms=64 * 96 * 96)


def test_l1_then_relu_errors():
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"Expected float32 or float64 feature maps of one shape, dtype and"):
        l1_distance_then_relu(x, torch.randn(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"Expected float32 or float64 feature maps .* torch.bfloat16"):
        l1_distance_then_relu(x.bfloat16(), x.bfloat16())
    with pytest.raises(ValueError, match=r"Expected float32 or float64 feature maps .* layout"):
        l1_distance_then_relu(x, x.contiguous(memory_format=torch.channels_last))
    with pytest.raises(
        ValueError, match=r"Expected a `target` that does not require grad: it is overwritten"
    ):
        l1_distance_then_relu(x, x.clone().requires_grad_(True))


def test_l1_then_relu_refuses_a_pooling_whose_windows_overlap():
    x = torch.randn(1, 2, 6, 6)
    with pytest.raises(ValueError, match=r"Expected `pool` to have windows that do not overlap"):
        l1_distance_then_relu(x.clone(), x.clone(), pool=torch.nn.MaxPool2d(3, 2))
    with pytest.raises(ValueError, match=r"Expected `pool` to have windows that do not overlap"):
        l1_distance_then_relu(x.clone(), x.clone(), pool=torch.nn.MaxPool2d(2, 2, dilation=2))
