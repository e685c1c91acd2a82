"""Cosine similarity of two images: of small thumbnails, or of the plain flattened pixels.

A cheap global "do these two images look alike" number (1 for images equal up to brightness, 0 for
orthogonal ones), used to check that a stylized or restored image keeps the layout of its source. The
thumbnail form compares ``size x size`` bicubic thumbnails, so images of different sizes can be compared
and the value reflects the layout rather than fine texture.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from percep_lightning.functional._checks import check_reduction, reduce
from percep_lightning.functional.inputs import check_int

__all__ = ["image_cosine_similarity"]

EPS = 1e-12
"""Lower bound of the product of the two norms (an all-zero image has similarity 0 with everything)."""


def image_cosine_similarity(
    a: Tensor,
    b: Tensor,
    *,
    size: int | None = 64,
    greyscale: bool = False,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """Cosine of the angle between two images seen as vectors, per pair of images.

    .. math::
        \\cos(a, b) = \\frac{\\langle v(a), v(b) \\rangle}{\\max(\\lVert v(a) \\rVert \\, \\lVert v(b) \\rVert,
            \\varepsilon)}

    where ``v`` is:

    * with ``size`` (default 64): each image resized to a ``size x size`` thumbnail with Pillow's bicubic
      filter (antialiased when shrinking), then flattened. ``uint8`` images are resized as 8-bit Pillow
      images (the result of resizing the image files, rounded to integers); floating-point images channel
      by channel as 32-bit float Pillow images (no rounding);
    * with ``size=None``: the plain flattened pixels at full resolution (the two images must then have the
      same size);
    * with ``greyscale=True``: each pixel replaced by the mean of its channels before flattening (so a
      ``64 x 64`` thumbnail gives a 4096-vector whatever the channel count); otherwise the channels are
      kept, and both images need the same channel count.

    ``size=64, greyscale=True`` is the usual "thumbnail similarity" (resize, mean over channels, flatten,
    ``dot / (norm * norm)``). The arithmetic is float64 on the CPU, and the resize goes through Pillow, so
    the value is not differentiable; the result is returned on ``a``'s device.

    Args:
        a: the first images, ``(N, C, H, W)``, ``uint8`` or floating point (any range; the cosine does not
            depend on the scale).
        b: the second images, ``(N, C', H', W')``, the same dtype kind.
        size: the thumbnail side, or ``None`` for the plain flattened form.
        greyscale: average the channels of each pixel first.
        reduction: ``"mean"`` or ``"sum"`` over the pairs, or ``"none"`` for one value per pair.

    Returns:
        The similarity in ``[-1, 1]`` (``[0, 1]`` for non-negative images), float64.

    Raises:
        TypeError: if ``a`` or ``b`` is not a tensor, is neither ``uint8`` nor floating point, or only one
            is ``uint8``, or if ``size`` is neither None nor an integer.
        ValueError: on a rank other than 4, different batch sizes, a channel count other than 1 or 3, NaN/Inf
            values, different channel counts without ``greyscale``, different image sizes with ``size=None``,
            ``size < 1``, or an unknown ``reduction``.

    Shape:
        - ``a``: ``(N, C, H, W)``; ``b``: ``(N, C', H', W')``
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``

    Example:
        >>> import torch
        >>> from percep_lightning.functional.cosine import image_cosine_similarity
        >>> a = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
        >>> round(float(image_cosine_similarity(a, 0.5 * a, greyscale=True)), 6)
        1.0
        >>> image_cosine_similarity(a, a.flip(-1), size=None, reduction="none").shape
        torch.Size([2])
    """
    _check_args(a, b, size, greyscale)
    check_reduction(reduction)
    vectors = [_vector(x, size, greyscale) for x in (a, b)]
    dot = (vectors[0] * vectors[1]).sum(dim=1)
    norms = vectors[0].norm(dim=1) * vectors[1].norm(dim=1)
    values = dot / norms.clamp_min(EPS)
    return reduce(values, reduction).to(a.device)


def _vector(images: Tensor, size: int | None, greyscale: bool) -> Tensor:
    """``(N, D)`` float64 CPU vectors: thumbnails (or the images), channel-averaged with ``greyscale``."""
    x = images.detach().cpu()
    x = x.to(torch.float64) if size is None else _thumbnails(x, size)
    if greyscale:
        x = x.mean(dim=1)
    return x.flatten(1)


def _thumbnails(images: Tensor, size: int) -> Tensor:
    """Bicubic ``size x size`` Pillow thumbnails of ``(N, C, H, W)`` CPU images, as float64."""
    from PIL import Image

    bicubic = Image.Resampling.BICUBIC
    out = np.empty((images.shape[0], images.shape[1], size, size), dtype=np.float64)
    if images.dtype == torch.uint8:
        pixels = images.permute(0, 2, 3, 1).numpy()
        for i, image in enumerate(pixels):
            picture = Image.fromarray(np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image))
            resized = np.asarray(picture.resize((size, size), bicubic), dtype=np.float64)
            out[i] = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
        return torch.from_numpy(out)
    planes = images.to(torch.float32).numpy()
    for i, image in enumerate(planes):
        for c, plane in enumerate(image):
            resized = Image.fromarray(np.ascontiguousarray(plane)).resize((size, size), bicubic)
            out[i, c] = np.asarray(resized, dtype=np.float64)
    return torch.from_numpy(out)


def _check_args(a: Tensor, b: Tensor, size: int | None, greyscale: bool) -> None:
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(x).__name__}.")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise TypeError(f"Expected `{name}` to be uint8 or floating point, but got dtype {x.dtype}.")
        if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[-1] == 0 or x.shape[-2] == 0:
            raise ValueError(
                f"Expected `{name}` to have shape (N, 3, H, W) or (N, 1, H, W), but got {tuple(x.shape)}."
            )
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"Expected `{name}` to be finite, but it contains NaN or Inf values.")
    if (a.dtype == torch.uint8) != (b.dtype == torch.uint8):
        raise TypeError(
            f"Expected `a` and `b` to be both uint8 or both floating point, but got dtypes {a.dtype} and {b.dtype}."
        )
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"Expected `a` and `b` to hold as many images, but got {a.shape[0]} and {b.shape[0]} "
            f"(shapes {tuple(a.shape)} and {tuple(b.shape)})."
        )
    if not greyscale and a.shape[1] != b.shape[1]:
        raise ValueError(
            f"Expected `a` and `b` to have the same channel count unless greyscale=True, but got "
            f"{a.shape[1]} and {b.shape[1]}."
        )
    if size is None:
        if a.shape[-2:] != b.shape[-2:]:
            raise ValueError(
                f"Expected `a` and `b` to have the same image size with size=None (the plain flattened form), "
                f"but got {tuple(a.shape[-2:])} and {tuple(b.shape[-2:])}; pass a thumbnail `size`."
            )
    else:
        check_int(size, "size", minimum=1)
