"""The feature-extractor contract of the distribution metrics (Fréchet and kernel distances).

A distribution metric compares the features of two image sets, and the feature space is a parameter:
the FID Inception (:class:`~percep_lightning.backbones.FIDInceptionV3`), StyleID's art Inception
(:class:`~percep_lightning.backbones.ArtInception`), or any network a user brings. A
:class:`FeatureExtractor` is what such a metric needs to know about it:

* ``extract_features(images)``: images in, ``(N, D)`` features out;
* ``num_features``: ``D``, so that the metric can size its states before any image arrives;
* ``input_format``: what ``extract_features`` reads, ``"uint8"`` (pixel values in [0, 255]) or
  ``"float"`` (values in [0, 1]); the metric converts its input accordingly (float images become
  ``uint8`` with the metric's ``quantize`` rule);
* ``identity``: a stable string naming the network, its weights and its preprocessing (resize
  convention included), the part of a statistics cache key that says which feature space it is.

The extractor resizes and normalises the images itself, as its reference implementation does: the
metric hands it the images as they come.

Any ``nn.Module`` whose ``forward`` maps ``(N, 3, H, W)`` float images in [0, 1] to ``(N, D)`` becomes
one with :func:`as_extractor` (the metrics call it on what they are given).
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from percep_lightning.backbones.base import FrozenBackbone
from percep_lightning.functional.inputs import check_int

__all__ = [
    "PROBE_SIDE",
    "FeatureExtractor",
    "InputFormat",
    "ModuleExtractor",
    "as_extractor",
    "module_digest",
]

InputFormat = Literal["uint8", "float"]
INPUT_FORMATS: tuple[str, ...] = ("uint8", "float")
PROBE_SIDE = 224
"""The side of the one zero image a :class:`ModuleExtractor` runs to learn ``num_features`` when not told."""


@runtime_checkable
class FeatureExtractor(Protocol):
    """What a distribution metric needs of its feature network (see the module notes)."""

    num_features: int
    input_format: InputFormat

    @property
    def identity(self) -> str:
        """A stable name of the network, its weights and its preprocessing (for cache keys)."""
        ...

    def extract_features(self, images: Tensor) -> Tensor:
        """``(N, num_features)`` features of ``(N, 3, H, W)`` images in ``input_format``."""
        ...


_DIGESTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def module_digest(module: nn.Module) -> str:
    """SHA-256 (hex) of a module's ``state_dict`` (names and bytes), computed once per module.

    Example:
        >>> from torch import nn
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> _ = b.load_state_dict(a.state_dict())
        >>> module_digest(a) == module_digest(b)
        True
    """
    if module not in _DIGESTS:
        digest = hashlib.sha256()
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        _DIGESTS[module] = digest.hexdigest()
    return _DIGESTS[module]


class ModuleExtractor(FrozenBackbone):
    """A user's ``nn.Module`` (images to ``(N, D)``) as a frozen :class:`FeatureExtractor`.

    The module is frozen (no gradients, eval mode). Its ``forward`` receives ``(N, 3, H, W)`` images in
    ``input_format`` on the module's device, in the dtype of its first parameter (float32 otherwise),
    and must return ``(N, D)``.

    Args:
        module: the network.
        num_features: ``D``; ``None`` takes ``module.num_features`` when it is an integer, else runs the
            module once on a zero ``(1, 3, 224, 224)`` image to find it.
        input_format: ``"float"`` (values in [0, 1], default) or ``"uint8"`` (values in [0, 255], still
            passed as floating point).
        name: the first part of :attr:`identity` (default: the module's class name); the second is the
            SHA-256 of its ``state_dict``.

    Raises:
        TypeError: if ``module`` is not an ``nn.Module`` or ``num_features`` is not an integer.
        ValueError: for ``num_features < 1``, an unknown ``input_format``, or a probe output that is not 2-D.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> extractor = ModuleExtractor(net)
        >>> extractor.num_features, extractor.extract_features(torch.rand(2, 3, 16, 16)).shape
        (8, torch.Size([2, 8]))
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        num_features: int | None = None,
        input_format: InputFormat = "float",
        name: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"Expected `module` to be an nn.Module, but got {type(module).__name__}.")
        if input_format not in INPUT_FORMATS:
            raise ValueError(
                f"Expected `input_format` to be one of {INPUT_FORMATS}, but got {input_format!r}."
            )
        self.module = module
        self.input_format = input_format
        self.name = name if name is not None else type(module).__qualname__
        self.freeze()
        if num_features is None:
            num_features = getattr(module, "num_features", None)
        if num_features is None:
            num_features = self._probe()
        self.num_features = check_int(num_features, "num_features", minimum=1)

    @property
    def identity(self) -> str:
        """``"<name>:<input_format>:<sha256 of the state_dict>"``."""
        return f"{self.name}:{self.input_format}:{module_digest(self.module)}"

    def _dtype_and_device(self) -> tuple[torch.dtype, torch.device]:
        first = next(iter(self.module.parameters()), None)
        if first is None or not first.is_floating_point():
            return torch.float32, torch.device("cpu") if first is None else first.device
        return first.dtype, first.device

    def _probe(self) -> int:
        dtype, device = self._dtype_and_device()
        with torch.no_grad():
            out = self.module(torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE, dtype=dtype, device=device))
        if not isinstance(out, Tensor) or out.ndim != 2:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"Expected the feature extractor to return (N, D) features, but a (1, 3, {PROBE_SIDE}, {PROBE_SIDE}) "
                f"image gave {shape}; pass `num_features` or wrap the module so that it returns (N, D)."
            )
        return int(out.shape[1])

    def extract_features(self, images: Tensor) -> Tensor:
        """``(N, num_features)`` features of ``images`` (values in ``input_format``'s range).

        Raises:
            ValueError: if the module does not return ``(N, num_features)``.
        """
        dtype, device = self._dtype_and_device()
        out = self.module(images.to(device, dtype))
        expected = (images.shape[0], self.num_features)
        if not isinstance(out, Tensor) or tuple(out.shape) != expected:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"Expected the feature extractor to return features of shape {expected}, but got {shape}."
            )
        return out

    def forward(self, images: Tensor) -> Tensor:
        """The same as :meth:`extract_features`."""
        return self.extract_features(images)


def as_extractor(extractor: object) -> FeatureExtractor:
    """``extractor`` itself when it follows the :class:`FeatureExtractor` contract, else a :class:`ModuleExtractor`.

    Raises:
        TypeError: for anything that is neither a :class:`FeatureExtractor` nor an ``nn.Module``.
    """
    if isinstance(extractor, FeatureExtractor):
        return extractor
    if isinstance(extractor, nn.Module):
        return ModuleExtractor(extractor)
    raise TypeError(
        "Expected `extractor` to be an nn.Module mapping images to (N, D) features or a FeatureExtractor, "
        f"but got {type(extractor).__name__}."
    )
