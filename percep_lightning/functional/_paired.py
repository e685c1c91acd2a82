"""Input handling shared by the full-reference metrics (PSNR, SSIM, MS-SSIM) on ``(preds, target)`` pairs.

One place decides, for every one of them: which dtypes are accepted (``uint8`` or floating point, the
same kind for both images), the value range (``data_range``, or ``input_range`` for images not starting
at 0, ``255`` by default for ``uint8``), the border crop of super-resolution papers, the channel the metric
is computed on (all channels, ITU-R BT.601 luma, or each channel apart) and the compute dtype.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from percep_lightning.functional._checks import check_choice, check_input_range, check_positive, check_same_4d
from percep_lightning.functional.color import luma
from percep_lightning.functional.inputs import check_int, far_outside, value_bounds

CHANNELS: tuple[str, ...] = ("rgb", "y", "per_channel")
"""The values of the ``channel`` argument of :func:`~percep_lightning.functional.psnr` and SSIM."""


def check_channel(channel: str) -> None:
    """Raise a ValueError listing the choices unless ``channel`` is one of :data:`CHANNELS`."""
    check_choice(channel, "channel", CHANNELS)


def check_crop_border(crop_border: int) -> int:
    """``crop_border`` as an ``int``: a TypeError unless it is an integer, a ValueError if it is negative."""
    return check_int(crop_border, "crop_border", minimum=0)


def resolve_range(
    is_uint8: bool, data_range: float | None, input_range: Sequence[float] | None
) -> tuple[float, float]:
    """The ``(low, L)`` of the images: values lie in ``[low, low + L]``.

    ``input_range=(low, high)`` gives ``(low, high - low)``; otherwise ``low`` is 0 and ``L`` is
    ``data_range``, or 255 for ``uint8`` and 1 for floating-point images when it is ``None``.

    Raises:
        ValueError: on a bad ``input_range``, ``data_range <= 0``, or both given and disagreeing.
    """
    if input_range is not None:
        low, high = check_input_range(input_range)
        if data_range is not None and not math.isclose(float(data_range), high - low):
            raise ValueError(
                f"Expected `data_range` to be None or high - low = {high - low} of input_range={input_range!r}, "
                f"but got data_range={data_range}; pass one of the two."
            )
        return low, high - low
    if data_range is None:
        return 0.0, 255.0 if is_uint8 else 1.0
    check_positive(data_range, "data_range")
    return 0.0, float(data_range)


def check_pair_types(preds: Tensor, target: Tensor) -> bool:
    """Check types and shapes of a pair of image batches; return whether they are ``uint8``.

    Raises:
        TypeError: if either is not a tensor, is neither ``uint8`` nor floating point, or one is ``uint8``
            and the other is not.
        ValueError: on different shapes or a rank other than 4.
    """
    for name, x in (("preds", preds), ("target", target)):
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(x).__name__}.")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise TypeError(f"Expected `{name}` to be uint8 or floating point, but got dtype {x.dtype}.")
    is_uint8 = preds.dtype == torch.uint8
    if is_uint8 != (target.dtype == torch.uint8):
        raise TypeError(
            "Expected `preds` and `target` to be both uint8 or both floating point, but got dtypes "
            f"{preds.dtype} and {target.dtype}."
        )
    check_same_4d(preds, target)
    return is_uint8


def check_values(
    preds: Tensor, target: Tensor, low: float, data_range: float, *, warn_range: bool, stacklevel: int
) -> None:
    """Raise on NaN/Inf and, with ``warn_range``, warn when values leave ``[low, low + data_range]``.

    One ``aminmax`` pass per tensor and one device synchronisation serve both checks. Small overshoots
    (un-clamped network outputs) stay silent: only values far outside by the package's one range rule
    (:data:`~percep_lightning.functional.inputs.RANGE_TOLERANCE`) warn. Python shows a warning once per calling line;
    ``stacklevel`` is the ``warnings.warn`` stack level of that line as seen from here.
    """
    bounds = value_bounds({"`preds`": preds, "`target`": target})
    if not warn_range:
        return
    high = low + data_range
    outside = [label for label, found in bounds.items() if far_outside(found, low, high)]
    if outside:
        # The message holds no observed values, so Python's default filter shows it once per calling line
        # instead of once per batch.
        verb = "has" if len(outside) == 1 else "have"
        warnings.warn(
            f"{' and '.join(outside)} {verb} values far outside [{low:g}, {high:g}] (data_range={data_range:g}): "
            "SSIM's constants and luminance term depend on the pixel scale; pass the right `data_range` "
            "(e.g. 255.0) or `input_range` (e.g. (-1, 1)).",
            UserWarning,
            stacklevel=stacklevel,
        )


def prepare_pair(
    preds: Tensor,
    target: Tensor,
    *,
    data_range: float | None,
    input_range: Sequence[float] | None = None,
    channel: str = "rgb",
    crop_border: int = 0,
    validate_args: bool = True,
    warn_range: bool = False,
    stacklevel: int = 2,
) -> tuple[Tensor, Tensor, float]:
    """Validate a pair and return it ready for a full-reference metric.

    The images are cast to the compute dtype (float64 if either is float64, else float32), cropped by
    ``crop_border`` pixels on every side, shifted to start at 0 (``input_range``) and, for
    ``channel="y"``, converted to BT.601 luma on the same scale. Call it with autocast disabled.

    Args:
        preds: ``(N, C, H, W)`` images, ``uint8`` or floating point.
        target: the same shape and dtype kind.
        data_range: the value range, or ``None`` for the dtype's default (see :func:`resolve_range`).
        input_range: ``(low, high)`` of images that do not start at 0; mutually exclusive with
            a different ``data_range``.
        channel: ``"rgb"``, ``"y"`` or ``"per_channel"`` (only ``"y"`` changes the images here).
        crop_border: pixels removed from every side.
        validate_args: check values for NaN/Inf (and the range, with ``warn_range``).
        warn_range: warn when values leave ``[low, low + data_range]`` (see :func:`check_values`).
        stacklevel: the ``warnings.warn`` stack level of the user's line as seen from here.

    Returns:
        ``(preds, target, data_range)``: floating ``(N, C', H - 2 crop_border, W - 2 crop_border)``
        tensors in ``[0, data_range]`` with ``C' = 1`` for ``"y"``, and the range.

    Raises:
        TypeError: as :func:`check_pair_types`, or a ``crop_border`` that is not an integer.
        ValueError: as :func:`check_pair_types` and :func:`resolve_range`; an unknown ``channel`` (the
            message lists the choices); ``channel="y"`` on images with other than 3 or 1 channels; a bad
            ``crop_border`` or one that leaves no pixels; NaN/Inf values.
    """
    check_channel(channel)
    check_crop_border(crop_border)
    is_uint8 = check_pair_types(preds, target)
    low, value_range = resolve_range(is_uint8, data_range, input_range)
    height, width = preds.shape[-2:]
    if 2 * crop_border >= min(height, width):
        raise ValueError(
            f"Expected `crop_border` to leave pixels in images of size ({height}, {width}), but "
            f"crop_border={crop_border} removes {2 * crop_border} rows and columns."
        )
    if channel == "y" and preds.shape[1] not in (1, 3):
        raise ValueError(
            f"Expected `preds` and `target` to have 3 (RGB) or 1 channels for channel='y', but got "
            f"{preds.shape[1]} (shape {tuple(preds.shape)})."
        )
    if validate_args and not is_uint8:
        check_values(preds, target, low, value_range, warn_range=warn_range, stacklevel=stacklevel + 1)
    dtype = torch.promote_types(torch.promote_types(preds.dtype, target.dtype), torch.float32)
    x, y = preds.to(dtype), target.to(dtype)
    if crop_border:
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    if low != 0:
        x, y = x - low, y - low
    if channel == "y":
        x, y = luma(x, value_range), luma(y, value_range)
    return x, y, value_range
