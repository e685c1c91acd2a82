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
        layer = lpips_layer_map(x, y, w, eps=eps)
        if spatial:
            layer = F.interpolate(layer, size=tuple(output_size), mode="bilinear", align_corners=False)
        else:
            layer = layer.mean((2, 3), keepdim=True)
        total = layer if total is None else total + layer
    return total


def lpips_layer_map(preds: Tensor, target: Tensor, weight: Tensor, *, eps: float = EPS) -> Tensor:
    """One layer's LPIPS map: the lin-weighted squared difference of the unit-normalised features.

    Args:
        preds: ``(N, C, H, W)`` features.
        target: ``(N, C, H, W)`` features.
        weight: ``(1, C, 1, 1)`` or ``(C,)`` lin weights.
        eps: the normalisation epsilon.

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
        return _LayerMap.apply(preds.to(dtype), target.to(dtype), weight.to(dtype).reshape(-1), eps)


def _inv_norm(x: Tensor, eps: float) -> Tensor:
    """``1 / sqrt(|x|^2 + eps^2)`` over the channel dimension, ``(N, 1, H, W)``."""
    if _channels_last(x):
        squared = torch.linalg.vector_norm(x, dim=1, keepdim=True).square_()  # one pass over contiguous rows
    else:
        squared = (x * x).sum(1, keepdim=True)  # several times faster than vector_norm in this layout
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


class _LayerMap(torch.autograd.Function):
    """``sum_c w_c (x / |x| - y / |y|)_c^2`` with a hand-written backward (see the module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, x: Tensor, y: Tensor, weight: Tensor, eps: float
    ) -> Tensor:
        need_x, need_y, need_w = ctx.needs_input_grad[:3]
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
        return grad_x, grad_y, grad_w, None
