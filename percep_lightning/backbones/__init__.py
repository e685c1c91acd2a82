"""Frozen pretrained feature extractors with named outputs, and the resolution of their weights."""

from percep_lightning.backbones.art_inception import ArtInception, resize_shorter_side
from percep_lightning.backbones.base import FrozenBackbone, HoldsFrozen
from percep_lightning.backbones.inception import (
    RESIZE_MODES,
    FIDInceptionV3,
    InceptionFeatures,
    ResizeMode,
    resize_like_clean_fid,
    resize_like_tensorflow1,
)
from percep_lightning.backbones.lpips_weights import lpips_linear_weights
from percep_lightning.backbones.torchvision_trunks import LAYER_NAMES, TorchvisionFeatures, layer_index
from percep_lightning.backbones.weights import (
    WEIGHTS,
    WeightsArg,
    WeightsSpec,
    WeightsUnavailableError,
    fetch,
    resolve_state_dict,
)

__all__ = [
    "ArtInception",
    "FIDInceptionV3",
    "FrozenBackbone",
    "HoldsFrozen",
    "InceptionFeatures",
    "LAYER_NAMES",
    "RESIZE_MODES",
    "ResizeMode",
    "TorchvisionFeatures",
    "WEIGHTS",
    "WeightsArg",
    "WeightsSpec",
    "WeightsUnavailableError",
    "fetch",
    "layer_index",
    "lpips_linear_weights",
    "resize_like_clean_fid",
    "resize_like_tensorflow1",
    "resize_shorter_side",
    "resolve_state_dict",
]
