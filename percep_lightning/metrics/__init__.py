"""torchmetrics ``Metric``s: FID, Inception Score, CFSD (state and multi-process sync, no Lightning code)."""

from percep_lightning.metrics.cfsd import CFSD
from percep_lightning.metrics.fid import FrechetInceptionDistance
from percep_lightning.metrics.inception_score import InceptionScore

__all__ = ["CFSD", "FrechetInceptionDistance", "InceptionScore"]
