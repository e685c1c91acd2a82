"""torchmetrics ``Metric``s: the Fréchet and kernel distances on any feature extractor (FID and KID on the
FID Inception), Inception Score, ArtFID, CFSD, and the full-reference PSNR, SSIM, MS-SSIM and LPIPS (state
and multi-process sync, no Lightning code).

Also here: :class:`SharedInception` (one Inception forward feeding several metrics) and the FID
statistics files (:func:`save_stats`, :func:`load_stats`).
"""

from percep_lightning.metrics.artfid import ArtFID
from percep_lightning.metrics.cfsd import CFSD
from percep_lightning.metrics.fid import FrechetInceptionDistance
from percep_lightning.metrics.frechet import FrechetDistance
from percep_lightning.metrics.inception_score import InceptionScore
from percep_lightning.metrics.kernel import KernelDistance
from percep_lightning.metrics.kid import KernelInceptionDistance
from percep_lightning.metrics.paired import MSSSIM, PSNR, SSIM
from percep_lightning.metrics.paired_lpips import LPIPS
from percep_lightning.metrics.shared_inception import SharedInception
from percep_lightning.metrics.stats_io import load_stats, save_stats

__all__ = [
    "CFSD",
    "LPIPS",
    "MSSSIM",
    "PSNR",
    "SSIM",
    "ArtFID",
    "FrechetDistance",
    "KernelDistance",
    "FrechetInceptionDistance",
    "InceptionScore",
    "KernelInceptionDistance",
    "SharedInception",
    "load_stats",
    "save_stats",
]
