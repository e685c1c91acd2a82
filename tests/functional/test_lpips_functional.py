"""The LPIPS distance from feature lists: the package's formula, its gradient, its edge cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _numerics import assert_float32_close

from percep_lightning.functional import lpips as lpips_module
from percep_lightning.functional.lpips import lpips_distance, lpips_layer_map


def _package_formula(xs, ys, ws, spatial=False, size=None):
    """lpips 0.1.4 after the trunk: normalize_tensor, squared difference, lin conv, mean or upsample."""
    total = 0
    for x, y, w in zip(xs, ys, ws, strict=True):
        nx = x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + 1e-10)
        ny = y / (torch.sqrt(torch.sum(y**2, dim=1, keepdim=True)) + 1e-10)
        d = F.conv2d((nx - ny) ** 2, w)
        total = total + (
            F.interpolate(d, size=size, mode="bilinear", align_corners=False)
            if spatial
            else d.mean([2, 3], keepdim=True)
        )
    return total


def _features(dtype=torch.float32, n=2, channels_last=False):
    torch.manual_seed(0)
    xs = [torch.rand(n, 4, 6, 6, dtype=dtype), torch.rand(n, 5, 3, 3, dtype=dtype)]
    ys = [torch.rand_like(x) for x in xs]
    ws = [torch.rand(1, x.shape[1], 1, 1, dtype=dtype) for x in xs]
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
        ys = [y.contiguous(memory_format=torch.channels_last) for y in ys]
    return xs, ys, ws


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("spatial", [False, True])
def test_equals_package_formula(spatial, channels_last):
    xs, ys, ws = _features(channels_last=channels_last)
    out = lpips_distance(xs, ys, ws, spatial=spatial, output_size=(12, 12))
    expected = _package_formula(*([t.double() for t in ts] for ts in (xs, ys, ws)), spatial, (12, 12))
    assert_float32_close(out, expected, terms=4 * 6 * 6)  # the largest layer's channels x positions
    assert out.shape == ((2, 1, 12, 12) if spatial else (2, 1, 1, 1))


def test_zero_and_finite_gradient_at_equal_features_with_zero_vectors():
    xs, _, ws = _features()
    xs[0][:, :, 0, 0] = 0  # a position where every channel is 0: the package's gradient is NaN there
    xs = [x.requires_grad_(True) for x in xs]
    out = lpips_distance(xs, [x.detach().clone() for x in xs], ws)
    assert (out == 0).all()
    out.sum().backward()
    for x in xs:
        assert torch.isfinite(x.grad).all() and (x.grad == 0).all()


def test_gradcheck_float64_all_inputs():
    xs, ys, ws = _features(torch.float64, n=1)
    x, y, w = xs[0].requires_grad_(True), ys[0].requires_grad_(True), ws[0].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: lpips_layer_map(a, b, c), (x, y, w))
    assert torch.autograd.gradcheck(lambda a: lpips_distance([a], [ys[0]], [ws[0]]), (x,))
    assert torch.autograd.gradcheck(
        lambda a: lpips_distance([a], [ys[0]], [ws[0]], spatial=True, output_size=(7, 9)), (x,)
    )


def test_float32_under_autocast():
    xs, ys, ws = _features()
    xs, ys = [x.bfloat16() for x in xs], [y.bfloat16() for y in ys]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lpips_distance(xs, ys, ws)
    assert out.dtype == torch.float32
    # float32 accuracy on the bfloat16 inputs, not bfloat16's 8-bit mantissa
    expected = lpips_distance([x.double() for x in xs], [y.double() for y in ys], [w.double() for w in ws])
    assert_float32_close(out, expected, terms=4 * 6 * 6)


def test_errors():
    xs, ys, ws = _features()
    with pytest.raises(
        ValueError, match=r"Expected as many `preds_features`, `target_features` and `lin_weights`"
    ):
        lpips_distance(xs, ys[:1], ws)
    with pytest.raises(
        ValueError, match=r"Expected `output_size` \(the image's \(H, W\)\) with `spatial=True`"
    ):
        lpips_distance(xs, ys, ws, spatial=True)
    with pytest.raises(
        ValueError, match=r"Expected 4-D feature maps of the same shape, but got \(2, 4, 6, 6\) and"
    ):
        lpips_layer_map(xs[0], ys[1], ws[0])
    with pytest.raises(
        ValueError, match=r"Expected one lin weight per channel \(4\), but got a weight of shape"
    ):
        lpips_layer_map(xs[0], ys[0], ws[1])


@pytest.mark.parametrize("device_path", ["blocked", "whole"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_layer_map_and_every_gradient_equal_the_package_formula_in_float64(
    monkeypatch, device_path, channels_last
):
    # 20 channels x 7 x 9 pixels: blocks of 3 pixels (channels-last rows or columns of one image)
    monkeypatch.setattr(lpips_module, "_BLOCK", 60)
    monkeypatch.setattr(lpips_module, "_BLOCKED_BYTES", 0)
    if device_path == "whole":  # the path off the CPU, forced here
        monkeypatch.setattr(lpips_module._Blocks, "usable", staticmethod(lambda x, y: False))
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(2, 20, 7, 9, dtype=torch.float64, generator=g) for _ in range(2))
    y[1, :, 0, :4] = x[1, :, 0, :4]  # equal features at some positions
    w = torch.rand(1, 20, 1, 1, dtype=torch.float64, generator=g)
    upstream = torch.randn(2, 1, 7, 9, dtype=torch.float64, generator=g)
    layout = torch.channels_last if channels_last else torch.contiguous_format

    leaves = [t.clone().requires_grad_(True) for t in (x, y, w)]
    # the package's layer, with the epsilon under the square root as ours (see the module docstring)
    unit = [f / (f.square().sum(1, keepdim=True) + 1e-20).sqrt() for f in leaves[:2]]
    (F.conv2d((unit[0] - unit[1]) ** 2, leaves[2]) * upstream).sum().backward()
    ours = [t.contiguous(memory_format=layout).requires_grad_(True) for t in (x, y)] + [
        w.clone().requires_grad_(True)
    ]
    out = lpips_layer_map(*ours)
    (out * upstream).sum().backward()

    expected = F.conv2d((x / x.norm(dim=1, keepdim=True) - y / y.norm(dim=1, keepdim=True)) ** 2, w)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)
    for mine, theirs, name in zip(ours, leaves, ("x", "y", "weight"), strict=True):
        torch.testing.assert_close(
            mine.grad, theirs.grad, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_disposable_target_takes_the_gradient_and_changes_nothing_else(monkeypatch):
    monkeypatch.setattr(lpips_module, "_BLOCK", 60)
    monkeypatch.setattr(lpips_module, "_BLOCKED_BYTES", 0)
    g = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(2, 20, 7, 9, generator=g).contiguous(memory_format=torch.channels_last) for _ in range(2)
    )
    w = torch.rand(1, 20, 1, 1, generator=g)
    grads, values = [], []
    for disposable in (False, True):
        leaf, target = x.clone().requires_grad_(True), y.clone()
        out = lpips_layer_map(leaf, target, w, disposable_target=disposable)
        out.sum().backward()
        grads.append(leaf.grad)
        values.append(out.detach())
        assert torch.equal(target, y) != disposable  # only a disposable target is overwritten
    assert torch.equal(values[0], values[1]) and torch.equal(grads[0], grads[1])
