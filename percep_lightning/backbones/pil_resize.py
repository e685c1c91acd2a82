"""Resizing ``uint8`` images as the reference evaluation code does with Pillow, exactly or fast.

The DINOv2 and CLIP references (dgm-eval, CMMD) resize the 8-bit PIL image with ``Image.BICUBIC`` before
``ToTensor``: Pillow filters with a support that widens with the downscale factor (antialiasing) and
rounds each of its two passes back to 8 bits. Two ways to reproduce it:

* ``"pil"``: each image goes through Pillow itself on the CPU (exact by construction);
* ``"torch"``: ``F.interpolate(mode="bicubic", antialias=True)`` on the images' device, the same filter in
  float, rounded once, in exchange for no round trip through the CPU. It is close to Pillow, not equal:
  Pillow also rounds its first (horizontal) pass to 8 bits, so pixels differ by one 8-bit step here and
  there when shrinking, and by more where an enlargement overshoots (up to about 20 steps on random noise).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PIL_RESIZE_MODES", "PilResizeMode", "centre_crop_square", "check_uint8_images", "resize_uint8"]

PilResizeMode = Literal["pil", "torch"]
PIL_RESIZE_MODES: tuple[str, ...] = ("pil", "torch")


def check_pil_resize(mode: object) -> None:
    """Raise a ValueError naming ``resize`` unless it is one of :data:`PIL_RESIZE_MODES`."""
    if mode not in PIL_RESIZE_MODES:
        raise ValueError(f"Expected `resize` to be one of {PIL_RESIZE_MODES}, but got {mode!r}.")


def check_uint8_images(images: object, channels: tuple[int, ...] = (3,)) -> None:
    """Raise unless ``images`` is what the 8-bit resize of the reference pipelines reads.

    Raises:
        TypeError: if ``images`` is not a ``uint8`` tensor.
        ValueError: if it is not ``(N, C, H, W)`` with ``C`` in ``channels`` and ``H, W >= 1``.
    """
    if not isinstance(images, Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"Expected `images` to be a uint8 tensor, but got {got}.")
    if images.ndim != 4 or images.shape[1] not in channels or 0 in images.shape[-2:]:
        shapes = " or ".join(f"(N, {c}, H, W)" for c in channels)
        raise ValueError(f"Expected `images` of shape {shapes}, but got {tuple(images.shape)}.")


def centre_crop_square(images: Tensor) -> Tensor:
    """The largest centred square of ``(N, C, H, W)`` images, as Pillow's ``crop`` with the box
    ``((W - s) // 2, (H - s) // 2, ...)`` for ``s = min(H, W)``.

    Example:
        >>> centre_crop_square(torch.zeros(1, 3, 4, 7)).shape
        torch.Size([1, 3, 4, 4])
    """
    height, width = images.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return images[..., top : top + side, left : left + side]


def resize_uint8(images: Tensor, size: tuple[int, int], mode: PilResizeMode = "pil") -> Tensor:
    """Pillow's ``Image.resize((width, height), Image.BICUBIC)`` of ``(N, 3, H, W)`` ``uint8`` images.

    Args:
        images: ``(N, 3, H, W)`` ``uint8`` images.
        size: the output ``(height, width)``.
        mode: ``"pil"`` (Pillow on the CPU, exact) or ``"torch"`` (antialiased bicubic on the images'
            device, close to Pillow; see the module notes).

    Returns:
        ``(N, 3, height, width)`` ``uint8`` images on the device of ``images``.

    Example:
        >>> images = torch.randint(0, 256, (2, 3, 40, 30), dtype=torch.uint8)
        >>> resize_uint8(images, (24, 24)).shape
        torch.Size([2, 3, 24, 24])
    """
    check_pil_resize(mode)
    if tuple(images.shape[-2:]) == tuple(size):
        return images  # Pillow returns a copy of the image for an unchanged size
    if mode == "torch":
        out = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)
    from PIL import Image

    height, width = size
    pixels = images.detach().to("cpu").permute(0, 2, 3, 1).contiguous().numpy()
    resized = [
        np.asarray(Image.fromarray(pixel).resize((width, height), resample=Image.BICUBIC)) for pixel in pixels
    ]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).contiguous().to(images.device)
