"""Per-pixel losses (L1, L2, Charbonnier) and the peak signal-to-noise ratio.

Every function returns one value per image (the mean over channels and pixels) before the
``reduction`` over the batch, so ``reduction="mean"`` equals the mean over all elements and
``reduction="none"`` gives a ``(N,)`` tensor. The arithmetic runs in float32 (float64 for float64
inputs) with autocast disabled.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from percep_lightning.functional._checks import (
    check_choice,
    check_pair,
    check_positive,
    check_reduction,
    reduce,
)
from percep_lightning.functional._paired import prepare_pair
from percep_lightning.functional.inputs import Channel, check_tensors

__all__ = ["PIXEL_LOSS_KINDS", "pixel_loss", "psnr"]

PIXEL_LOSS_KINDS: tuple[str, ...] = ("l1", "l2", "charbonnier")
"""The values accepted by the ``kind`` argument of :func:`pixel_loss`."""

Reduction = Literal["mean", "sum", "none"]


def _compute_dtype(preds: Tensor, target: Tensor) -> torch.dtype:
    return torch.promote_types(torch.promote_types(preds.dtype, target.dtype), torch.float32)


def pixel_loss(
    preds: Tensor,
    target: Tensor,
    *,
    kind: Literal["l1", "l2", "charbonnier"] = "l1",
    eps: float = 1e-3,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Mean per-pixel distance between two batches of images.

    .. math::
        \\ell_1 = |x - y|, \\qquad \\ell_2 = (x - y)^2, \\qquad
        \\ell_\\text{charbonnier} = \\sqrt{(x - y)^2 + \\varepsilon^2}

    averaged over channels and pixels of each image. The Charbonnier loss is a differentiable L1 with
    the convention of LapSRN and EDVR (``eps`` is added squared, so it is in pixel units and
    ``pixel_loss(x, x, kind="charbonnier") == eps``). BasicSR's ``CharbonnierLoss(eps=1e-12)`` adds its
    ``eps`` unsquared: ``eps=1e-6`` here reproduces it. The gradient is finite everywhere, including at
    ``preds == target`` (where the L1 gradient is 0).

    Args:
        preds: the predicted images.
        target: the reference images.
        kind: ``"l1"`` (mean absolute error), ``"l2"`` (mean squared error) or ``"charbonnier"``.
        eps: the Charbonnier smoothing constant, in pixel units; ignored by the other kinds.
        reduction: ``"mean"`` or ``"sum"`` of the per-image values, or ``"none"`` for one value per image.
        validate_args: check the input tensors (type, shape, finite values); ``False`` skips these checks.

    Returns:
        The loss, float32 (float64 for float64 inputs).

    Raises:
        TypeError: if ``preds`` or ``target`` is not a floating-point tensor.
        ValueError: on different shapes, a rank other than 4, NaN/Inf values, an unknown ``kind`` or
            ``reduction``, or ``eps <= 0``.

    Shape:
        - ``preds``, ``target``: ``(N, C, H, W)``
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``

    Example:
        >>> import torch
        >>> from percep_lightning.functional.pixel import pixel_loss
        >>> target = torch.zeros(2, 3, 4, 4)
        >>> pixel_loss(target + 0.5, target)
        tensor(0.5000)
        >>> pixel_loss(target + 0.5, target, kind="l2", reduction="none")
        tensor([0.2500, 0.2500])
        >>> pixel_loss(target, target, kind="charbonnier", eps=1e-3)
        tensor(0.0010)
    """
    check_choice(kind, "kind", PIXEL_LOSS_KINDS)
    check_positive(eps, "eps")
    check_reduction(reduction)
    if validate_args:
        check_pair(preds, target, finite=False)
    dtype = _compute_dtype(preds, target)
    with torch.autocast(device_type=preds.device.type, enabled=False):
        preds, target = preds.to(dtype), target.to(dtype)
        if kind != "charbonnier" and reduction != "none":
            # Every image has the same size, so the mean of per-image means is the global mean: one fused
            # kernel forward and backward instead of four element-wise passes.
            fused = F.l1_loss if kind == "l1" else F.mse_loss
            value = fused(preds, target)
            if reduction == "sum":
                value = value * preds.shape[0]
        else:
            diff = preds - target
            if kind == "l1":
                values = diff.abs()
            elif kind == "l2":
                values = diff.square()
            else:
                values = diff.square().add_(eps**2).sqrt_()
            value = reduce(values.flatten(1).mean(dim=1), reduction)
    if validate_args and not bool(torch.isfinite(value).all()):
        # NaN/Inf inputs surface as a non-finite loss: name the culprit only then (one scalar check
        # per call instead of a pass over both images).
        check_pair(preds, target)
    return value


def psnr(
    preds: Tensor,
    target: Tensor,
    *,
    data_range: float | None = None,
    channel: Channel = "rgb",
    crop_border: int = 0,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Peak signal-to-noise ratio in decibels, per image, in the three ways super-resolution papers report it.

    .. math::
        \\operatorname{PSNR}(x, y) = 10 \\log_{10} \\frac{L^2}{\\operatorname{MSE}(x, y)}

    ``channel`` chooses what the mean squared error is taken over:

    * ``"rgb"`` (default): all channels and pixels of each image (scikit-image's
      ``peak_signal_noise_ratio`` on one image; BasicSR's ``calculate_psnr`` without ``test_y_channel``);
    * ``"y"``: the ITU-R BT.601 luma of MATLAB's ``rgb2ycbcr`` (:func:`~percep_lightning.functional.rgb_to_y`,
      in ``[16, 235]`` on the 255 scale), compared with the same ``L``: BasicSR's ``test_y_channel=True``,
      the number most super-resolution papers publish;
    * ``"per_channel"``: the mean of the PSNRs of each channel.

    ``crop_border=s`` first removes ``s`` pixels from every side (by convention ``s`` is the upscaling
    factor). Identical images have an infinite PSNR, so ``reduction="mean"`` over a batch containing one
    is ``inf``; the gradient there is 0 (never NaN).

    Args:
        preds: the predicted images, ``uint8`` or floating point.
        target: the reference images, the same shape and dtype kind.
        data_range: the value range ``L`` of the images (``1.0`` for [0, 1], ``255.0`` for [0, 255],
            ``2.0`` for [-1, 1]); ``None`` means 255 for ``uint8`` images and 1.0 otherwise.
        channel: ``"rgb"``, ``"y"`` (RGB or grey images; grey counts as R = G = B) or ``"per_channel"``.
        crop_border: pixels removed from every side before the comparison.
        reduction: ``"mean"`` or ``"sum"`` of the per-image values, or ``"none"`` for one value per image.
        validate_args: check the input values for NaN/Inf; ``False`` skips this pass. Types, shapes and
            scalar arguments are always checked.

    Returns:
        The PSNR in dB (higher is better), float32 (float64 for float64 inputs).

    Raises:
        TypeError: if ``preds`` or ``target`` is neither ``uint8`` nor floating point, or only one is ``uint8``,
            or if ``crop_border`` is not an integer.
        ValueError: on different shapes, a rank other than 4, NaN/Inf values, ``data_range <= 0``, an
            unknown ``channel`` or ``reduction`` (the message lists the choices), ``channel="y"`` on
            images without 3 or 1 channels, or a ``crop_border`` that is negative or leaves no pixels.

    Shape:
        - ``preds``, ``target``: ``(N, C, H, W)``
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``

    Example:
        >>> import torch
        >>> from percep_lightning.functional.pixel import psnr
        >>> target = torch.zeros(2, 3, 4, 4)
        >>> psnr(target + 0.1, target)
        tensor(20.)
        >>> psnr(target, target, reduction="none")
        tensor([inf, inf])
        >>> psnr(torch.full((1, 3, 8, 8), 10, dtype=torch.uint8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
        ...      channel="y", crop_border=2)
        tensor(29.4527)
    """
    check_tensors(preds=preds, target=target)
    check_reduction(reduction)
    with torch.autocast(device_type=preds.device.type, enabled=False):
        x, y, value_range = prepare_pair(
            preds,
            target,
            data_range=data_range,
            channel=channel,
            crop_border=crop_border,
            validate_args=validate_args,
        )
        squared = (x - y).square()
        if channel == "per_channel":
            values = _decibels(squared.flatten(2).mean(dim=2), value_range).mean(dim=1)
        else:
            values = _decibels(squared.flatten(1).mean(dim=1), value_range)
        return reduce(values, reduction)


def _decibels(mse: Tensor, data_range: float) -> Tensor:
    """``10 log10(L^2 / mse)``, ``inf`` where ``mse == 0`` with a zero (not NaN) gradient there."""
    positive = mse > 0
    # log of a placeholder where mse == 0, so that the gradient there is 0 instead of NaN
    values = 10.0 * torch.log10(data_range**2 / torch.where(positive, mse, torch.ones_like(mse)))
    return torch.where(positive, values, torch.full_like(values, float("inf")))
