"""torchmetrics ``Metric``s: FID, Inception Score, CFSD, and the full-reference PSNR, SSIM, MS-SSIM and LPIPS
(state and multi-process sync, no Lightning code)."""

from percep_lightning.metrics.cfsd import CFSD
from percep_lightning.metrics.fid import FrechetInceptionDistance
from percep_lightning.metrics.inception_score import InceptionScore
from percep_lightning.metrics.paired import MSSSIM, PSNR, SSIM
from percep_lightning.metrics.paired_lpips import LPIPS

__all__ = ["CFSD", "LPIPS", "MSSSIM", "PSNR", "SSIM", "FrechetInceptionDistance", "InceptionScore"]
