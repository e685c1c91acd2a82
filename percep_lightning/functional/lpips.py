"""LPIPS distance (Zhang et al. 2018, ``lpips`` 0.1.4, version v0.1) from two lists of feature maps.

Per layer ``l`` with features :math:`x, y \\in \\mathbb{R}^{C_l \\times H_l \\times W_l}`:

.. math::
    \\hat x = \\frac{x}{\\sqrt{\\sum_c x_c^2 + \\varepsilon^2}}, \\quad
    d_l(h, w) = \\sum_c w_{l,c} \\, (\\hat x_c - \\hat y_c)^2(h, w)

then the spatial mean of :math:`d_l` (or its bilinear upsampling to the image size, ``spatial=True``),
summed over layers. The ``lpips`` package divides by :math:`\\sqrt{\\sum_c x_c^2} + \\varepsilon`; with
the epsilon under the square root the value is the same to float precision on real features, and the
gradient stays finite where a feature vector is zero (the package's gradient is NaN there, ``0 / 0``).

Speed: the normalisation, the squared difference and the weighted channel sum of a layer form one
custom autograd function whose backward is written out (one pass over the saved maps instead of the
dozen element-wise operations autograd would chain); the lin layer is a matrix-vector product over a
view of the maps, in either memory format (each loss runs its trunk in the layout faster on the device).
On the CPU, large maps are walked in cache-sized blocks so that no full-size temporary is allocated.
Everything runs in float32 (float64 for float64 features) with autocast disabled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["lpips_distance", "lpips_layer_map"]

EPS = 1e-10
"""The epsilon of the ``lpips`` package's ``normalize_tensor``."""


def lpips_distance(
    preds_features: Sequence[Tensor],
    target_features: Sequence[Tensor],
    lin_weights: Sequence[Tensor],
    *,
    spatial: bool = False,
    output_size: tuple[int, int] | None = None,
    eps: float = EPS,
    disposable_target: bool = False,
) -> Tensor:
    """The LPIPS distance between two images given their trunk features and the calibrated lin weights.

    Args:
        preds_features: one ``(N, C_l, H_l, W_l)`` map per layer, for the first images.
        target_features: the same layers for the second images (same shapes).
        lin_weights: one non-negative weight per channel and layer, each ``(1, C_l, 1, 1)`` (the shape of
            :func:`~percep_lightning.backbones.lpips_weights.lpips_linear_weights`) or ``(C_l,)``.
        spatial: ``False`` averages each layer's map over space; ``True`` upsamples it bilinearly
            (``align_corners=False``) to ``output_size`` and returns the distance map.
        output_size: ``(H, W)`` of the map when ``spatial=True`` (the input image size).
        eps: the normalisation epsilon.
        disposable_target: the caller has no further use for ``target_features`` (constants made for
            this call): the backward may then write the gradient of ``preds_features`` into their
            storage instead of allocating it.

    Returns:
        ``(N, 1, 1, 1)``, or ``(N, 1, H, W)`` with ``spatial=True``, as the ``lpips`` package; float32
        (float64 for float64 features).

    Raises:
        ValueError: if the three sequences differ in length or are empty, a pair of maps differs in shape
            or is not 4-D, a weight does not match its layer's channels, or ``spatial=True`` comes
            without ``output_size``.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.lpips import lpips_distance
        >>> x = [torch.rand(2, 4, 8, 8), torch.rand(2, 6, 4, 4)]
        >>> w = [torch.ones(1, 4, 1, 1), torch.ones(1, 6, 1, 1)]
        >>> lpips_distance(x, x, w).flatten()
        tensor([0., 0.])
        >>> lpips_distance(x, [torch.rand_like(f) for f in x], w, spatial=True, output_size=(16, 16)).shape
        torch.Size([2, 1, 16, 16])
    """
    if not (len(preds_features) == len(target_features) == len(lin_weights)) or not preds_features:
        raise ValueError(
            "Expected as many `preds_features`, `target_features` and `lin_weights` (at least one), but got "
            f"{len(preds_features)}, {len(target_features)} and {len(lin_weights)}."
        )
    if spatial and output_size is None:
        raise ValueError("Expected `output_size` (the image's (H, W)) with `spatial=True`, but got None.")
    total: Tensor | None = None
    for x, y, w in zip(preds_features, target_features, lin_weights, strict=True):
        layer = lpips_layer_map(x, y, w, eps=eps, disposable_target=disposable_target)
        if spatial:
            layer = F.interpolate(layer, size=tuple(output_size), mode="bilinear", align_corners=False)
        else:
            layer = layer.mean((2, 3), keepdim=True)
        total = layer if total is None else total + layer
    return total


def lpips_layer_map(
    preds: Tensor, target: Tensor, weight: Tensor, *, eps: float = EPS, disposable_target: bool = False
) -> Tensor:
    """One layer's LPIPS map: the lin-weighted squared difference of the unit-normalised features.

    Args:
        preds: ``(N, C, H, W)`` features.
        target: ``(N, C, H, W)`` features.
        weight: ``(1, C, 1, 1)`` or ``(C,)`` lin weights.
        eps: the normalisation epsilon.
        disposable_target: ``target`` may be overwritten by the backward (see :func:`lpips_distance`).

    Returns:
        ``(N, 1, H, W)``, float32 (float64 if any input is float64).

    Raises:
        ValueError: on maps of different shapes or not 4-D, or a weight of the wrong size.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.lpips import lpips_layer_map
        >>> x, y = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1), torch.tensor([4.0, 3.0]).view(1, 2, 1, 1)
        >>> lpips_layer_map(x, y, torch.ones(2)).flatten()  # (0.6 - 0.8)^2 + (0.8 - 0.6)^2
        tensor([0.0800])
    """
    if preds.shape != target.shape or preds.ndim != 4:
        raise ValueError(
            "Expected 4-D feature maps of the same shape, but got "
            f"{tuple(preds.shape)} and {tuple(target.shape)}."
        )
    if weight.numel() != preds.shape[1]:
        raise ValueError(
            f"Expected one lin weight per channel ({preds.shape[1]}), but got a weight of shape "
            f"{tuple(weight.shape)}."
        )
    dtype = torch.promote_types(torch.promote_types(preds.dtype, target.dtype), torch.float32)
    with torch.autocast(preds.device.type, enabled=False):
        disposable = disposable_target and target.dtype == dtype and not target.requires_grad
        return _LayerMap.apply(
            preds.to(dtype), target.to(dtype), weight.to(dtype).reshape(-1), eps, disposable
        )


_BLOCK = 1 << 20
"""Feature elements per block of the CPU path of :class:`_LayerMap` (4 MiB of float32)."""
_BLOCKED_BYTES = 1 << 24
"""The smallest map (16 MiB) that takes the blocked CPU path. Smaller maps are allocated from memory the
allocator keeps and reuses, so the whole-map path, with fewer passes, is faster for them (AlexNet's and
SqueezeNet's layers at 256x256); larger ones get fresh pages on every allocation (VGG's first layers)."""


def _inv_norm(x: Tensor, eps: float, channels: int = 1, out: Tensor | None = None) -> Tensor:
    """``1 / sqrt(|x|^2 + eps^2)`` over dimension ``channels`` (kept, of size 1)."""
    if x.stride(channels) == 1:  # channels contiguous: one pass over the rows
        squared = torch.linalg.vector_norm(x, dim=channels, keepdim=True, out=out).square_()
    else:  # several times faster than vector_norm across strided channels
        squared = torch.sum(x * x, channels, keepdim=True, out=out)
    return squared.add_(eps * eps).rsqrt_()


def _channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _channel_sum(x: Tensor, weight: Tensor) -> Tensor:
    """``sum_c weight[c] * x[:, c]`` as ``(N, 1, H, W)``: a matrix-vector product over a view of ``x``."""
    n, c, h, w = x.shape
    if _channels_last(x):
        return (
            torch.mv(x.permute(0, 2, 3, 1).reshape(n * h * w, c), weight).view(n, h, w, 1).permute(0, 3, 1, 2)
        )
    return torch.matmul(weight.view(1, 1, c), x.reshape(n, c, h * w)).view(n, 1, h, w)


def _unit_backward(grad_unit: Tensor, unit: Tensor, inv_norm: Tensor) -> Tensor:
    """Gradient through ``x -> x / |x|``: ``(g - u <u, g>) / |x|``, computed in place in ``grad_unit``."""
    dot = (grad_unit * unit).sum(1, keepdim=True)
    return grad_unit.addcmul_(unit, dot, value=-1).mul_(inv_norm)


class _Blocks:
    """Cache-sized blocks of ``(N, C, H, W)`` maps laid out like ``like``, each a 2-D view.

    Channels-last maps become ``(rows, C)`` blocks of whole pixels (channel dimension 1); contiguous
    maps ``(C, columns)`` blocks of one image (channel dimension 0). :meth:`of` cuts any map of the same
    layout and ``N, H, W`` (``C`` may be 1: the per-pixel maps) into the same blocks.
    """

    def __init__(self, like: Tensor) -> None:
        n, c, h, w = like.shape
        self.last = _channels_last(like)
        self.dim = 1 if self.last else 0
        self.step = max(1, _BLOCK // c)
        self.n, self.pixels = n, h * w

    @staticmethod
    def usable(x: Tensor, y: Tensor) -> bool:
        """The blocked path runs on the CPU for two large dense maps of one layout."""
        return (
            x.device.type == "cpu"
            and x.numel() * x.element_size() >= _BLOCKED_BYTES
            and x.stride() == y.stride()
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
        )

    def of(self, t: Tensor) -> list[Tensor]:
        c = t.shape[1]
        if self.last:
            rows = t.permute(0, 2, 3, 1).reshape(-1, c)
            return [rows[r : r + self.step] for r in range(0, rows.shape[0], self.step)]
        cols = t.reshape(self.n, c, self.pixels)
        return [
            cols[i, :, j : j + self.step] for i in range(self.n) for j in range(0, self.pixels, self.step)
        ]

    def per_channel(self, weight: Tensor) -> Tensor:
        """``weight`` shaped to broadcast along the channel dimension of a block."""
        return weight.view(1, -1) if self.last else weight.view(-1, 1)

    def channel_sum(self, block: Tensor, weight: Tensor, out: Tensor) -> Tensor:
        """``sum_c weight[c] * block[c]`` for each pixel, written into ``out`` (a block of a 1-channel map)."""
        return torch.mv(block if self.last else block.t(), weight, out=out.view(-1))


def _scratch(blocks: list[Tensor], count: int) -> list[Tensor]:
    """``count`` reusable buffers as large as the largest block."""
    size = max(b.numel() for b in blocks)
    return [torch.empty(size, dtype=blocks[0].dtype, device=blocks[0].device) for _ in range(count)]


def _as(buffer: Tensor, block: Tensor) -> Tensor:
    return buffer[: block.numel()].view(block.shape)


class _LayerMap(torch.autograd.Function):
    """``sum_c w_c (x / |x| - y / |y|)_c^2`` with a hand-written backward (see the module docstring).

    On the CPU, for maps of at least :data:`_BLOCKED_BYTES`, the forward and backward walk the maps in
    cache-sized blocks (:class:`_Blocks`) and save the two maps and their per-pixel inverse norms: the
    unit maps, their difference and its square live in a few block-sized buffers, so no full-size
    temporary is allocated (a fresh allocation of a large map costs more than the arithmetic on it,
    so recomputing the unit maps in the backward is cheaper than saving them). Elsewhere the whole-map
    path runs.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, x: Tensor, y: Tensor, weight: Tensor, eps: float, disposable: bool
    ) -> Tensor:
        need_x, need_y, need_w = ctx.needs_input_grad[:3]
        ctx.blocked, ctx.disposable = _Blocks.usable(x, y), disposable
        if ctx.blocked:
            return _blocked_forward(ctx, x, y, weight, eps)
        inv_x, inv_y = _inv_norm(x, eps), _inv_norm(y, eps)
        unit_x, unit_y = x * inv_x, y * inv_y
        # Rounded separately, equal features give an exactly zero difference (a fused addcmul would not).
        diff = unit_x - unit_y if need_y else torch.sub(unit_x, unit_y, out=unit_y)
        out = _channel_sum(diff * diff, weight)
        ctx.save_for_backward(
            diff if (need_x or need_y or need_w) else None,
            weight if (need_x or need_y) else None,
            unit_x if need_x else None,
            inv_x if need_x else None,
            unit_y if need_y else None,
            inv_y if need_y else None,
        )
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if ctx.blocked:
            return _blocked_backward(ctx, grad)
        diff, weight, unit_x, inv_x, unit_y, inv_y = ctx.saved_tensors
        need_x, need_y, need_w = ctx.needs_input_grad[:3]
        grad_x = grad_y = grad_w = None
        if need_x or need_y:
            # d out / d unit_x = 2 w_c diff_c, times the incoming gradient at each position.
            grad_unit = diff * (2 * weight).view(1, -1, 1, 1)
            grad_unit.mul_(grad)
            if need_x and need_y:
                grad_x = _unit_backward(grad_unit.clone(), unit_x, inv_x)
                grad_y = _unit_backward(grad_unit.neg_(), unit_y, inv_y)
            elif need_x:
                grad_x = _unit_backward(grad_unit, unit_x, inv_x)
            else:
                grad_y = _unit_backward(grad_unit.neg_(), unit_y, inv_y)
        if need_w:
            grad_w = (diff * diff * grad).sum((0, 2, 3))
        return grad_x, grad_y, grad_w, None, None


def _per_pixel(x: Tensor) -> Tensor:
    """An empty ``(N, 1, H, W)`` map in the layout of ``x``."""
    n, _, h, w = x.shape
    return torch.empty(n, 1, h, w, dtype=x.dtype, device=x.device).contiguous(
        memory_format=torch.channels_last if _channels_last(x) else torch.contiguous_format
    )


def _blocked_forward(ctx: FunctionCtx, x: Tensor, y: Tensor, weight: Tensor, eps: float) -> Tensor:
    blocks = _Blocks(x)
    xs, ys = blocks.of(x), blocks.of(y)
    out, inv_x, inv_y = _per_pixel(x), _per_pixel(x), _per_pixel(x)
    unit_x, unit_y = _scratch(xs, 2)
    for xb, yb, ob, ixb, iyb in zip(xs, ys, blocks.of(out), blocks.of(inv_x), blocks.of(inv_y), strict=True):
        ux = torch.mul(xb, _inv_norm(xb, eps, blocks.dim, out=ixb), out=_as(unit_x, xb))
        uy = torch.mul(yb, _inv_norm(yb, eps, blocks.dim, out=iyb), out=_as(unit_y, yb))
        diff = ux.sub_(uy)  # (rounded separately: equal features give an exactly zero difference)
        blocks.channel_sum(diff.square_(), weight, ob)
    ctx.save_for_backward(x, y, weight, inv_x, inv_y)
    return out


def _blocked_backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, y, weight, inv_x, inv_y = ctx.saved_tensors
    need_x, need_y, need_w = ctx.needs_input_grad[:3]
    blocks = _Blocks(x)
    xs = blocks.of(x)
    # (each block of y is read before that block of the gradient is written)
    grad_x = (y if ctx.disposable and not need_y else torch.empty_like(x)) if need_x else None
    grad_y = torch.empty_like(y) if need_y else None
    grad_w = torch.zeros_like(weight) if need_w else None
    twice_w = blocks.per_channel(2 * weight)
    unit_x, unit_y, diff, product = _scratch(xs, 4)
    pieces = zip(
        xs,
        blocks.of(y),
        blocks.of(inv_x),
        blocks.of(inv_y),
        blocks.of(
            grad.contiguous(memory_format=torch.channels_last if blocks.last else torch.contiguous_format)
        ),
        blocks.of(grad_x) if need_x else [None] * len(xs),
        blocks.of(grad_y) if need_y else [None] * len(xs),
        strict=True,
    )
    other = 0 if blocks.dim == 1 else 1
    for xb, yb, ixb, iyb, gb, gxb, gyb in pieces:
        ux, uy = torch.mul(xb, ixb, out=_as(unit_x, xb)), torch.mul(yb, iyb, out=_as(unit_y, yb))
        d = torch.sub(ux, uy, out=_as(diff, xb))
        if need_w:
            grad_w += torch.mul(d, d, out=_as(product, xb)).mul_(gb).sum(other)
        g = d.mul_(twice_w).mul_(gb)  # d out / d unit_x, times the incoming gradient
        if need_y:  # (x -> x / |x|)' applied to -g: (-g + u <u, g>) / |y|
            dot = torch.mul(g, uy, out=_as(product, xb)).sum(blocks.dim, keepdim=True)
            torch.mul(torch.addcmul(g, uy, dot, value=-1, out=_as(product, xb)), iyb, out=gyb).neg_()
        if need_x:
            dot = torch.mul(g, ux, out=_as(product, xb)).sum(blocks.dim, keepdim=True)
            torch.mul(g.addcmul_(ux, dot, value=-1), ixb, out=gxb)
    return grad_x, grad_y, grad_w, None, None
