"""Input validation shared by every loss and metric, with messages that name the argument."""

from __future__ import annotations

import inspect
import os
import types
import warnings
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from percep_lightning.functional.inputs import Reduction as Reduction  # re-exported for the losses
from percep_lightning.functional.inputs import far_outside, value_bounds

_REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def check_same_4d(preds: Tensor, target: Tensor) -> None:
    """Raise a ValueError unless ``preds`` and ``target`` have one shape, and it is 4-D."""
    if preds.shape != target.shape:
        raise ValueError(
            f"Expected `preds` and `target` to have the same shape, but got {tuple(preds.shape)} and "
            f"{tuple(target.shape)}."
        )
    if preds.ndim != 4:
        raise ValueError(
            f"Expected `preds` and `target` to be 4-D (N, C, H, W), but got shape {tuple(preds.shape)}."
        )


def check_pair(
    preds: Tensor, target: Tensor, *, channels: Sequence[int] | None = None, finite: bool = True
) -> None:
    """Check that ``preds`` and ``target`` are finite floating 4-D tensors of one shape.

    Args:
        preds: the predicted images, ``(N, C, H, W)``.
        target: the reference images, same shape.
        channels: the channel counts accepted, if restricted (e.g. ``(1, 3)``).
        finite: also check for NaN/Inf (callers that scan the values anyway pass ``False``).

    Raises:
        TypeError: if either is not a floating-point tensor.
        ValueError: on different shapes, a rank other than 4, a channel count outside ``channels``,
            or NaN/Inf values.
    """
    for name, x in (("preds", preds), ("target", target)):
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(x).__name__}.")
        if not x.is_floating_point():
            raise TypeError(f"Expected `{name}` to be a floating-point tensor, but got dtype {x.dtype}.")
    check_same_4d(preds, target)
    if channels is not None and preds.shape[1] not in channels:
        raise ValueError(
            f"Expected `preds` and `target` to have {' or '.join(map(str, channels))} channels, but got "
            f"{preds.shape[1]} (shape {tuple(preds.shape)})."
        )
    if finite:
        check_finite(preds, "preds")
        check_finite(target, "target")


def check_finite(x: Tensor, name: str) -> None:
    """Raise a ValueError naming ``name`` if ``x`` holds NaN or Inf values."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"Expected `{name}` to be finite, but it contains NaN or Inf values.")


def check_reduction(reduction: str) -> None:
    """Raise a ValueError unless ``reduction`` is ``"mean"``, ``"sum"`` or ``"none"``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"Expected `reduction` to be one of {_REDUCTIONS}, but got {reduction!r}.")


def check_positive(value: float, name: str) -> None:
    """Raise a ValueError naming ``name`` unless ``value > 0``."""
    if not value > 0:
        raise ValueError(f"Expected `{name}` to be > 0, but got {value}.")


def check_choice(value: str, name: str, choices: Sequence[str]) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``choices`` (listed in the message)."""
    if value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {tuple(choices)}, but got {value!r}.")


def reduce(values: Tensor, reduction: str) -> Tensor:
    """Apply a ``"mean" | "sum" | "none"`` reduction to per-image values of shape ``(N,)``."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def check_input_range(input_range: Sequence[float]) -> tuple[float, float]:
    """Validate an ``input_range`` argument and return it as a tuple of two floats.

    Raises:
        ValueError: unless it is two numbers with ``low < high``.
    """
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected `input_range` to be two numbers (low, high), but got {input_range!r}."
        ) from None
    if not low < high:
        raise ValueError(f"Expected `input_range` to satisfy low < high, but got {input_range!r}.")
    return low, high


# ---------------------------------------------------------------------------------------------------------
# The range warning of the losses: shown at the user's line, once per loss and calling line.

_INTERNAL_FOLDERS: tuple[str, ...] = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,  # percep_lightning
    os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,  # torch: Module.__call__, hooks
)
"""Code in these folders is never the line a warning about the user's inputs should point at."""

_RANGE_WARNED: weakref.WeakKeyDictionary[object, set[tuple[str, int]]] = weakref.WeakKeyDictionary()
_RANGE_WARNED_WITHOUT_OWNER: set[tuple[str, int]] = set()


def _first_outside_frame() -> tuple[types.FrameType | None, int]:
    """The first frame outside percep_lightning and torch on the stack of this function's caller.

    Returns ``(frame, stacklevel)``: the frame (``None`` if every frame is internal) and the
    ``stacklevel`` that makes a ``warnings.warn`` in this function's caller point at it (at the
    outermost frame if every frame is internal).
    """
    frame = inspect.currentframe()
    frame = frame.f_back if frame is not None else None  # the caller: stacklevel 1
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_FOLDERS):
        frame = frame.f_back
        level += 1
    return frame, level if frame is not None else max(1, level - 1)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes the caller's ``warnings.warn`` point at the user's line.

    That line is the first frame outside percep_lightning and torch, found by walking the stack, so it
    is right however many frames ``nn.Module.__call__``, hooks or a wrapping loss (``CompositeLoss``) add.
    A caller passing the level on to a function one frame deeper adds 1.
    """
    frame, level = _first_outside_frame()
    del frame
    return level - 1  # the frames counted from this function's caller


def warn_range_once(owner: object | None, message: str) -> bool:
    """Warn ``message`` (a ``UserWarning``) at the user's line, once per ``owner`` and calling line.

    An un-clamped network output leaves the range a little differently at every training step; the
    message shows the values, so Python's once-per-location filter would repeat it every step. This
    remembers, per ``owner`` (a loss instance, held weakly; ``None``: shared), the user's lines it has
    warned at.

    Returns:
        Whether the warning was issued.
    """
    frame, level = _first_outside_frame()
    site = ("", 0) if frame is None else (frame.f_code.co_filename, frame.f_lineno)
    del frame
    seen = _RANGE_WARNED_WITHOUT_OWNER if owner is None else _RANGE_WARNED.setdefault(owner, set())
    if site in seen:
        return False
    seen.add(site)
    warnings.warn(message, UserWarning, stacklevel=level)
    return True


def check_loss_inputs(
    preds: Tensor,
    target: Tensor,
    input_range: tuple[float, float],
    *,
    owner: object | None,
) -> None:
    """Validate a loss's pair of image batches; warn, once per loss and line, if far outside ``input_range``.

    Shapes, dtypes and channels (1 or 3) are checked as :func:`check_pair` does; finiteness and the range
    share one ``aminmax`` pass per tensor and one device sync. "Far outside" is the package's one range
    rule (:data:`~percep_lightning.functional.inputs.RANGE_TOLERANCE`: an un-clamped network output
    overshooting a little stays silent). The warning points at the user's line (see :func:`warn_range_once`).

    Args:
        preds: the predicted images, ``(N, C, H, W)``.
        target: the reference images, the same shape.
        input_range: the declared ``(low, high)`` pixel range.
        owner: the loss module calling this: it warns once per calling line (``None``: once per line).

    Raises:
        TypeError: if either is not a floating-point tensor.
        ValueError: on different shapes, a rank other than 4, a channel count other than 1 or 3, empty
            batches, or NaN/Inf values.

    Example:
        >>> import torch
        >>> check_loss_inputs(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), (0.0, 1.0), owner=None)
    """
    check_pair(preds, target, channels=(1, 3), finite=False)
    if preds.numel() == 0:
        raise ValueError(f"Expected non-empty `preds` and `target`, but got shape {tuple(preds.shape)}.")
    bounds = value_bounds({"`preds`": preds, "`target`": target})
    outside = [
        f"{label} in [{lo:.3g}, {hi:.3g}]"
        for label, (lo, hi) in bounds.items()
        if far_outside((lo, hi), *input_range)
    ]
    if outside:
        warn_range_once(
            owner,
            f"Values far outside the declared input_range {input_range}: {' and '.join(outside)}. Pass the "
            "right `input_range` (e.g. (-1, 1) or (0, 255)), or the loss compares the wrong pixel scale. "
            "(Shown once per loss and calling line.)",
        )
