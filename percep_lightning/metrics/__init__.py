"""torchmetrics ``Metric``s: FID, Inception Score, KID, ArtFID, CFSD (state and multi-process sync, no Lightning code)."""

from percep_lightning.metrics.artfid import ArtFID
from percep_lightning.metrics.cfsd import CFSD
from percep_lightning.metrics.fid import FrechetInceptionDistance
from percep_lightning.metrics.inception_score import InceptionScore
from percep_lightning.metrics.kid import KernelInceptionDistance

__all__ = ["ArtFID", "CFSD", "FrechetInceptionDistance", "InceptionScore", "KernelInceptionDistance"]
