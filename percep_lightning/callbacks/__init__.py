"""Lightning callbacks that log image metrics during validation."""

from importlib import import_module
from typing import Any

_EXPORTS = {"ImageMetricsCallback": "image_metrics"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
