"""SSIM and MS-SSIM losses (``1 - SSIM``, ``1 - MS-SSIM``) as ``nn.Module``s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from percep_lightning.functional._checks import check_reduction, reduce
from percep_lightning.functional.ssim import (
    MS_SSIM_WEIGHTS,
    _check_constants,
    _compute_dtype,
    _ms_ssim_with_window,
    _ssim_with_window,
    check_ms_ssim_weights,
    gaussian_window,
)

__all__ = ["MSSSIMLoss", "SSIMLoss"]

Reduction = Literal["mean", "sum", "none"]


class _WindowedLoss(nn.Module):
    """What SSIMLoss and MSSSIMLoss share: validated constants and the cached Gaussian window."""

    window: Tensor

    def __init__(
        self, data_range: float, kernel_size: int, sigma: float, k1: float, k2: float, reduction: str,
        validate_args: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        _check_constants(data_range, k1, k2)
        check_reduction(reduction)
        self.register_buffer("window", gaussian_window(kernel_size, sigma), persistent=False)
        self.data_range = float(data_range)
        self.kernel_size = kernel_size
        self.sigma = float(sigma)
        self.k1 = float(k1)
        self.k2 = float(k2)
        self.reduction = reduction
        self.validate_args = validate_args

    def _window(self, preds: Tensor, target: Tensor) -> Tensor:
        """The window in the compute dtype: the cached buffer when it matches, else rebuilt in that dtype.

        Rebuilding (float64 inputs, or a module cast to another dtype) keeps float64 maths free of the
        float32 window's round-off.
        """
        dtype = _compute_dtype(preds, target)
        if self.window.dtype == dtype:
            return self.window
        return gaussian_window(self.kernel_size, self.sigma, dtype=dtype, device=self.window.device)

    def _constants_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, k1={self.k1}, k2={self.k2}"


class SSIMLoss(_WindowedLoss):
    """``1 - SSIM`` per image (see :func:`~percep_lightning.functional.ssim.ssim` for the conventions).

    .. math::
        \\mathcal{L}(x, y) = 1 - \\operatorname{SSIM}(x, y)

    The Gaussian window is a non-persistent buffer: it follows ``.to(device)`` and stays out of
    checkpoints. The loss is 0 for identical images and computed in float32 with autocast disabled.

    Args:
        data_range: the value range of the images (``1.0`` for [0, 1], ``255.0`` for [0, 255], ``2.0``
            for [-1, 1]).
        kernel_size: the number of Gaussian taps, odd.
        sigma: the Gaussian standard deviation in pixels.
        k1: the luminance stabilising constant.
        k2: the contrast stabilising constant.
        reduction: ``"mean"`` or ``"sum"`` over images, or ``"none"`` for one value per image.
        validate_args: check the input tensors on every call (type, shape, finite values).

    Raises:
        ValueError: at construction if ``data_range``, ``sigma``, ``k1`` or ``k2`` is not positive,
            ``kernel_size`` is not an odd positive integer, or ``reduction`` is unknown; when called, on
            bad inputs as :func:`~percep_lightning.functional.ssim.ssim`.

    Shape:
        - ``preds``, ``target``: ``(N, C, H, W)`` with ``H, W >= kernel_size``
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``

    Example:
        >>> import torch
        >>> from percep_lightning.losses.ssim import SSIMLoss
        >>> loss = SSIMLoss(data_range=1.0)
        >>> target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> loss(target, target)
        tensor(0.)
    """

    def __init__(
        self,
        data_range: float = 1.0,
        kernel_size: int = 11,
        sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        reduction: Reduction = "mean",
        *,
        validate_args: bool = True,
    ) -> None:
        super().__init__(data_range, kernel_size, sigma, k1, k2, reduction, validate_args)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        """Compute ``1 - SSIM(preds, target)``."""
        value = _ssim_with_window(
            preds,
            target,
            window=self._window(preds, target),
            data_range=self.data_range,
            k1=self.k1,
            k2=self.k2,
            reduction="none",
            validate_args=self.validate_args,
        )
        return reduce(1.0 - value, self.reduction)

    def extra_repr(self) -> str:
        return f"data_range={self.data_range}, {self._constants_repr()}, reduction={self.reduction!r}"


class MSSSIMLoss(_WindowedLoss):
    """``1 - MS-SSIM`` per image (see :func:`~percep_lightning.functional.ssim.ms_ssim` for the conventions).

    .. math::
        \\mathcal{L}(x, y) = 1 - \\operatorname{MS-SSIM}(x, y)

    The Gaussian window and the scale weights are non-persistent buffers. The smaller image side must
    exceed ``(kernel_size - 1) * 2 ** (len(weights) - 1)`` (160 pixels by default).

    Args:
        data_range: the value range of the images (``1.0`` for [0, 1], ``255.0`` for [0, 255], ``2.0``
            for [-1, 1]).
        weights: one positive exponent per scale, finest first.
        kernel_size: the number of Gaussian taps, odd.
        sigma: the Gaussian standard deviation in pixels.
        k1: the luminance stabilising constant.
        k2: the contrast stabilising constant.
        reduction: ``"mean"`` or ``"sum"`` over images, or ``"none"`` for one value per image.
        validate_args: check the input tensors on every call (type, shape, finite values).

    Raises:
        ValueError: at construction if ``data_range``, ``sigma``, ``k1`` or ``k2`` is not positive,
            ``kernel_size`` is not an odd positive integer, ``weights`` is empty or not all positive, or
            ``reduction`` is unknown; when called, on bad inputs (including too small images) as
            :func:`~percep_lightning.functional.ssim.ms_ssim`.

    Shape:
        - ``preds``, ``target``: ``(N, C, H, W)``
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``

    Example:
        >>> import torch
        >>> from percep_lightning.losses.ssim import MSSSIMLoss
        >>> loss = MSSSIMLoss(data_range=1.0)
        >>> target = torch.rand(1, 3, 176, 176, generator=torch.Generator().manual_seed(0))
        >>> loss(target, target)
        tensor(0.)
    """

    weights: Tensor

    def __init__(
        self,
        data_range: float = 1.0,
        weights: Sequence[float] = MS_SSIM_WEIGHTS,
        kernel_size: int = 11,
        sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        reduction: Reduction = "mean",
        *,
        validate_args: bool = True,
    ) -> None:
        weight_values = check_ms_ssim_weights(weights)
        super().__init__(data_range, kernel_size, sigma, k1, k2, reduction, validate_args)
        self.register_buffer("weights", torch.tensor(weight_values, dtype=torch.float32), persistent=False)
        self._weight_values = weight_values

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        """Compute ``1 - MS-SSIM(preds, target)``."""
        value = _ms_ssim_with_window(
            preds,
            target,
            window=self._window(preds, target),
            weights=self._weights(preds, target),
            data_range=self.data_range,
            k1=self.k1,
            k2=self.k2,
            reduction="none",
            validate_args=self.validate_args,
        )
        return reduce(1.0 - value, self.reduction)

    def _weights(self, preds: Tensor, target: Tensor) -> Tensor:
        """The scale weights in the compute dtype: the cached buffer when it matches, else rebuilt."""
        dtype = _compute_dtype(preds, target)
        if self.weights.dtype == dtype:
            return self.weights
        return torch.tensor(self._weight_values, dtype=dtype, device=self.weights.device)

    def extra_repr(self) -> str:
        return (
            f"data_range={self.data_range}, weights={self._weight_values}, {self._constants_repr()}, "
            f"reduction={self.reduction!r}"
        )
