"""Reading the images out of ``validation_step`` / ``test_step`` outputs, with errors in the callback's terms."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from percep_lightning.functional._images import check_unit_range
from percep_lightning.functional.inputs import value_bounds

__all__ = ["Extractor", "extract_images"]

Extractor = Callable[[Any, Any], Mapping[str, Tensor]]


def extract_images(
    outputs: Any,
    batch: Any,
    *,
    keys: Mapping[str, str],
    extractor: Extractor | None,
    step: str,
) -> dict[str, Tensor]:
    """The image batches of one step output, checked and clamped to [0, 1].

    Args:
        outputs: what the step returned.
        batch: the batch the step received (for ``extractor``).
        keys: output key -> the callback argument that named it (``{"preds": "keys['preds']", ...}``).
        extractor: ``extractor(outputs, batch) -> dict`` when the output is not such a dict.
        step: ``"validation_step"`` or ``"test_step"``, for messages.

    Returns:
        ``{key: images}``, detached, every float batch clamped to [0, 1].

    Raises:
        TypeError: for a non-dict output, a non-tensor value or a dtype other than uint8 / float.
        ValueError: for a missing key, a shape other than ``(N, 1 or 3, H, W)``, different image counts,
            NaN/Inf, or float values far outside ``[0, 1]`` by the package's one range rule
            (:data:`~percep_lightning.functional.inputs.RANGE_TOLERANCE`). Float values within it are
            clamped to [0, 1], as saving the images would.
    """
    source = extractor(outputs, batch) if extractor is not None else outputs
    where = "the `extractor` result" if extractor is not None else f"the `{step}` output"
    if not isinstance(source, Mapping):
        raise TypeError(
            f"ImageMetricsCallback expected {where} to be a dict with keys {list(keys)}, but got "
            f"{type(source).__name__}. Return a dict from `{step}` or pass `extractor=`."
        )
    missing = [key for key in keys if key not in source]
    if missing:
        arguments = ", ".join(f"`{keys[key]}`={key!r}" for key in missing)
        raise ValueError(
            f"ImageMetricsCallback needs {missing} in {where}, which has keys {sorted(map(str, source))}; check "
            f"{arguments} or pass `extractor=`."
        )
    images = {key: _checked(source[key], f"`{argument}`={key!r}", where) for key, argument in keys.items()}
    counts = {key: int(x.shape[0]) for key, x in images.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"ImageMetricsCallback expected the image batches in {where} to hold the same number of images, but "
            f"got {counts}."
        )
    return images


def _checked(value: object, what: str, where: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"Expected the images under {what} in {where} to be a torch.Tensor, but got {type(value).__name__}."
        )
    if value.dtype != torch.uint8 and not value.is_floating_point():
        raise TypeError(
            f"Expected the images under {what} in {where} to be uint8 in [0, 255] or float in [0, 1], but got "
            f"dtype {value.dtype}."
        )
    if value.ndim != 4 or value.shape[1] not in (1, 3) or value.shape[-1] == 0 or value.shape[-2] == 0:
        raise ValueError(
            f"Expected the images under {what} in {where} to have shape (N, 3, H, W) or (N, 1, H, W), but got "
            f"{tuple(value.shape)}."
        )
    value = value.detach()
    if not value.is_floating_point() or value.numel() == 0:
        return value
    ((low, high),) = value_bounds({f"the image batch under {what} in {where}": value}).values()
    check_unit_range((low, high), f"float images under {what} in {where}")
    return value.clamp(0, 1) if low < 0 or high > 1 else value
