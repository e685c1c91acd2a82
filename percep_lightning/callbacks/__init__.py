"""Lightning callbacks that log image metrics during validation."""

from percep_lightning.callbacks.image_metrics import ImageMetricsCallback

__all__ = ["ImageMetricsCallback"]
