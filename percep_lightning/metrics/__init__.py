"""torchmetrics ``Metric``s: FID, Inception Score, CFSD (state and multi-process sync, no Lightning code)."""

from importlib import import_module
from typing import Any

_EXPORTS = {"FrechetInceptionDistance": "fid", "InceptionScore": "inception_score", "CFSD": "cfsd"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
