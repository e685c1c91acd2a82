"""Training losses as ``nn.Module``s: pixel, SSIM/MS-SSIM, VGG perceptual + style, LPIPS, CFSD, composite."""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "PixelLoss": "pixel",
    "SSIMLoss": "ssim",
    "MSSSIMLoss": "ssim",
    "VGGPerceptualLoss": "perceptual",
    "LPIPSLoss": "lpips",
    "CFSDLoss": "cfsd",
    "CompositeLoss": "composite",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
