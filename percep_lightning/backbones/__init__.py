"""Frozen pretrained feature extractors with named outputs, and the resolution of their weights.

What users call is exported here; the building blocks (``FrozenBackbone``, ``HoldsFrozen``,
``layer_index``, ``lpips_linear_weights``, ``resolve_state_dict``, ...) are imported from their modules.
"""

from percep_lightning.backbones.inception import FIDInceptionV3, InceptionFeatures
from percep_lightning.backbones.torchvision_trunks import (
    LAYER_NAMES,
    TorchvisionFeatures,
    preferred_memory_format,
)
from percep_lightning.backbones.weights import WEIGHTS, WeightsUnavailableError, fetch

__all__ = [
    "FIDInceptionV3",
    "InceptionFeatures",
    "LAYER_NAMES",
    "TorchvisionFeatures",
    "WEIGHTS",
    "WeightsUnavailableError",
    "fetch",
    "preferred_memory_format",
]
