"""Lightning callbacks that log image metrics and image grids during validation."""

from percep_lightning.callbacks.image_grid import ImageGridCallback
from percep_lightning.callbacks.image_metrics import ImageMetricsCallback

__all__ = ["ImageGridCallback", "ImageMetricsCallback"]
