"""CFSD from feature maps: StyleID's PatchSimi value, chunking, the custom backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _numerics import assert_float32_close

from percep_lightning.functional.cfsd import cfsd


def _patch_simi(stylized, content):
    """StyleID's PatchSimi on one feature layer, full (hw)^2 matrices (written out for the test)."""

    def similarity(feats):
        b, c, h, w = feats.shape
        f = torch.transpose(feats, 1, 3).reshape(b, h * w, c).div(c)
        return torch.bmm(f, f.transpose(1, 2))

    log_q = F.log_softmax(similarity(stylized), dim=-1).reshape(stylized.shape[0], -1)
    p = F.softmax(similarity(content), dim=-1).reshape(content.shape[0], -1)
    return F.kl_div(log_q, p, reduction="batchmean")


def _pair(b=2, c=16, h=9, w=7, dtype=torch.float32, scale=4.0):
    torch.manual_seed(0)
    return torch.rand(b, c, h, w, dtype=dtype) * scale, torch.rand(b, c, h, w, dtype=dtype) * scale


def test_equals_reference_per_pair_and_mean():
    stylized, content = _pair()
    per_pair = cfsd(stylized, content, reduction="none")
    # The reference evaluated in float64 on the same features: in float32 it is itself ~1e-5 off.
    expected = torch.stack(
        [_patch_simi(stylized[i : i + 1].double(), content[i : i + 1].double()) for i in range(2)]
    ).float()
    torch.testing.assert_close(per_pair, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(cfsd(stylized, content), expected.mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(cfsd(stylized, content, reduction="sum"), expected.sum(), rtol=1e-5, atol=0)
    # and in float64 both are the same number
    torch.testing.assert_close(
        cfsd(stylized.double(), content.double(), chunk_size=10, reduction="none"),
        expected.double(),
        rtol=1e-6,
        atol=0,
    )
    torch.testing.assert_close(
        cfsd(stylized.double(), content.double(), chunk_size=10, reduction="none"),
        torch.stack(
            [_patch_simi(stylized[i : i + 1].double(), content[i : i + 1].double()) for i in range(2)]
        ),
        rtol=1e-12,
        atol=0,
    )


@pytest.mark.parametrize("chunk_size", [1, 5, 63, 64, 1000])
def test_chunking_does_not_change_value_or_gradient(chunk_size):
    stylized, content = _pair()
    reference = stylized.double().requires_grad_(True)
    expected = _patch_simi(reference, content.double())  # batchmean over b = 2 -> gradient of the mean
    expected.backward()
    x = stylized.clone().requires_grad_(True)
    value = cfsd(x, content, chunk_size=chunk_size)
    value.backward()
    # Every chunking is within float32 round-off of the float64 reference (rows of h*w = 63 entries, c = 16).
    assert_float32_close(value, expected.detach(), terms=63 * 16)
    assert_float32_close(x.grad, reference.grad, terms=63 * 16)


def test_gradcheck_float64():
    stylized, content = _pair(b=2, c=3, h=2, w=3, dtype=torch.float64, scale=3.0)
    x = stylized.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: cfsd(a, content, chunk_size=4, reduction="none"), (x,))
    assert torch.autograd.gradcheck(lambda a: cfsd(a.mul(2).relu(), content[:1], chunk_size=5), (x[:1],))


def test_zero_and_finite_gradient_at_equal_features():
    stylized, _ = _pair()
    x = stylized.clone().requires_grad_(True)
    value = cfsd(x, stylized, chunk_size=8)
    assert value == 0
    value.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() < 1e-6


def test_content_gets_no_gradient_and_autocast_stays_float32():
    stylized, content = _pair()
    content.requires_grad_(True)
    x = stylized.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = cfsd(x, content)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, cfsd(x.detach().float(), content.detach()), rtol=1e-6, atol=0)
    value.backward()
    assert content.grad is None and torch.isfinite(x.grad.float()).all()


def test_memory_is_bounded_by_the_chunk():
    # 32x32 features: 1024 rows; with chunk_size=64 no buffer has more than 64 * 1024 entries.
    stylized, content = _pair(b=1, c=8, h=32, w=32)
    x = stylized.clone().requires_grad_(True)
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        value = cfsd(x, content, chunk_size=64)
    value.backward()
    assert max(sizes) <= 8 * 1024  # only the (1, 1024, 8) patch features are kept for the backward
    # and the value equals the float64 one to float32 round-off (rows of 1024 entries, c = 8)
    expected = cfsd(stylized.double(), content.double(), chunk_size=1024)
    assert_float32_close(value, expected, terms=1024 * 8)


def test_errors():
    x = torch.rand(1, 4, 3, 3)
    with pytest.raises(
        ValueError, match=r"Expected `preds_features` and `content_features` to have the same shape"
    ):
        cfsd(x, torch.rand(1, 4, 3, 4))
    with pytest.raises(
        ValueError, match=r"Expected 4-D feature maps \(b, c, h, w\), but got shape \(4, 3, 3\)"
    ):
        cfsd(x[0], x[0])
    with pytest.raises(ValueError, match=r"Expected `chunk_size` to be >= 1, but got 0"):
        cfsd(x, x, chunk_size=0)
    with pytest.raises(ValueError, match=r"Expected `preds_features` to be finite"):
        cfsd(x * float("nan"), x)
    with pytest.raises(TypeError, match=r"Expected `content_features` to be a floating-point tensor"):
        cfsd(x, x.long())
    with pytest.raises(ValueError, match=r"Expected `reduction` to be one of"):
        cfsd(x, x, reduction="batchmean")


def test_far_apart_rows_fall_back_to_the_direct_formula():
    # Similarities of ~1e4: expm1 overflows in float32, the direct log-softmax difference is used.
    stylized, content = _pair(b=1, c=4, h=4, w=4, scale=100.0)
    x = stylized.clone().requires_grad_(True)
    value = cfsd(x, content, chunk_size=5)
    value.backward()
    expected = _patch_simi(stylized.double(), content.double())
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    torch.testing.assert_close(value.double(), expected, rtol=1e-4, atol=0)
    x64 = stylized.double().requires_grad_(True)
    _patch_simi(x64, content.double()).backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-3, atol=1e-6)


def test_backward_inside_bf16_autocast():
    # The backward of a loss often runs inside the same autocast region as its forward.
    g = torch.Generator().manual_seed(0)
    preds = torch.randn(1, 8, 6, 5, generator=g, requires_grad=True)
    content = torch.randn(1, 8, 6, 5, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = cfsd(preds, content, chunk_size=7)
        value.backward()
    reference = preds.detach().clone().requires_grad_(True)
    cfsd(reference, content, chunk_size=7).backward()
    assert preds.grad.dtype == torch.float32
    torch.testing.assert_close(preds.grad, reference.grad)
