"""SSIM and MS-SSIM losses (``1 - SSIM``, ``1 - MS-SSIM``) as ``nn.Module``s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from percep_lightning.functional._checks import check_input_range, check_reduction, reduce, user_stacklevel
from percep_lightning.functional._paired import resolve_range
from percep_lightning.functional.inputs import check_tensors
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
    """What SSIMLoss and MSSSIMLoss share: validated constants and the cached Gaussian window.

    The window is kept in float64 and cast to the compute dtype at each call, so ``.double()`` (or
    float64 inputs) compute with the exact window instead of a float32 one cast up.
    """

    window: Tensor

    def __init__(
        self, data_range: float | None, kernel_size: int, sigma: float, k1: float, k2: float, reduction: str,
        input_range: Sequence[float] | None, validate_args: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        _check_constants(data_range, k1, k2)
        check_reduction(reduction)
        window = gaussian_window(kernel_size, sigma, dtype=torch.float64)
        self.register_buffer("window", window, persistent=False)
        self.input_range = None if input_range is None else check_input_range(input_range)
        resolve_range(False, data_range, self.input_range)  # raises if the two disagree
        self.data_range = None if data_range is None else float(data_range)
        self.kernel_size = kernel_size
        self.sigma = float(sigma)
        self.k1 = float(k1)
        self.k2 = float(k2)
        self.reduction = reduction
        self.validate_args = validate_args

    def _window(self, preds: Tensor, target: Tensor) -> Tensor:
        """The window for the compute dtype: the float64 buffer (the functions cast it), else rebuilt.

        The buffer is float64 unless the module was cast (``.half()``, ``.float()``); a cast buffer
        serves only its own dtype, and any other is rebuilt from float64, so that no float64 maths
        inherits a lower-precision window's round-off.
        """
        dtype = _compute_dtype(preds, target)
        if self.window.dtype in (torch.float64, dtype):
            return self.window
        return gaussian_window(self.kernel_size, self.sigma, dtype=dtype, device=self.window.device)

    def _constants_repr(self) -> str:
        text = f"kernel_size={self.kernel_size}, sigma={self.sigma}, k1={self.k1}, k2={self.k2}"
        return text if self.input_range is None else f"{text}, input_range={self.input_range}"


class SSIMLoss(_WindowedLoss):
    """``1 - SSIM`` per image (see :func:`~percep_lightning.functional.ssim.ssim` for the conventions).

    .. math::
        \\mathcal{L}(x, y) = 1 - \\operatorname{SSIM}(x, y)

    The Gaussian window is a non-persistent buffer: it follows ``.to(device)`` and stays out of
    checkpoints. The loss is 0 for identical images and computed in float32 with autocast disabled.

    Images must lie in ``[0, data_range]``; values far outside it warn once per calling line, as the
    backbone losses do. Images in another range, such as a tanh output in [-1, 1], are declared with
    ``input_range=(-1, 1)``: they are shifted to start at 0 and ``data_range`` becomes ``high - low``.

    Args:
        data_range: the value range of the images (``1.0`` for [0, 1], ``255.0`` for [0, 255]); ``None``
            means ``high - low`` of ``input_range`` when it is given, else 1.0.
        kernel_size: the number of Gaussian taps, odd.
        sigma: the Gaussian standard deviation in pixels.
        k1: the luminance stabilising constant.
        k2: the contrast stabilising constant.
        reduction: ``"mean"`` or ``"sum"`` over images, or ``"none"`` for one value per image.
        input_range: ``(low, high)`` of images that do not start at 0, e.g. ``(-1, 1)``.
        validate_args: check the input values on every call (NaN/Inf and the range warning).

    Raises:
        TypeError: at construction if ``kernel_size`` is not an integer.
        ValueError: at construction if ``data_range``, ``sigma``, ``k1`` or ``k2`` is not positive,
            ``kernel_size`` is even or not positive, ``reduction`` is unknown, ``input_range`` is
            not ``(low, high)`` with ``low < high``, or ``data_range`` disagrees with it; when called, on
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
        data_range: float | None = None,
        kernel_size: int = 11,
        sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        reduction: Reduction = "mean",
        *,
        input_range: Sequence[float] | None = None,
        validate_args: bool = True,
    ) -> None:
        super().__init__(data_range, kernel_size, sigma, k1, k2, reduction, input_range, validate_args)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        """Compute ``1 - SSIM(preds, target)``."""
        check_tensors(preds=preds, target=target)
        value = _ssim_with_window(
            preds,
            target,
            window=self._window(preds, target),
            data_range=self.data_range,
            k1=self.k1,
            k2=self.k2,
            input_range=self.input_range,
            reduction="none",
            validate_args=self.validate_args,
            stacklevel=user_stacklevel() + 1 if self.validate_args else 2,
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

    ``data_range``, ``input_range`` and the range warning are as in :class:`SSIMLoss`.

    Args:
        data_range: the value range of the images (``1.0`` for [0, 1], ``255.0`` for [0, 255]); ``None``
            means ``high - low`` of ``input_range`` when it is given, else 1.0.
        weights: one positive exponent per scale, finest first.
        kernel_size: the number of Gaussian taps, odd.
        sigma: the Gaussian standard deviation in pixels.
        k1: the luminance stabilising constant.
        k2: the contrast stabilising constant.
        reduction: ``"mean"`` or ``"sum"`` over images, or ``"none"`` for one value per image.
        input_range: ``(low, high)`` of images that do not start at 0, e.g. ``(-1, 1)``.
        validate_args: check the input values on every call (NaN/Inf and the range warning).

    Raises:
        TypeError: at construction if ``kernel_size`` is not an integer.
        ValueError: at construction if ``data_range``, ``sigma``, ``k1`` or ``k2`` is not positive,
            ``kernel_size`` is even or not positive, ``weights`` is empty or not all positive,
            ``reduction`` is unknown, or ``input_range`` is bad or disagrees with ``data_range``; when
            called, on bad inputs (including too small images) as
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
        data_range: float | None = None,
        weights: Sequence[float] = MS_SSIM_WEIGHTS,
        kernel_size: int = 11,
        sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        reduction: Reduction = "mean",
        *,
        input_range: Sequence[float] | None = None,
        validate_args: bool = True,
    ) -> None:
        weight_values = check_ms_ssim_weights(weights)
        super().__init__(data_range, kernel_size, sigma, k1, k2, reduction, input_range, validate_args)
        self.register_buffer("weights", torch.tensor(weight_values, dtype=torch.float64), persistent=False)
        self._weight_values = weight_values

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        """Compute ``1 - MS-SSIM(preds, target)``."""
        check_tensors(preds=preds, target=target)
        value = _ms_ssim_with_window(
            preds,
            target,
            window=self._window(preds, target),
            weights=self._weights(preds, target),
            data_range=self.data_range,
            k1=self.k1,
            k2=self.k2,
            input_range=self.input_range,
            reduction="none",
            validate_args=self.validate_args,
            stacklevel=user_stacklevel() + 1 if self.validate_args else 2,
        )
        return reduce(1.0 - value, self.reduction)

    def _weights(self, preds: Tensor, target: Tensor) -> Tensor:
        """The scale weights for the compute dtype: the float64 buffer (cast by the function), else rebuilt."""
        dtype = _compute_dtype(preds, target)
        if self.weights.dtype in (torch.float64, dtype):
            return self.weights
        return torch.tensor(self._weight_values, dtype=dtype, device=self.weights.device)

    def extra_repr(self) -> str:
        return (
            f"data_range={self.data_range}, weights={self._weight_values}, {self._constants_repr()}, "
            f"reduction={self.reduction!r}"
        )
