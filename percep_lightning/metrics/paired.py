"""Full-reference metrics on ``(preds, target)`` pairs, averaged per image over a whole dataset: PSNR, SSIM, MS-SSIM.

Each metric keeps two states, the float64 sum of the per-image values and the image count, both reduced
with ``sum`` across processes, so the result is the mean over every image seen, whatever the batch sizes
and the number of processes (not a mean of batch means). The per-image values are those of the
functions in :mod:`percep_lightning.functional`, with the same options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from percep_lightning.functional._paired import check_channel, check_crop_border, resolve_range
from percep_lightning.functional.inputs import Channel
from percep_lightning.functional.pixel import psnr
from percep_lightning.functional.ssim import (
    MS_SSIM_WEIGHTS,
    _check_constants,
    check_ms_ssim_weights,
    check_window_args,
    ms_ssim,
    ssim,
)
from percep_lightning.metrics._images import Float64Sums

__all__ = ["MSSSIM", "PSNR", "SSIM"]


class PerImageMean(Float64Sums, Metric):
    """Base class: the mean of a per-image value over every image added with ``update(preds, target)``.

    Subclasses implement :meth:`per_image`, which returns one value per image pair.
    """

    is_differentiable = False
    full_state_update = False
    _second = "target"  # the name of the second image argument, for the messages

    value_sum: Tensor
    num_images: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_float64_sum("value_sum", ())
        self.add_state("num_images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        """One value per image pair, ``(N,)``."""
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of image pairs.

        Args:
            preds: the predicted images, ``(N, C, H, W)``.
            target: the reference images, the same shape.

        Raises:
            TypeError, ValueError: on bad images, as the function the metric is built on.
        """
        with torch.no_grad():
            values = self.per_image(preds, target)
        self.value_sum = self.value_sum + values.to(self.value_sum.device, torch.float64).sum()
        self.num_images = self.num_images + values.numel()

    def compute(self) -> Tensor:
        """The mean of the per-image values, float64.

        Raises:
            ValueError: if no images were added.
        """
        if int(self.num_images) == 0:
            raise ValueError(
                f"{type(self).__name__} needs at least 1 image pair, but got 0; add pairs with "
                f"`update(preds, {self._second})`."
            )
        return self.value_sum / self.num_images


class PSNR(PerImageMean):
    """Peak signal-to-noise ratio in dB, averaged per image over the dataset.

    Each image's PSNR is :func:`~percep_lightning.functional.psnr`'s, with its ``channel``
    (``"rgb"``, ``"y"`` for BT.601 luma as super-resolution papers report, or ``"per_channel"``) and
    ``crop_border`` options; the result is the mean of these values over all images, as BasicSR and
    super-resolution papers average. (torchmetrics' ``PeakSignalNoiseRatio`` instead takes the PSNR of
    the mean squared error pooled over the dataset.) A pair of identical images has an infinite PSNR and
    makes the mean infinite.

    Args:
        data_range: the value range of the images; ``None`` means 255 for ``uint8`` images, else 1.0.
        channel: ``"rgb"``, ``"y"`` or ``"per_channel"``.
        crop_border: pixels removed from every side before the comparison.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Raises:
        TypeError: if ``crop_border`` is not an integer.
        ValueError: for ``data_range <= 0``, an unknown ``channel`` (the message lists the choices) or a
            negative ``crop_border``.

    Shape:
        - ``preds``, ``target``: ``(N, C, H, W)``, ``uint8`` or floating point.
        - Output: ``()``, float64.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import PSNR
        >>> metric = PSNR(channel="y", crop_border=2)
        >>> target = torch.zeros(4, 3, 16, 16)
        >>> metric.update(target + 0.1, target)
        >>> metric.update(target[:1] + 0.01, target[:1])
        >>> round(float(metric.compute()), 4)
        25.3219
    """

    higher_is_better = True

    def __init__(
        self,
        data_range: float | None = None,
        *,
        channel: Channel = "rgb",
        crop_border: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        resolve_range(False, data_range, None)
        check_channel(channel)
        self.data_range = data_range
        self.channel = channel
        self.crop_border = check_crop_border(crop_border)

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        """Each pair's PSNR."""
        return psnr(
            preds,
            target,
            data_range=self.data_range,
            channel=self.channel,
            crop_border=self.crop_border,
            reduction="none",
        )


class _SSIMOptions(PerImageMean):
    """The options SSIM and MS-SSIM share, validated once."""

    higher_is_better = True
    plot_upper_bound = 1.0

    def __init__(
        self,
        data_range: float | None,
        kernel_size: int,
        sigma: float,
        k1: float,
        k2: float,
        channel: str,
        crop_border: int,
        input_range: Sequence[float] | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_window_args(kernel_size, sigma)
        _check_constants(data_range, k1, k2)
        resolve_range(False, data_range, input_range)
        check_channel(channel)
        self.options: dict[str, Any] = {
            "data_range": data_range,
            "kernel_size": kernel_size,
            "sigma": sigma,
            "k1": k1,
            "k2": k2,
            "channel": channel,
            "crop_border": check_crop_border(crop_border),
            "input_range": None if input_range is None else tuple(float(v) for v in input_range),
        }


class SSIM(_SSIMOptions):
    """Structural similarity, averaged per image over the dataset.

    Each image's SSIM is :func:`~percep_lightning.functional.ssim`'s (pytorch-msssim's conventions:
    Gaussian window, "valid" filtering, mean over space then channels), with the same options, including
    ``channel="y"`` and ``crop_border`` for super-resolution papers' numbers (BasicSR's
    ``calculate_ssim``). Float images far outside the declared range warn.

    Args:
        data_range: the value range of the images; ``None`` means 255 for ``uint8`` images, ``high - low``
            of ``input_range`` when it is given, else 1.0.
        kernel_size: the number of Gaussian taps, odd.
        sigma: the Gaussian standard deviation in pixels.
        k1: the luminance stabilising constant.
        k2: the contrast stabilising constant.
        channel: ``"rgb"`` / ``"per_channel"`` (every channel, averaged) or ``"y"`` (BT.601 luma).
        crop_border: pixels removed from every side before the comparison.
        input_range: ``(low, high)`` of images that do not start at 0, e.g. ``(-1, 1)``.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        TypeError: if ``kernel_size`` or ``crop_border`` is not an integer.
        ValueError: for a bad ``kernel_size``, ``sigma``, ``k1``, ``k2``, ``data_range`` or
            ``input_range``, an unknown ``channel`` or a negative ``crop_border``.

    Shape:
        - ``preds``, ``target``: ``(N, C, H, W)``, ``uint8`` or floating point.
        - Output: ``()``, float64.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import SSIM
        >>> metric = SSIM()
        >>> target = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> metric.update(target, target)
        >>> metric.compute()
        tensor(1., dtype=torch.float64)
    """

    def __init__(
        self,
        data_range: float | None = None,
        *,
        kernel_size: int = 11,
        sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        channel: Channel = "rgb",
        crop_border: int = 0,
        input_range: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_range, kernel_size, sigma, k1, k2, channel, crop_border, input_range, **kwargs)

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        """Each pair's SSIM."""
        return ssim(preds, target, **self.options, reduction="none")


class MSSSIM(_SSIMOptions):
    """Multi-scale structural similarity, averaged per image over the dataset.

    Each image's value is :func:`~percep_lightning.functional.ms_ssim`'s, with the same options. The
    smaller image side (after ``crop_border``) must exceed ``(kernel_size - 1) * 2 ** (len(weights) - 1)``
    (160 pixels by default).

    Args:
        data_range: the value range of the images; ``None`` means 255 for ``uint8`` images, ``high - low``
            of ``input_range`` when it is given, else 1.0.
        weights: one positive exponent per scale, finest first.
        kernel_size: the number of Gaussian taps, odd.
        sigma: the Gaussian standard deviation in pixels.
        k1: the luminance stabilising constant.
        k2: the contrast stabilising constant.
        channel: ``"rgb"`` / ``"per_channel"`` (every channel, averaged) or ``"y"`` (BT.601 luma).
        crop_border: pixels removed from every side before the comparison.
        input_range: ``(low, high)`` of images that do not start at 0, e.g. ``(-1, 1)``.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: for bad ``weights``, or as :class:`SSIM`.

    Shape:
        - ``preds``, ``target``: ``(N, C, H, W)``, ``uint8`` or floating point.
        - Output: ``()``, float64.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import MSSSIM
        >>> metric = MSSSIM(weights=(0.5, 0.5))
        >>> target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> metric.update(target, target)
        >>> metric.compute()
        tensor(1., dtype=torch.float64)
    """

    def __init__(
        self,
        data_range: float | None = None,
        *,
        weights: Sequence[float] = MS_SSIM_WEIGHTS,
        kernel_size: int = 11,
        sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        channel: Channel = "rgb",
        crop_border: int = 0,
        input_range: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_range, kernel_size, sigma, k1, k2, channel, crop_border, input_range, **kwargs)
        self.options["weights"] = check_ms_ssim_weights(weights)

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        """Each pair's MS-SSIM."""
        return ms_ssim(preds, target, **self.options, reduction="none")
