"""Colour conversions used by the image-quality metrics: ITU-R BT.601 luma as MATLAB's ``rgb2ycbcr``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Y_OFFSET", "Y_WEIGHTS", "grey_like_pil", "rgb_to_y"]

Y_WEIGHTS: tuple[float, float, float] = (65.481, 128.553, 24.966)
"""ITU-R BT.601 weights of R, G and B in [0, 1] for Y on the [0, 255] scale (they sum to 219)."""

Y_OFFSET: float = 16.0
"""The black level of Y on the [0, 255] scale: Y spans [16, 235] ("studio swing")."""


def rgb_to_y(images: Tensor, *, data_range: float | None = None) -> Tensor:
    """The Y (luma) channel of ITU-R BT.601 YCbCr, as MATLAB's ``rgb2ycbcr`` and super-resolution papers.

    .. math::
        Y = \\frac{L}{255}\\Big(16 + \\frac{65.481\\,R + 128.553\\,G + 24.966\\,B}{L}\\Big)

    for R, G, B in ``[0, L]``, so Y lies in ``[16 L / 255, 235 L / 255]``: ``[16, 235]`` for ``uint8``
    images, ``[16/255, 235/255]`` for images in [0, 1]. This is scikit-image's
    ``rgb2ycbcr(image)[..., 0]`` (divided by 255 for images in [0, 1]) and BasicSR's
    ``rgb2ycbcr(image, y_only=True)``, the channel of ``test_y_channel=True``. It differs from the
    full-range JPEG luma of OpenCV's ``cvtColor(..., COLOR_RGB2YCrCb)``. A one-channel (grey) image is
    taken as R = G = B, as reading a grey file into RGB does.

    Args:
        images: RGB (or grey) images, ``uint8`` or floating point.
        data_range: the value range ``L`` of the images: ``None`` for 255 with ``uint8`` and 1.0 otherwise.

    Returns:
        Y in the same scale as the input, float32 for ``uint8`` input (unrounded), else the input's dtype.

    Raises:
        TypeError: if ``images`` is not a tensor, or is neither ``uint8`` nor floating point.
        ValueError: if the channel dimension (``-3``) is not 3 or 1, or ``data_range <= 0``.

    Shape:
        - ``images``: ``(*, 3, H, W)`` or ``(*, 1, H, W)``
        - Output: ``(*, 1, H, W)``

    Example:
        >>> import torch
        >>> from percep_lightning.functional.color import rgb_to_y
        >>> white = torch.ones(1, 3, 2, 2)
        >>> rgb_to_y(white * 255, data_range=255.0).flatten()
        tensor([235., 235., 235., 235.])
        >>> rgb_to_y(torch.zeros(1, 3, 2, 2, dtype=torch.uint8)).flatten()
        tensor([16., 16., 16., 16.])
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"Expected `images` to be a torch.Tensor, but got {type(images).__name__}.")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"Expected `images` to be uint8 or floating point, but got dtype {images.dtype}.")
    if images.ndim < 3 or images.shape[-3] not in (1, 3):
        raise ValueError(
            f"Expected `images` to have shape (*, 3, H, W) or (*, 1, H, W), but got {tuple(images.shape)}."
        )
    if data_range is None:
        data_range = 255.0 if images.dtype == torch.uint8 else 1.0
    if not data_range > 0:
        raise ValueError(f"Expected `data_range` to be > 0, but got {data_range}.")
    x = images.to(torch.float32) if images.dtype == torch.uint8 else images
    return luma(x, float(data_range))


def luma(x: Tensor, data_range: float) -> Tensor:
    """:func:`rgb_to_y` without checks, for floating ``(*, 3 or 1, H, W)`` values in ``[0, data_range]``."""
    offset = Y_OFFSET * data_range / 255.0
    if x.shape[-3] == 1:
        return x * (sum(Y_WEIGHTS) / 255.0) + offset
    weights = torch.tensor(Y_WEIGHTS, dtype=torch.float64) / 255.0
    weights = weights.to(device=x.device, dtype=x.dtype).view(3, 1, 1)
    return (x * weights).sum(dim=-3, keepdim=True) + offset


def grey_like_pil(images: Tensor) -> Tensor:
    """Pillow's ``convert("L")`` on ``uint8`` RGB (torchvision's ``Grayscale()`` on PIL images).

    ``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16``; float images use ``0.299 R + 0.587 G + 0.114 B``.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.color import grey_like_pil
        >>> grey_like_pil(torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)).flatten()
        tensor([76], dtype=torch.uint8)
    """
    if images.dtype == torch.uint8:
        r, g, b = images.to(torch.int64).unbind(1)
        return ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16).to(torch.uint8).unsqueeze(1)
    r, g, b = images.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)
