"""Frozen pretrained feature extractors with named outputs, and the resolution of their weights.

What users call is exported here; the building blocks (``FrozenBackbone``, ``HoldsFrozen``,
``layer_index``, ``lpips_linear_weights``, ``dists_alpha_beta``, ``resolve_state_dict``, the resize
functions, ...) are imported from their modules.
"""

from percep_lightning.backbones.art_inception import ArtInception
from percep_lightning.backbones.base import preferred_memory_format
from percep_lightning.backbones.clip import CLIPImageEncoder
from percep_lightning.backbones.dinov2 import DINOV2_ARCHS, DINOv2, DINOv2Arch
from percep_lightning.backbones.extractor import FeatureExtractor, ModuleExtractor, as_extractor
from percep_lightning.backbones.inception import RESIZE_MODES, FIDInceptionV3, InceptionFeatures, ResizeMode
from percep_lightning.backbones.l2pool_vgg import L2PoolVGG16
from percep_lightning.backbones.torchvision_trunks import LAYER_NAMES, TorchvisionFeatures
from percep_lightning.backbones.weights import WEIGHTS, WeightsUnavailableError, fetch

__all__ = [
    "ArtInception",
    "CLIPImageEncoder",
    "DINOV2_ARCHS",
    "DINOv2",
    "DINOv2Arch",
    "FIDInceptionV3",
    "FeatureExtractor",
    "ModuleExtractor",
    "as_extractor",
    "InceptionFeatures",
    "L2PoolVGG16",
    "LAYER_NAMES",
    "RESIZE_MODES",
    "ResizeMode",
    "TorchvisionFeatures",
    "WEIGHTS",
    "WeightsUnavailableError",
    "fetch",
    "preferred_memory_format",
]
