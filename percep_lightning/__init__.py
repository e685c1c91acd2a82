"""percep_lightning: perceptual losses and image-quality validation metrics for PyTorch Lightning.

Public API:

* :mod:`percep_lightning.functional`: pure functions on tensors (``ssim``, ``ms_ssim``, ``psnr``,
  ``frechet_distance``, ``inception_score``, ...).
* :mod:`percep_lightning.losses`: ``nn.Module`` losses and ``CompositeLoss``.
* :mod:`percep_lightning.metrics`: torchmetrics ``Metric``s (FID, KID, IS, Fréchet and kernel distances on any
  extractor, CMMD, PRDC, CFSD, PSNR/SSIM/LPIPS/DISTS) and the registry of named metrics.
* :mod:`percep_lightning.callbacks`: ``ImageMetricsCallback`` for the Lightning ``Trainer``.
* :mod:`percep_lightning.backbones`: the frozen pretrained networks and their weights.
* :mod:`percep_lightning.evaluation`: metrics over folders of saved images (``percep-lightning evaluate``).
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("functional", "losses", "metrics", "callbacks", "backbones", "evaluation")
__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    # Submodules load on first use: `import percep_lightning` stays cheap and never touches the network.
    if name in _SUBMODULES:
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
