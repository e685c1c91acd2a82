"""Pure functions on tensors: the maths behind every loss and metric."""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ssim": "ssim",
    "ms_ssim": "ssim",
    "psnr": "pixel",
    "pixel_loss": "pixel",
    "gram_matrix": "perceptual",
    "cfsd": "cfsd",
    "frechet_distance": "fid",
    "inception_score": "inception_score",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
