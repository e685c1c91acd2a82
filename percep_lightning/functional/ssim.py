"""Structural similarity (SSIM, Wang et al. 2004) and its multi-scale version (MS-SSIM, Wang et al. 2003).

The conventions are those of pytorch-msssim, which published SSIM-trained models report:

* a separable Gaussian window (11 taps, sigma 1.5 by default) normalised to sum 1;
* "valid" filtering (no padding), so the SSIM map is ``kernel_size - 1`` pixels smaller than the image
  along each side;
* the map averaged over space, then over channels, giving one value per image;
* MS-SSIM: 2x2 average pooling between scales (odd sides padded, as ``F.avg_pool2d(..., padding=s % 2)``
  does), the contrast-structure term at every scale but the last and the full SSIM at the last, negative
  terms clamped to 0 before the fractional power, and the product of ``term ** weight``.

The values equal ``pytorch_msssim.ssim`` / ``ms_ssim`` and scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` up to float
rounding.

Speed: the five local statistics (``x``, ``y``, ``x*x``, ``y*y``, ``x*y``) go through one depthwise
separable convolution in the channels-last layout (several times faster on the CPU than the default
layout), and the gradient is computed in closed form by a custom autograd function that filters only
the three or four maps it needs, instead of back-propagating through a dozen element-wise operations.
Double backward (``create_graph=True``) recomputes the forward with ordinary differentiable operations.
Everything runs in float32 (float64 for float64 inputs) with autocast disabled: half-precision local
variances lose too many digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

from percep_lightning.functional._checks import check_positive, check_reduction, reduce
from percep_lightning.functional._paired import prepare_pair
from percep_lightning.functional._ssim_kernels import SSIMFunction, ssim_and_cs_maps
from percep_lightning.functional.inputs import Channel, check_int

__all__ = ["MS_SSIM_WEIGHTS", "gaussian_window", "ms_ssim", "ssim"]

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""The five scale weights of Wang et al. (2003), finest scale first."""

Reduction = Literal["mean", "sum", "none"]


def gaussian_window(
    kernel_size: int = 11,
    sigma: float = 1.5,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> Tensor:
    """The normalised 1-D Gaussian window that SSIM filters with, along each image axis in turn.

    .. math::
        g_i = \\frac{\\exp(-c_i^2 / 2\\sigma^2)}{\\sum_j \\exp(-c_j^2 / 2\\sigma^2)}, \\quad
        c_i = i - \\lfloor k / 2 \\rfloor, \\quad i = 0, \\dots, k - 1

    Args:
        kernel_size: the number of taps ``k``, odd and positive.
        sigma: the standard deviation in pixels, positive.
        dtype: the floating-point dtype of the result.
        device: the device of the result.

    Returns:
        The window, computed in float64 and cast to ``dtype``.

    Raises:
        TypeError: if ``kernel_size`` is not an integer.
        ValueError: if ``kernel_size`` is not odd and positive or ``sigma`` is not positive.

    Shape:
        - Output: ``(kernel_size,)``

    Example:
        >>> from percep_lightning.functional.ssim import gaussian_window
        >>> window = gaussian_window(11, 1.5)
        >>> window.shape, round(float(window.sum()), 6)
        (torch.Size([11]), 1.0)
    """
    check_window_args(kernel_size, sigma)
    coords = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    window = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (window / window.sum()).to(device=device, dtype=dtype)


def check_window_args(kernel_size: int, sigma: float) -> None:
    """Raise unless ``kernel_size`` is an odd positive integer (a TypeError if not an integer) and ``sigma > 0``."""
    check_int(kernel_size, "kernel_size")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"Expected `kernel_size` to be an odd positive integer, but got {kernel_size!r}.")
    check_positive(sigma, "sigma")


def check_ms_ssim_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """Validate MS-SSIM scale weights and return them as a tuple of floats.

    Raises:
        ValueError: unless ``weights`` is a non-empty sequence of positive numbers.
    """
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected `weights` to be a sequence of positive numbers, but got {weights!r}."
        ) from None
    if not values or not all(w > 0 for w in values):
        raise ValueError(
            f"Expected `weights` to be a non-empty sequence of positive numbers, but got {weights!r}."
        )
    return values


def _check_constants(data_range: float | None, k1: float, k2: float) -> None:
    if data_range is not None:
        check_positive(data_range, "data_range")
    check_positive(k1, "k1")
    check_positive(k2, "k2")


def _compute_dtype(preds: Tensor, target: Tensor) -> torch.dtype:
    """float64 if either input is float64, else float32 (half and bfloat16 are computed in float32)."""
    return torch.promote_types(torch.promote_types(preds.dtype, target.dtype), torch.float32)


# ---------------------------------------------------------------------------------------------------------
# Public functions.


@overload
def ssim(
    preds: Tensor,
    target: Tensor,
    *,
    data_range: float | None = None,
    kernel_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    channel: Channel = "rgb",
    crop_border: int = 0,
    input_range: Sequence[float] | None = None,
    return_map: Literal[False] = False,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor: ...


@overload
def ssim(
    preds: Tensor,
    target: Tensor,
    *,
    data_range: float | None = None,
    kernel_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    channel: Channel = "rgb",
    crop_border: int = 0,
    input_range: Sequence[float] | None = None,
    return_map: Literal[True],
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> tuple[Tensor, Tensor]: ...


def ssim(
    preds: Tensor,
    target: Tensor,
    *,
    data_range: float | None = None,
    kernel_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    channel: Channel = "rgb",
    crop_border: int = 0,
    input_range: Sequence[float] | None = None,
    return_map: bool = False,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """Structural similarity index (Wang et al. 2004), per image, with pytorch-msssim's conventions.

    .. math::
        \\operatorname{SSIM}(x, y) = \\frac{(2\\mu_x\\mu_y + C_1)(2\\sigma_{xy} + C_2)}
            {(\\mu_x^2 + \\mu_y^2 + C_1)(\\sigma_x^2 + \\sigma_y^2 + C_2)}, \\quad
        C_1 = (k_1 L)^2, \\; C_2 = (k_2 L)^2

    with local means, variances and covariance taken under a separable Gaussian window ("valid"
    filtering, no padding). The SSIM map is averaged over space, then over channels. Higher is more
    similar; ``ssim(x, x) == 1``. Computed in float32 (float64 for float64 inputs) with autocast disabled.

    As super-resolution papers report it (BasicSR's ``calculate_ssim``): ``crop_border=s`` removes ``s``
    pixels from every side first, and ``channel="y"`` compares the ITU-R BT.601 luma of MATLAB's
    ``rgb2ycbcr`` (:func:`~percep_lightning.functional.rgb_to_y`) instead of the colour channels.
    ``"rgb"`` and ``"per_channel"`` are the same thing for SSIM (it is defined per channel, then
    averaged); both are accepted so that one ``channel`` setting serves PSNR and SSIM.

    The luminance term depends on the absolute pixel level, so the images must lie in ``[0, L]``: values
    far outside it warn (once per calling line); images in another range, such as ``[-1, 1]``, are
    declared with ``input_range`` and shifted to start at 0 (``L = high - low``).

    Args:
        preds: the predicted images, ``uint8`` or floating point.
        target: the reference images, the same shape and dtype kind.
        data_range: the value range ``L`` of the images (``1.0`` for [0, 1], ``255.0`` for [0, 255]);
            ``None`` means 255 for ``uint8`` images, ``high - low`` of ``input_range`` when it is given, and
            1.0 otherwise.
        kernel_size: the number of Gaussian taps, odd.
        sigma: the Gaussian standard deviation in pixels.
        k1: the luminance stabilising constant.
        k2: the contrast stabilising constant.
        channel: ``"rgb"`` / ``"per_channel"`` (every channel, averaged) or ``"y"`` (BT.601 luma of RGB
            images; a grey image counts as R = G = B).
        crop_border: pixels removed from every side before the comparison.
        input_range: ``(low, high)`` of images that do not start at 0, e.g. ``(-1, 1)``.
        return_map: also return the SSIM map (see Returns).
        reduction: ``"mean"`` or ``"sum"`` over images, or ``"none"`` for one value per image.
        validate_args: check the input values (NaN/Inf, and the range warning); ``False`` skips this pass
            (and the device synchronisation it costs). Types, shapes, scalar arguments and the image size
            are always checked.

    Returns:
        The SSIM, float32 (float64 for float64 inputs). With ``return_map=True``, the tuple ``(ssim,
        ssim_map)`` where ``ssim_map`` holds the SSIM of every window position and channel: the "valid"
        region, ``kernel_size - 1`` pixels smaller than the (cropped) image along each side. Its mean
        over space and channels is the per-image value; it is differentiable.

    Raises:
        TypeError: if ``preds`` or ``target`` is neither ``uint8`` nor floating point, or only one is ``uint8``,
            or if ``kernel_size`` or ``crop_border`` is not an integer.
        ValueError: on different shapes, a rank other than 4, NaN/Inf values, an image side smaller
            than ``kernel_size`` (after the crop), ``data_range``, ``sigma``, ``k1`` or ``k2`` not
            positive, an even or non-positive ``kernel_size``, an unknown ``channel`` or ``reduction``
            (the message lists the choices), ``channel="y"`` on images without 3 or 1 channels, a
            ``crop_border`` that is negative or leaves no pixels, a bad ``input_range``, or a
            ``data_range`` that disagrees with it.

    Shape:
        - ``preds``, ``target``: ``(N, C, H, W)`` with ``H, W >= kernel_size + 2 crop_border``
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``
        - ``ssim_map``: ``(N, C', H - 2 crop_border - kernel_size + 1, W - 2 crop_border - kernel_size + 1)``
          with ``C' = 1`` for ``channel="y"``, else ``C``

    Example:
        >>> import torch
        >>> from percep_lightning.functional.ssim import ssim
        >>> target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> ssim(target, target)
        tensor(1.)
        >>> ssim(0.9 * target, target, reduction="none").shape
        torch.Size([2])
        >>> value, ssim_map = ssim(0.9 * target, target, channel="y", crop_border=4, return_map=True)
        >>> ssim_map.shape
        torch.Size([2, 1, 14, 14])
        >>> ssim(2 * target - 1, 2 * target - 1, input_range=(-1, 1))
        tensor(1.)
    """
    window = gaussian_window(kernel_size, sigma, dtype=torch.float64)
    return _ssim_with_window(
        preds,
        target,
        window=window,
        data_range=data_range,
        k1=k1,
        k2=k2,
        channel=channel,
        crop_border=crop_border,
        input_range=input_range,
        return_map=return_map,
        reduction=reduction,
        validate_args=validate_args,
        stacklevel=3,
    )


def ms_ssim(
    preds: Tensor,
    target: Tensor,
    *,
    data_range: float | None = None,
    kernel_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    channel: Channel = "rgb",
    crop_border: int = 0,
    input_range: Sequence[float] | None = None,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Multi-scale structural similarity (Wang et al. 2003), per image, with pytorch-msssim's conventions.

    .. math::
        \\operatorname{MS-SSIM}(x, y) = \\Big(\\prod_{j=1}^{M-1} \\max(\\operatorname{cs}_j, 0)^{w_j}\\Big)
            \\max(\\operatorname{SSIM}_M, 0)^{w_M}

    per channel, then averaged over channels. ``cs_j`` is the mean contrast-structure term (SSIM without
    its luminance factor) at scale ``j``, ``SSIM_M`` the full SSIM at the coarsest scale ``M =
    len(weights)``; each scale halves the image with 2x2 average pooling (odd sides padded by one, as in
    pytorch-msssim). Negative terms are clamped to 0 so the fractional powers stay real (pytorch-msssim
    does the same); the gradient of a clamped term is 0. Computed in float32 (float64 for float64
    inputs) with autocast disabled. ``data_range``, ``channel``, ``crop_border``, ``input_range`` and the
    range warning are as in :func:`ssim`.

    Args:
        preds: the predicted images, ``uint8`` or floating point.
        target: the reference images, the same shape and dtype kind.
        data_range: the value range ``L`` of the images; ``None`` means 255 for ``uint8`` images,
            ``high - low`` of ``input_range`` when it is given, and 1.0 otherwise.
        kernel_size: the number of Gaussian taps, odd.
        sigma: the Gaussian standard deviation in pixels.
        k1: the luminance stabilising constant.
        k2: the contrast stabilising constant.
        weights: one positive exponent per scale, finest first; fewer weights mean fewer scales and
            smaller admissible images.
        channel: ``"rgb"`` / ``"per_channel"`` (every channel, averaged) or ``"y"`` (BT.601 luma).
        crop_border: pixels removed from every side before the comparison.
        input_range: ``(low, high)`` of images that do not start at 0, e.g. ``(-1, 1)``.
        reduction: ``"mean"`` or ``"sum"`` over images, or ``"none"`` for one value per image.
        validate_args: check the input values (NaN/Inf, and the range warning); ``False`` skips this pass.
            Types, shapes, scalar arguments and the image size are always checked.

    Returns:
        The MS-SSIM, float32 (float64 for float64 inputs).

    Raises:
        TypeError: if ``preds`` or ``target`` is neither ``uint8`` nor floating point, or only one is ``uint8``,
            or if ``kernel_size`` or ``crop_border`` is not an integer.
        ValueError: on different shapes, a rank other than 4, NaN/Inf values, images whose smaller side
            (after the crop) does not exceed ``(kernel_size - 1) * 2 ** (len(weights) - 1)`` (160 by
            default), ``data_range``, ``sigma``, ``k1`` or ``k2`` not positive, an even or non-positive
            ``kernel_size``, empty or non-positive ``weights``, an unknown ``channel`` or ``reduction``,
            or a bad ``crop_border`` or ``input_range`` (as :func:`ssim`).

    Shape:
        - ``preds``, ``target``: ``(N, C, H, W)`` with ``min(H, W) - 2 crop_border > (kernel_size - 1) * 2 ** (len(weights) - 1)``
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``

    Example:
        >>> import torch
        >>> from percep_lightning.functional.ssim import ms_ssim
        >>> target = torch.rand(2, 3, 176, 176, generator=torch.Generator().manual_seed(0))
        >>> ms_ssim(target, target)
        tensor(1.)
        >>> ms_ssim(0.9 * target, target, weights=(0.5, 0.5), reduction="none").shape
        torch.Size([2])
    """
    window = gaussian_window(kernel_size, sigma, dtype=torch.float64)
    weights_tensor = torch.tensor(check_ms_ssim_weights(weights), dtype=torch.float64)
    return _ms_ssim_with_window(
        preds,
        target,
        window=window,
        weights=weights_tensor,
        data_range=data_range,
        k1=k1,
        k2=k2,
        channel=channel,
        crop_border=crop_border,
        input_range=input_range,
        reduction=reduction,
        validate_args=validate_args,
        stacklevel=3,
    )


def _ssim_with_window(
    preds: Tensor,
    target: Tensor,
    *,
    window: Tensor,
    data_range: float | None,
    k1: float,
    k2: float,
    reduction: Reduction,
    validate_args: bool,
    channel: str = "rgb",
    crop_border: int = 0,
    input_range: Sequence[float] | None = None,
    return_map: bool = False,
    stacklevel: int = 2,
) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`ssim` with a precomputed :func:`gaussian_window` (modules cache it as a buffer).

    The window is cast to the compute dtype; pass it in at least that precision (float64 for float64
    inputs), since a float32 window cast up carries float32 round-off into float64 results.
    ``stacklevel`` points the range warning at the user's call (as ``warnings.warn`` counts it from here).
    """
    _check_constants(data_range, k1, k2)
    check_reduction(reduction)
    with torch.autocast(device_type=_device_type(preds), enabled=False):
        x, y, value_range = prepare_pair(
            preds,
            target,
            data_range=data_range,
            input_range=input_range,
            channel=channel,
            crop_border=crop_border,
            validate_args=validate_args,
            warn_range=True,
            stacklevel=stacklevel + 1,
        )
        _check_min_size(x, window.numel(), scales=1, crop_border=crop_border)
        c1, c2 = (k1 * value_range) ** 2, (k2 * value_range) ** 2
        window = window.to(device=x.device, dtype=x.dtype)
        if return_map:
            ssim_map, _ = ssim_and_cs_maps(x, y, window, c1, c2)
            return reduce(ssim_map.mean(dim=(-3, -2, -1)), reduction), ssim_map
        ssim_per_channel, _ = SSIMFunction.apply(x, y, window, c1, c2)
        return reduce(ssim_per_channel.mean(dim=1), reduction)


def _ms_ssim_with_window(
    preds: Tensor,
    target: Tensor,
    *,
    window: Tensor,
    weights: Tensor,
    data_range: float | None,
    k1: float,
    k2: float,
    reduction: Reduction,
    validate_args: bool,
    channel: str = "rgb",
    crop_border: int = 0,
    input_range: Sequence[float] | None = None,
    stacklevel: int = 2,
) -> Tensor:
    """:func:`ms_ssim` with a precomputed window and weights tensor (modules cache them as buffers)."""
    _check_constants(data_range, k1, k2)
    check_reduction(reduction)
    levels = weights.numel()
    with torch.autocast(device_type=_device_type(preds), enabled=False):
        x, y, value_range = prepare_pair(
            preds,
            target,
            data_range=data_range,
            input_range=input_range,
            channel=channel,
            crop_border=crop_border,
            validate_args=validate_args,
            warn_range=True,
            stacklevel=stacklevel + 1,
        )
        _check_min_size(x, window.numel(), scales=levels, crop_border=crop_border)
        c1, c2 = (k1 * value_range) ** 2, (k2 * value_range) ** 2
        window = window.to(device=x.device, dtype=x.dtype)
        terms = []
        for level in range(levels):
            ssim_per_channel, cs_per_channel = SSIMFunction.apply(x, y, window, c1, c2)
            if level == levels - 1:
                terms.append(ssim_per_channel)
            else:
                terms.append(cs_per_channel)
                padding = (x.shape[-2] % 2, x.shape[-1] % 2)
                x = F.avg_pool2d(x, kernel_size=2, padding=padding)
                y = F.avg_pool2d(y, kernel_size=2, padding=padding)
        exponents = weights.to(device=x.device, dtype=x.dtype).view(-1, 1, 1)
        values = torch.relu(torch.stack(terms)).pow(exponents).prod(dim=0)  # (N, C)
        return reduce(values.mean(dim=1), reduction)


def _device_type(x: object) -> str:
    """The device type for ``torch.autocast`` (``"cpu"`` for a non-tensor, whose check then raises)."""
    return x.device.type if isinstance(x, Tensor) else "cpu"


def _check_min_size(x: Tensor, kernel_size: int, *, scales: int, crop_border: int = 0) -> None:
    """Raise a ValueError unless the images are large enough for ``scales`` scales of ``kernel_size`` taps."""
    height, width = x.shape[-2:]
    size = f"spatial size ({height}, {width})"
    if crop_border:
        size += f" after crop_border={crop_border}"
    if scales == 1:
        if min(height, width) < kernel_size:
            raise ValueError(
                f"Expected `preds` and `target` to be at least kernel_size={kernel_size} pixels along each side, "
                f"but got {size}."
            )
        return
    minimum = (kernel_size - 1) * 2 ** (scales - 1)
    if min(height, width) <= minimum:
        raise ValueError(
            f"MS-SSIM with kernel_size={kernel_size} and {scales} scales needs the smaller image side to exceed "
            f"(kernel_size - 1) * 2 ** (scales - 1) = {minimum} pixels, but got {size}; "
            "use larger images, fewer `weights` or a smaller `kernel_size`."
        )
