"""The CLIP ViT-L/14 (336 px) image embedding of CMMD (Jayasumana et al. 2024), as its reference computes it.

CMMD compares two image sets through the L2-normalised image embeddings of OpenAI's CLIP ViT-L/14 at
336x336 pixels. Its reference (``cmmd/io_util.py`` and ``cmmd/embedding.py``, and the PyTorch port on
``openai/clip-vit-large-patch14-336`` from transformers) prepares each image as follows:

1. the largest centred square is cut out of the 8-bit image (``(W - s) // 2``, ``(H - s) // 2``, with
   ``s = min(H, W)``) and resized to 336x336 with Pillow's bicubic filter (antialiased when shrinking),
   still 8-bit; a grey image is then repeated to three channels;
2. the pixels become float32 and are divided by 255;
3. a bicubic interpolation to the processor's crop size (336) follows. At 336 -> 336 it is an identity
   (the cubic weights at a zero offset are exactly ``(0, 1, 0, 0)``), so it is not repeated here;
4. CLIP's mean and standard deviation normalise each channel, ``(x - mean) / std`` in float32;
5. the vision transformer's pooled output goes through the projection head (``image_embeds``), and the
   768-d result is divided by its L2 norm.

Step 1 is :func:`~percep_lightning.backbones.pil_resize.resize_uint8`: ``resize="pil"`` runs Pillow itself
(exact), ``resize="torch"`` an antialiased bicubic on the images' device (within a few 8-bit steps).

The network is transformers' ``CLIPVisionModelWithProjection``, an optional dependency
(``pip install "percep-lightning[clip]"``), built from a configuration written here so that nothing is
fetched from the Hugging Face hub; only the weights file is downloaded (``"default"``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from percep_lightning.backbones.base import FrozenBackbone
from percep_lightning.backbones.extractor import module_digest
from percep_lightning.backbones.pil_resize import (
    PilResizeMode,
    centre_crop_square,
    check_pil_resize,
    check_uint8_images,
    resize_uint8,
)
from percep_lightning.backbones.weights import WeightsArg, check_state_dict, resolve_state_dict

__all__ = ["CLIP_MEAN", "CLIP_STD", "CLIP_VIT_L14_336", "CLIPImageEncoder", "clip_vision_config"]

WEIGHTS_NAME = "clip_vit_l14_336"

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
"""CLIP's per-channel mean of [0, 1] RGB images."""
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
"""CLIP's per-channel standard deviation of [0, 1] RGB images."""

CLIP_VIT_L14_336: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
"""The vision tower of ``openai/clip-vit-large-patch14-336`` (its ``config.json``, with the defaults it
leaves implicit written out)."""

_ARCHITECTURE_KEYS = tuple(CLIP_VIT_L14_336)
_DROPPED_PREFIXES = ("text_model.", "text_projection.", "logit_scale")
"""The text tower, its projection and the logit scale of the full CLIP file: not used by image embeddings."""

_INSTALL_HINT = 'CLIPImageEncoder needs the transformers package: pip install "percep-lightning[clip]"'


def _transformers() -> Any:
    """The ``transformers`` module, or an ImportError saying how to install it."""
    try:
        import transformers
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return transformers


def clip_vision_config(config: Any = None) -> Any:
    """A transformers ``CLIPVisionConfig`` with scaled-dot-product attention.

    Args:
        config: ``None`` (ViT-L/14 at 336 px, :data:`CLIP_VIT_L14_336`), a ``CLIPVisionConfig`` (copied), or
            a dict of its arguments.

    Raises:
        ImportError: if transformers is not installed.
        TypeError: for any other ``config``.
    """
    vision_config = _transformers().CLIPVisionConfig
    if config is None:
        config = dict(CLIP_VIT_L14_336)
    elif isinstance(config, vision_config):
        config = config.to_dict()
    elif not isinstance(config, Mapping):
        raise TypeError(
            f"Expected `config` to be None, a CLIPVisionConfig or a dict, but got {type(config).__name__}."
        )
    # "sdpa" equals the eager attention to float32 round-off (tests/backbones/test_clip_encoder.py).
    return vision_config.from_dict(dict(config), attn_implementation="sdpa")


def _no_init_weights() -> contextlib.AbstractContextManager[Any]:
    """transformers' own switch that skips random initialisation (a ViT-L takes seconds) before a load."""
    for module in ("transformers.initialization", "transformers.modeling_utils"):
        with contextlib.suppress(ImportError):
            return __import__(module, fromlist=["no_init_weights"]).no_init_weights()
    return contextlib.nullcontext()


def vision_state_dict(state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """The vision keys of a CLIP state dict (the full model's or the vision tower's alone).

    The text tower, its projection and ``logit_scale`` are dropped, and so are ``position_ids`` buffers
    (older transformers saved them; they are ``arange`` and rebuilt by the model).

    Raises:
        RuntimeError: naming ``source`` when the state holds no vision key at all.
    """
    vision = {
        key: value
        for key, value in state.items()
        if not key.startswith(_DROPPED_PREFIXES) and not key.endswith("position_ids")
    }
    if not any(key.startswith("vision_model.") for key in vision):
        raise RuntimeError(
            f"Weights from {source} hold no CLIP vision tower (no `vision_model.*` keys); expected the full CLIP "
            "checkpoint (`pytorch_model.bin` or `model.safetensors` of openai/clip-vit-large-patch14-336) or a "
            f"state dict of its `vision_model.*` and `visual_projection.weight` tensors. Got keys: {_preview(state)}."
        )
    return vision


def _preview(keys: Mapping[str, Any] | list[str], limit: int = 6) -> str:
    names = sorted(keys)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


class CLIPImageEncoder(FrozenBackbone):
    """The frozen CLIP image encoder of CMMD: ``uint8`` images in, L2-normalised embeddings out.

    See the module notes for the preprocessing, which follows CMMD's reference step by step.

    Args:
        weights: ``"default"`` (the official ``openai/clip-vit-large-patch14-336`` checkpoint of transformers,
            cached as ``clip-vit-large-patch14-336.bin``), a path to a file in that format (the full CLIP
            ``pytorch_model.bin``, or its ``model.safetensors``), a state dict (the full model's or only its
            vision keys), or ``None`` for random weights. The text tower in the file is ignored; every vision
            tensor must be there with its shape.
        resize: how the centred square reaches the network's input size: ``"pil"`` (default; Pillow's 8-bit
            bicubic on the CPU, as the reference) or ``"torch"`` (antialiased bicubic on the images' device,
            within a few 8-bit steps of Pillow).
        config: the vision tower: ``None`` for ViT-L/14 at 336 px (:data:`CLIP_VIT_L14_336`), or a
            ``CLIPVisionConfig`` or dict (e.g. a small network for tests). Its ``image_size`` is the resize
            target and its ``projection_dim`` the embedding size.

    Shape:
        - Input: ``(N, 3, H, W)`` or ``(N, 1, H, W)`` ``uint8`` pixels in [0, 255] (grey is repeated to three
          channels, as the reference does with grey files).
        - Output: ``(N, projection_dim)`` float32 unit vectors (768 for ViT-L/14).

    Raises:
        ImportError: if transformers is not installed.
        ValueError: for an unknown ``resize``.
        TypeError: for a ``config`` that is neither None, a ``CLIPVisionConfig`` nor a dict.
        FileNotFoundError, RuntimeError, WeightsUnavailableError: as
            :func:`~percep_lightning.backbones.weights.resolve_state_dict`; RuntimeError, naming the file, when
            vision keys are missing or mis-shaped.

    Example:
        >>> import torch
        >>> tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        ...             image_size=28, patch_size=14, projection_dim=8)
        >>> encoder = CLIPImageEncoder(weights=None, config=tiny)
        >>> encoder.extract_features(torch.zeros(2, 3, 40, 30, dtype=torch.uint8)).shape
        torch.Size([2, 8])
    """

    input_format = "uint8"
    """``uint8`` pixels: the reference resizes the 8-bit image."""

    def __init__(
        self, weights: WeightsArg = "default", *, resize: PilResizeMode = "pil", config: Any = None
    ) -> None:
        super().__init__()
        check_pil_resize(resize)
        transformers = _transformers()
        vision_config = clip_vision_config(config)
        self.resize = resize
        self.image_size = int(vision_config.image_size)
        self.num_features = int(vision_config.projection_dim)
        self.name = _name(vision_config)
        # Resolve the file before building: an offline "default" fails without building a ViT-L first.
        state, source = resolve_state_dict(WEIGHTS_NAME, weights)
        with _no_init_weights() if state is not None else contextlib.nullcontext():
            self.model = transformers.CLIPVisionModelWithProjection(vision_config)
        if state is not None:
            self._load(vision_state_dict(state, source), source)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def _load(self, state: dict[str, Tensor], source: str) -> None:
        own = self.model.state_dict()
        for key in own:  # transformers versions that keep position_ids in the state dict
            if key.endswith("position_ids"):
                state[key] = own[key]
        check_state_dict(self.model, state, source, WEIGHTS_NAME)
        self.model.load_state_dict(state, strict=True)

    def preprocess(self, images: Tensor) -> Tensor:
        """Centre square, resize to ``image_size`` (8-bit), ``/255`` and CLIP's normalisation: the network's input.

        Raises:
            TypeError: if ``images`` is not a ``uint8`` tensor.
            ValueError: if ``images`` is not ``(N, 3 or 1, H, W)`` with ``H, W >= 1``.
        """
        check_uint8_images(images, channels=(3, 1))
        square = centre_crop_square(images.expand(-1, 3, -1, -1))
        pixels = resize_uint8(square, (self.image_size, self.image_size), self.resize)
        pixels = pixels.to(self.mean.device, torch.float32) / 255
        return (pixels - self.mean) / self.std

    def forward(self, images: Tensor) -> Tensor:
        """The ``(N, num_features)`` L2-normalised image embeddings of ``uint8`` images."""
        pixels = self.preprocess(images)
        dtype = self.model.visual_projection.weight.dtype
        embeds = self.model(pixel_values=pixels.to(dtype)).image_embeds.float()
        return embeds / torch.linalg.vector_norm(embeds, dim=-1, keepdim=True)

    # ------------------------------------------------ the FeatureExtractor contract (backbones.extractor)
    @property
    def identity(self) -> str:
        """``"<network>:<resize>:<sha256 of the weights>"`` (cache keys), e.g. ``clip_vit_l14_336:pil:...``."""
        return f"{self.name}:{self.resize}:{module_digest(self)}"

    def extract_features(self, images: Tensor) -> Tensor:
        """The ``(N, num_features)`` unit-norm embeddings of ``uint8`` images (the same as calling the module)."""
        return self(images)


def _name(config: Any) -> str:
    """``clip_vit_l14_336`` for that architecture, else ``clip_vision_<hash of the architecture>``."""
    architecture = {key: getattr(config, key) for key in _ARCHITECTURE_KEYS}
    if architecture == CLIP_VIT_L14_336:
        return WEIGHTS_NAME
    digest = hashlib.sha256(json.dumps(architecture, sort_keys=True).encode()).hexdigest()[:12]
    return f"clip_vision_{digest}"
