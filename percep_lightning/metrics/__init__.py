"""torchmetrics ``Metric``s: the Fréchet and kernel distances on any feature extractor (FID and KID on the
FID Inception, FD-DINOv2), CMMD, precision/recall/density/coverage, Inception Score, ArtFID, CFSD, and the
full-reference PSNR, SSIM, MS-SSIM, LPIPS and DISTS (state and multi-process sync, no Lightning code).

Also here: the registry of named metrics shared by the callback and ``evaluate``
(:mod:`percep_lightning.metrics.registry`), :class:`SharedInception` (one Inception forward feeding several
metrics) and the FID statistics files (:func:`save_stats`, :func:`load_stats`). Everything loads on first
use, so reading the registry (``percep-lightning evaluate --list-metrics``) does not import torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ArtFID": "artfid",
    "CFSD": "cfsd",
    "CMMD": "cmmd",
    "DISTS": "dists",
    "FrechetInceptionDistance": "fid",
    "FrechetDistance": "frechet",
    "InceptionScore": "inception_score",
    "KernelDistance": "kernel",
    "KernelInceptionDistance": "kid",
    "MSSSIM": "paired",
    "PSNR": "paired",
    "SSIM": "paired",
    "LPIPS": "paired_lpips",
    "PRDC": "prdc",
    "SharedInception": "shared_inception",
    "load_stats": "stats_io",
    "save_stats": "stats_io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
