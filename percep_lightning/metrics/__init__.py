"""torchmetrics ``Metric``s: FID, Inception Score, KID, ArtFID, CFSD, and the full-reference PSNR, SSIM,
MS-SSIM, LPIPS and DISTS (state and multi-process sync, no Lightning code).

Also here: :class:`SharedInception` (one Inception forward feeding several metrics) and the FID
statistics files (:func:`save_stats`, :func:`load_stats`).
"""

from percep_lightning.metrics.artfid import ArtFID
from percep_lightning.metrics.cfsd import CFSD
from percep_lightning.metrics.dists import DISTS
from percep_lightning.metrics.fid import FrechetInceptionDistance
from percep_lightning.metrics.inception_score import InceptionScore
from percep_lightning.metrics.kid import KernelInceptionDistance
from percep_lightning.metrics.paired import MSSSIM, PSNR, SSIM
from percep_lightning.metrics.paired_lpips import LPIPS
from percep_lightning.metrics.shared_inception import SharedInception
from percep_lightning.metrics.stats_io import load_stats, save_stats

__all__ = [
    "CFSD",
    "DISTS",
    "LPIPS",
    "MSSSIM",
    "PSNR",
    "SSIM",
    "ArtFID",
    "FrechetInceptionDistance",
    "InceptionScore",
    "KernelInceptionDistance",
    "SharedInception",
    "load_stats",
    "save_stats",
]
