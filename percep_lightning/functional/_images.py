"""Image input handling shared by the losses and the metrics: one home for every convention.

* the ImageNet mean and std that the torchvision backbones were trained with;
* grey to RGB (a single channel repeated three times, as a view);
* mapping a declared ``input_range`` to [0, 1] or [-1, 1] and normalising, in one multiply-add;
* validation: a loss's ``(preds, target)`` pair (floating point, finite, warn when far outside the
  declared range), a metric's images (``uint8`` in [0, 255] or float in [0, 1]), and the smallest image a
  backbone accepts;
Argument checks that are not about images (``reduction``, choices, ``input_range``) and the
:data:`~percep_lightning.functional._checks.Reduction` type live in :mod:`percep_lightning.functional._checks`.
Everything here is a pure function of tensors (no module state), so losses and metrics import it alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from percep_lightning.functional.inputs import far_outside, value_bounds

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "check_image_tensor",
    "check_images",
    "check_min_size",
    "check_unit_range",
    "imagenet_normalize",
    "to_rgb",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet on [0, 1] RGB images (torchvision's ``IMAGENET1K_V1`` transforms)."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet on [0, 1] RGB images."""


def to_rgb(images: Tensor) -> Tensor:
    """Repeat a single grey channel to three (a view); RGB images are returned unchanged.

    Example:
        >>> import torch
        >>> from percep_lightning.functional._images import to_rgb
        >>> to_rgb(torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def imagenet_normalize(
    images: Tensor,
    input_range: tuple[float, float],
    mean: Tensor,
    std: Tensor,
    dtype: torch.dtype,
    *,
    unit_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Cast to ``dtype``, repeat grey to RGB, map ``input_range`` onto ``unit_range``, then ``(x - mean) / std``.

    The three steps are one affine map per channel, applied as a single multiply-add over the images
    (its coefficients are computed on the ``(1, 3, 1, 1)`` statistics): one pass, forward and backward,
    instead of four. The values equal the step-by-step computation up to float rounding.

    Args:
        images: ``(N, 1 or 3, H, W)`` floating-point images.
        input_range: their ``(low, high)`` pixel range.
        mean: ``(1, 3, 1, 1)`` channel means on the ``unit_range`` scale (:data:`IMAGENET_MEAN` for the
            torchvision backbones on [0, 1]; LPIPS' scaling layer on [-1, 1]).
        std: ``(1, 3, 1, 1)`` channel standard deviations on that scale.
        dtype: the dtype of the network that reads the result.
        unit_range: the range ``input_range`` is mapped to before the mean and std.

    Example:
        >>> import torch
        >>> from percep_lightning.functional._images import imagenet_normalize
        >>> mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.5)
        >>> imagenet_normalize(torch.ones(1, 1, 2, 2), (-1.0, 1.0), mean, std, torch.float32).flatten()[:3]
        tensor([1., 1., 1.])
        >>> imagenet_normalize(torch.zeros(1, 3, 1, 1), (0.0, 255.0), mean, std, torch.float32, unit_range=(-1.0, 1.0))
        tensor([[[[-3.]],
        <BLANKLINE>
                 [[-3.]],
        <BLANKLINE>
                 [[-3.]]]])
    """
    (low, high), (unit_low, unit_high) = input_range, unit_range
    gain = (unit_high - unit_low) / (high - low)
    stats = torch.promote_types(dtype, mean.dtype)
    mean, std = mean.to(stats), std.to(stats)
    scale, offset = gain / std, (unit_low - low * gain - mean) / std
    x = to_rgb(images if images.dtype == dtype else images.to(dtype))
    return torch.addcmul(offset.to(dtype), x, scale.to(dtype))


def check_image_tensor(images: object, name: str) -> Tensor:
    """``images`` when it is a ``uint8`` or float tensor of shape ``(N, 3 or 1, H, W)``, values unchecked.

    Raises:
        TypeError: if ``images`` is not a tensor, or is neither ``uint8`` nor floating point.
        ValueError: on a rank other than 4, a channel count other than 1 or 3, or an empty spatial size.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(images).__name__}.")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(
            f"Expected `{name}` to be uint8 in [0, 255] or floating point in [0, 1], but got dtype {images.dtype}."
        )
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[-1] == 0 or images.shape[-2] == 0:
        raise ValueError(
            f"Expected `{name}` to have shape (N, 3, H, W) or (N, 1, H, W), but got {tuple(images.shape)}."
        )
    return images


def check_images(images: object, name: str) -> Tensor:
    """Validate a metric's batch of images and return it with three channels.

    Args:
        images: ``uint8`` in [0, 255] or floating point in [0, 1], shape ``(N, 3, H, W)`` or ``(N, 1, H, W)``.
        name: the argument name used in error messages.

    Returns:
        The images with three channels (a grey channel is repeated), same dtype.

    Raises:
        TypeError: if ``images`` is not a tensor, or is neither ``uint8`` nor floating point.
        ValueError: on a rank other than 4, a channel count other than 1 or 3, an empty spatial size,
            NaN/Inf values, or float values far outside [0, 1]
            (:data:`~percep_lightning.functional.inputs.RANGE_TOLERANCE`).

    Example:
        >>> import torch
        >>> from percep_lightning.functional._images import check_images
        >>> check_images(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "images").shape
        torch.Size([2, 3, 8, 8])
    """
    images = check_image_tensor(images, name)
    if images.is_floating_point():
        for bounds in value_bounds({f"`{name}`": images}).values():
            check_unit_range(bounds, f"float `{name}`")
    return to_rgb(images)


def check_unit_range(bounds: tuple[float, float], label: str) -> None:
    """Raise a ValueError if float images with ``bounds`` are far outside [0, 1] (the one range rule)."""
    low, high = bounds
    if far_outside(bounds, 0.0, 1.0):
        hint = " (uint8-range values stored as float: divide by 255)" if high > 2 else ""
        raise ValueError(
            f"Expected {label} to be in [0, 1], but got values in [{low:.4g}, {high:.4g}]{hint}; clamp "
            "network outputs with `.clamp(0, 1)`, or pass uint8 images in [0, 255]."
        )


def check_min_size(
    images: Tensor, names: str | Sequence[str], min_size: tuple[int, int], network: str
) -> None:
    """Raise a ValueError naming the argument(s) if the images are smaller than a network accepts.

    Args:
        images: ``(..., H, W)`` images.
        names: the argument name, or names (e.g. ``("preds", "target")``), for the message.
        min_size: the smallest ``(H, W)`` the network accepts (e.g.
            :attr:`~percep_lightning.backbones.TorchvisionFeatures.min_size`).
        network: what needs that size, for the message (e.g. ``"vgg19 up to conv5_4"``).

    Example:
        >>> import torch
        >>> from percep_lightning.functional._images import check_min_size
        >>> check_min_size(torch.zeros(1, 3, 8, 8), ("preds", "target"), (16, 16), "vgg19 up to conv5_4")
        Traceback (most recent call last):
        ...
        ValueError: Expected `preds` and `target` to be at least 16x16 pixels for vgg19 up to conv5_4, but got 8x8.
    """
    h, w = images.shape[-2:]
    if h < min_size[0] or w < min_size[1]:
        named = " and ".join(f"`{n}`" for n in ((names,) if isinstance(names, str) else names))
        raise ValueError(
            f"Expected {named} to be at least {min_size[0]}x{min_size[1]} pixels for {network}, but got {h}x{w}."
        )
