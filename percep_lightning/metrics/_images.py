"""Shared pieces of the metrics: image validation and uint8 quantisation, the exact-float32 backbone forward,
and float64 sums that stay float64 (and off MPS).

Every metric accepts the same images: ``uint8`` in [0, 255] or floating point in [0, 1], shape
``(N, 3, H, W)`` or ``(N, 1, H, W)`` (grey images are repeated to three channels).

Quantisation. The FID Inception network was exported for 8-bit images, and torch-fidelity only accepts
``uint8``. Float images are therefore quantised before the network sees them. Two conventions exist:

* ``"round"`` (default): ``floor(255 * x + 0.5)``, i.e. round half up. This is what writing the image to a
  PNG does (``torchvision.utils.save_image``, PIL), so it gives the number torch-fidelity reports on the
  saved image files.
* ``"truncate"``: ``(255 * x).to(torch.uint8)``, i.e. round towards zero. This is torchmetrics'
  ``normalize=True``; choose it to reproduce torchmetrics on float input. It darkens images by half a grey
  level on average.

``uint8`` input is never re-quantised, so on ``uint8`` images both conventions and every reference agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.extractor import FeatureExtractor
from percep_lightning.backbones.inception import FIDInceptionV3, InceptionFeatures
from percep_lightning.functional._checks import check_same_4d
from percep_lightning.functional._images import check_image_tensor, check_images, check_unit_range
from percep_lightning.functional.inputs import Quantize, value_bounds

QUANTIZE_MODES: tuple[str, ...] = ("round", "truncate")


def to_uint8(images: object, name: str, quantize: Quantize = "round") -> Tensor:
    """Validate images (see :func:`check_images`) and quantise float ones to ``uint8``.

    Args:
        images: ``uint8`` in [0, 255] or floating point in [0, 1], ``(N, 3 or 1, H, W)``.
        name: the argument name used in error messages.
        quantize: ``"round"`` (``floor(255 x + 0.5)``, PNG files) or ``"truncate"`` (``(255 x).byte()``,
            torchmetrics' ``normalize=True``); ignored for ``uint8`` input.

    Returns:
        ``(N, 3, H, W)`` ``uint8`` images.

    Raises:
        TypeError, ValueError: as :func:`check_images`.
    """
    images = check_images(images, name)
    if images.dtype == torch.uint8:
        return images
    scaled = images.detach().to(torch.float32) * 255
    if quantize == "round":
        scaled = torch.floor(scaled + 0.5)
    return scaled.clamp_(0, 255).to(torch.uint8)


def to_float(images: object, name: str) -> Tensor:
    """Validate images (see :func:`check_images`) and return them as float32 in [0, 1]."""
    images = check_images(images, name)
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255
    return images.detach().to(torch.float32)


def resolve_inception(backbone: FIDInceptionV3 | None, weights: Any, resize: Any) -> FIDInceptionV3:
    """The Inception a metric runs: the shared ``backbone`` when given, else a new one from ``weights``.

    Raises:
        TypeError: if ``backbone`` is given and is not an :class:`FIDInceptionV3`.
    """
    if backbone is None:
        return FIDInceptionV3(weights, resize=resize)
    if not isinstance(backbone, FIDInceptionV3):
        raise TypeError(f"Expected `backbone` to be an FIDInceptionV3, but got {type(backbone).__name__}.")
    return backbone


def check_quantize(quantize: str) -> None:
    """Raise a ValueError unless ``quantize`` is ``"round"`` or ``"truncate"``."""
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"Expected `quantize` to be one of {QUANTIZE_MODES}, but got {quantize!r}.")


@contextlib.contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """Run a metric backbone in plain float32, whatever the surrounding training code enabled.

    Inside the block: ``torch.inference_mode()``, autocast disabled for ``device``, and TF32 / reduced
    precision disabled for matmuls and convolutions (cuBLAS, cuDNN, oneDNN), so features do not depend on
    the precision plugin or on the batch size. The previous flags are restored on exit.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if device.type in ("cuda", "cpu", "xpu", "mps"):
            stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
        stack.enter_context(_no_tf32())
        yield


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    backends = torch.backends
    # torch >= 2.9 has per-operator ``fp32_precision``; mixing it with the legacy ``allow_tf32`` flags raises,
    # so only the API in use is touched.
    ops = [
        getattr(getattr(backends, backend, None), op, None)
        for backend, op in (("cuda", "matmul"), ("cudnn", "conv"), ("mkldnn", "matmul"), ("mkldnn", "conv"))
    ]
    ops = [op for op in ops if op is not None and hasattr(op, "fp32_precision")]
    if ops:
        saved = [op.fp32_precision for op in ops]
        try:
            for op in ops:
                op.fp32_precision = "ieee"
            yield
        finally:
            for op, value in zip(ops, saved, strict=True):
                op.fp32_precision = value
        return
    saved_legacy = (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32)
    try:
        backends.cuda.matmul.allow_tf32 = False
        backends.cudnn.allow_tf32 = False
        yield
    finally:
        backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32 = saved_legacy


class Float64Sums(HoldsFrozen):
    """Mixin for a ``Metric`` that keeps running sums in float64 whatever the metric's dtype.

    ``.to(dtype)`` and ``set_dtype`` leave the sums float64 (they move device only); on MPS, which has no
    float64, they stay on the CPU while the backbone and the other states move, and updates bring their
    contributions to the sums' device. The registered default is float32 zeros (exact, and castable to any
    device), and :meth:`reset` makes the fresh sums float64 again.
    """

    def add_float64_sum(self, name: str, shape: tuple[int, ...]) -> None:
        """Register a float64 state ``name`` of ``shape``, reduced across processes with ``sum``."""
        self.add_state(name, torch.zeros(shape), dist_reduce_fx="sum")  # type: ignore[attr-defined]
        setattr(self, name, torch.zeros(shape, dtype=torch.float64))
        self._float64_attributes = (*self._float64_attributes, name)  # type: ignore[has-type]

    def reset(self) -> None:
        """Reset the states; the sums are float64 zeros again, on the sums' device."""
        super().reset()  # type: ignore[misc]
        for name in self._float64_attributes:  # type: ignore[attr-defined]
            setattr(self, name, getattr(self, name).to(torch.float64))


def inception_forward(
    backbone: FIDInceptionV3, images: object, name: str, quantize: Quantize = "round"
) -> InceptionFeatures:
    """Validate and quantise ``images``, then run the FID Inception once for pool3 features and logits.

    Args:
        backbone: the frozen :class:`~percep_lightning.backbones.FIDInceptionV3`.
        images: ``uint8`` in [0, 255] or float in [0, 1], ``(N, 3 or 1, H, W)``.
        name: the argument name used in error messages.
        quantize: how float images become ``uint8`` (see the module docstring).

    Returns:
        :class:`~percep_lightning.backbones.InceptionFeatures` of float32 ``(N, 2048)`` and ``(N, 1008)``.
    """
    pixels = to_uint8(images, name, quantize)
    device = next(backbone.parameters()).device
    with exact_float32(device):
        return backbone(pixels.to(device))


def extract(extractor: FeatureExtractor, images: object, name: str, quantize: Quantize = "round") -> Tensor:
    """Validate ``images``, convert them to the extractor's ``input_format`` and return its ``(N, D)`` features.

    Float images become ``uint8`` with ``quantize`` for a ``"uint8"`` extractor; ``uint8`` images become
    float32 in [0, 1] for a ``"float"`` one. The extractor runs in plain float32 without autograd
    (:func:`exact_float32`) on its own device.

    Raises:
        TypeError, ValueError: as :func:`check_images`.
    """
    uint8 = extractor.input_format == "uint8"
    pixels = to_uint8(images, name, quantize) if uint8 else to_float(images, name)
    device = extractor_device(extractor)
    with exact_float32(device):
        return extractor.extract_features(pixels.to(device))


def extractor_device(extractor: object) -> torch.device:
    """The device of an extractor's first parameter (or buffer); the CPU for one without tensors."""
    if isinstance(extractor, torch.nn.Module):
        for tensor in (*extractor.parameters(), *extractor.buffers()):
            return tensor.device
    return torch.device("cpu")


def unit_float_pair(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a pair of image batches and return them as float32 in [0, 1].

    The same rules and messages as the other metrics (``uint8`` in [0, 255] or float in [0, 1],
    ``(N, 3 or 1, H, W)``), with the finiteness and range checks of both tensors in one ``aminmax`` pass
    each and one device synchronisation.

    Raises:
        TypeError: if either is not a tensor, or is neither ``uint8`` nor floating point.
        ValueError: on a bad or different shape, NaN/Inf values, or float values far outside [0, 1]
            (:data:`~percep_lightning.functional.inputs.RANGE_TOLERANCE`).
    """
    check_image_tensor(preds, "preds")
    check_image_tensor(target, "target")
    check_same_4d(preds, target)
    floats = {f"`{name}`": x for name, x in (("preds", preds), ("target", target)) if x.is_floating_point()}
    for label, bounds in value_bounds(floats).items():
        check_unit_range(bounds, f"float {label}")
    return to_unit_float(preds), to_unit_float(target)


def to_unit_float(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        images = images.to(torch.float32) / 255
    return images.detach().to(torch.float32)
