"""The DINOv2 ViT/14 image encoders (Oquab et al. 2023) as FD-DINOv2 reads them (Stein et al. 2023, dgm-eval).

The feature of an image is what dgm-eval's ``DINOv2Encoder`` computes with the ``facebookresearch/dinov2``
hub model:

1. the 8-bit RGB image resized to 224x224 with Pillow's bicubic filter (``Resize((224, 224), BICUBIC)``
   on the PIL image: the aspect ratio is not kept and nothing is cropped);
2. ``ToTensor`` (values / 255) and the ImageNet mean and standard deviation;
3. ``model(x)``: the class token after the final LayerNorm (``x_norm_clstoken``), not L2-normalised.

The network is timm's ``VisionTransformer`` with the official configuration (patch 14, LayerNorm eps 1e-6,
LayerScale, a GELU MLP or, for ViT-g/14, a packed SwiGLU), loaded from the official
``dinov2_<arch>_pretrain.pth`` files. The official model is built for 518-pixel images (a 37x37 grid of
position embeddings) and resamples its position embeddings to the input's grid at every call: bicubic,
with ``scale_factor = (16 + 0.1) / 37`` rather than an output size, and no antialiasing. Only 224x224
images reach the transformer here, so that resampling is done once, when the weights are loaded, with
the same call; timm's own load-time resampling (an output size, antialiased) gives other values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from percep_lightning.backbones.base import FrozenBackbone
from percep_lightning.backbones.extractor import module_digest
from percep_lightning.backbones.pil_resize import (
    PilResizeMode,
    check_pil_resize,
    check_uint8_images,
    resize_uint8,
)
from percep_lightning.backbones.weights import WeightsArg, check_state_shapes, resolve_state_dict
from percep_lightning.functional._images import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize
from percep_lightning.functional.inputs import check_int

__all__ = ["DINOV2_ARCHS", "DINOV2_SIZE", "DINOv2", "DINOv2Arch", "interpolate_pos_embed"]

DINOV2_SIZE = 224
"""The side every image is resized to before the network (dgm-eval's ``Resize((224, 224))``)."""
PATCH_SIZE = 14
PRETRAIN_GRID = 37
"""The official models' position-embedding grid: 518-pixel images in 14-pixel patches."""
INTERPOLATE_OFFSET = 0.1
"""The official run-time resampling's offset: ``scale_factor = (grid + 0.1) / 37``."""
_INSTALL_HINT = 'pip install "percep-lightning[dinov2]"'


@dataclass(frozen=True)
class DINOv2Arch:
    """The size of a DINOv2 ViT/14 (patch 14, a 37x37 position-embedding grid, class token, LayerScale).

    The four official sizes are in :data:`DINOV2_ARCHS`; other sizes describe files in the same format
    (a network trained with the official code, or a small one for tests).

    Attributes:
        embed_dim: the token width, also the feature size.
        depth: the number of transformer blocks.
        num_heads: the attention heads per block (``embed_dim`` must be a multiple).
        ffn: ``"mlp"`` (``fc1``, GELU, ``fc2``, hidden width ``4 * embed_dim``) or ``"swiglu"`` (ViT-g/14's
            ``w12``, SiLU gate, ``w3``, hidden width ``(int(8 * embed_dim / 3) + 7) // 8 * 8``).
        name: what :attr:`DINOv2.identity` and messages call it (default: the sizes).

    Raises:
        TypeError: for a size that is not an integer.
        ValueError: for a size below 1, ``embed_dim`` not a multiple of ``num_heads``, or an unknown ``ffn``.

    Example:
        >>> DINOv2Arch(32, 2, 2).official_shapes()["pos_embed"]
        (1, 1370, 32)
    """

    embed_dim: int
    depth: int
    num_heads: int
    ffn: Literal["mlp", "swiglu"] = "mlp"
    name: str = ""

    def __post_init__(self) -> None:
        for field in ("embed_dim", "depth", "num_heads"):
            check_int(getattr(self, field), field, minimum=1)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"Expected `embed_dim` to be a multiple of `num_heads`, but got {self.embed_dim} and {self.num_heads}."
            )
        if self.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"Expected `ffn` to be 'mlp' or 'swiglu', but got {self.ffn!r}.")

    @property
    def label(self) -> str:
        """``name``, or ``"vit<embed_dim>x<depth>h<num_heads>_<ffn>"`` when it is empty."""
        return self.name or f"vit{self.embed_dim}x{self.depth}h{self.num_heads}_{self.ffn}"

    @property
    def hidden_features(self) -> int:
        """The width inside the feed-forward block (for ``"swiglu"``, of each of its two halves)."""
        hidden = 4 * self.embed_dim
        return hidden if self.ffn == "mlp" else (int(hidden * 2 / 3) + 7) // 8 * 8

    def official_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{key: shape}`` of a ``dinov2_<arch>_pretrain.pth`` file of this size."""
        dim, hidden = self.embed_dim, self.hidden_features
        shapes: dict[str, tuple[int, ...]] = {
            "cls_token": (1, 1, dim),
            "pos_embed": (1, 1 + PRETRAIN_GRID**2, dim),
            "mask_token": (1, dim),
            "patch_embed.proj.weight": (dim, 3, PATCH_SIZE, PATCH_SIZE),
            "patch_embed.proj.bias": (dim,),
            "norm.weight": (dim,),
            "norm.bias": (dim,),
        }
        if self.ffn == "mlp":
            ffn = {"mlp.fc1": (hidden, dim), "mlp.fc2": (dim, hidden)}
        else:
            ffn = {"mlp.w12": (2 * hidden, dim), "mlp.w3": (dim, hidden)}
        layers = {
            "norm1": (dim,),
            "attn.qkv": (3 * dim, dim),
            "attn.proj": (dim, dim),
            "norm2": (dim,),
            **ffn,
        }
        for i in range(self.depth):
            for layer, shape in layers.items():
                shapes[f"blocks.{i}.{layer}.weight"] = shape
                shapes[f"blocks.{i}.{layer}.bias"] = shape[:1]
            shapes[f"blocks.{i}.ls1.gamma"] = (dim,)
            shapes[f"blocks.{i}.ls2.gamma"] = (dim,)
        return shapes


DINOV2_ARCHS: dict[str, DINOv2Arch] = {
    "vits14": DINOv2Arch(384, 12, 6, name="vits14"),
    "vitb14": DINOv2Arch(768, 12, 12, name="vitb14"),
    "vitl14": DINOv2Arch(1024, 24, 16, name="vitl14"),
    "vitg14": DINOv2Arch(1536, 40, 24, ffn="swiglu", name="vitg14"),
}
"""The official sizes (``facebookresearch/dinov2`` hub ``dinov2_<name>``), by name."""


def interpolate_pos_embed(pos_embed: Tensor, grid: int = DINOV2_SIZE // PATCH_SIZE) -> Tensor:
    """The official run-time resampling of ``(1, 1 + M * M, D)`` position embeddings to a ``grid x grid`` input.

    As ``DinoVisionTransformer.interpolate_pos_encoding``: in float32, the class token's embedding kept,
    the ``M x M`` patch embeddings resampled bicubically with ``scale_factor = (grid + 0.1) / M`` (which
    sets both the output size, ``grid``, and the sampling positions) and no antialiasing.

    Returns:
        ``(1, 1 + grid * grid, D)`` float32.

    Raises:
        ValueError: if the patch embeddings do not form a square grid.

    Example:
        >>> interpolate_pos_embed(torch.zeros(1, 1 + 37 * 37, 8)).shape
        torch.Size([1, 257, 8])
    """
    pos = pos_embed.detach().float()
    side = math.isqrt(pos.shape[1] - 1)
    if pos.ndim != 3 or pos.shape[0] != 1 or side * side != pos.shape[1] - 1:
        raise ValueError(
            f"Expected position embeddings of shape (1, 1 + M * M, D), but got {tuple(pos_embed.shape)}."
        )
    scale = (grid + INTERPOLATE_OFFSET) / side
    patches = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    if patches.shape[-2:] != (grid, grid):
        raise ValueError(
            f"Resampling a {side}x{side} grid gave {tuple(patches.shape[-2:])}, not {grid}x{grid}."
        )
    return torch.cat([pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def to_timm_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official-format DINOv2 state dict (keys checked) as the keys of timm's ``VisionTransformer``.

    ``mask_token`` (the masked-patch token of DINOv2's training, unused at inference) is dropped, the packed
    SwiGLU's ``w12`` / ``w3`` become ``fc1`` / ``fc2``, and ``pos_embed`` is resampled to the 224-pixel grid
    with :func:`interpolate_pos_embed`. Every tensor is float32.
    """
    out = {}
    for key, value in state.items():
        if key == "mask_token":
            continue
        if key == "pos_embed":
            value = interpolate_pos_embed(value)
        out[key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")] = value.float()
    return out


def _vision_transformer(arch: DINOv2Arch) -> nn.Module:
    """timm's ``VisionTransformer`` of ``arch`` for 224x224 input: norm(tokens)[:, 0] out, no head."""
    try:
        from timm.layers import Mlp, SwiGLUPacked
        from timm.models.vision_transformer import VisionTransformer
    except ImportError as err:
        raise ImportError(
            f"DINOv2 runs on timm's VisionTransformer; install it with `{_INSTALL_HINT}`."
        ) from err

    swiglu = arch.ffn == "swiglu"
    width = 2 * arch.hidden_features if swiglu else arch.hidden_features
    return VisionTransformer(
        img_size=DINOV2_SIZE,
        patch_size=PATCH_SIZE,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        # timm sizes the hidden layer as int(embed_dim * mlp_ratio): the half step keeps it exact
        mlp_ratio=(width + 0.5) / arch.embed_dim,
        qkv_bias=True,
        # the hub's value; it only matters for random weights, whose blocks it keeps from vanishing
        init_values=1.0,
        class_token=True,
        global_pool="token",
        fc_norm=False,
        num_classes=0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        act_layer=nn.SiLU if swiglu else nn.GELU,
        mlp_layer=SwiGLUPacked if swiglu else Mlp,
    )


class DINOv2(FrozenBackbone):
    """The frozen DINOv2 encoder of FD-DINOv2: ``(N, 3, H, W)`` ``uint8`` images to ``(N, D)`` class tokens.

    Images are resized to 224x224 (Pillow's bicubic on the 8-bit image, aspect ratio not kept), scaled to
    [0, 1], normalised with the ImageNet statistics, and the feature is the class token after the final
    LayerNorm: dgm-eval's ``DINOv2Encoder`` (see the module notes). Requires timm
    (``pip install "percep-lightning[dinov2]"``).

    Args:
        arch: ``"vits14"``, ``"vitb14"``, ``"vitl14"`` (default, dgm-eval's) or ``"vitg14"``, or a
            :class:`DINOv2Arch` for another size of the same format.
        weights: ``"default"`` (the official ``dinov2_<arch>_pretrain.pth``, from the torch hub cache or
            downloaded there; named sizes only), a path to a file in that format, a state dict in that
            format, or ``None`` for random weights.
        resize: ``"pil"`` (default: Pillow on the CPU, the reference's pixels exactly) or ``"torch"``
            (antialiased bicubic on the images' device, within a few 8-bit steps of Pillow's; see
            :func:`~percep_lightning.backbones.pil_resize.resize_uint8`).

    Attributes:
        arch: the :class:`DINOv2Arch`.
        num_features: the feature size (``embed_dim``: 384, 768, 1024, 1536 for the named sizes).

    Shape:
        - Input: ``(N, 3, H, W)`` ``uint8`` pixels in [0, 255], any size.
        - Output: ``(N, num_features)`` float32.

    Raises:
        ValueError: for an unknown ``arch`` or ``resize``, or ``weights="default"`` with a :class:`DINOv2Arch`
            that is not one of the named sizes.
        TypeError: for an ``arch`` that is neither a name nor a :class:`DINOv2Arch`.
        ImportError: if timm is not installed.
        RuntimeError: if the weights do not have exactly the keys and shapes of the official file.
        WeightsUnavailableError: if ``"default"`` is neither cached nor downloadable.

    Example:
        >>> import torch
        >>> net = DINOv2(DINOv2Arch(32, 1, 2), weights=None)
        >>> net.extract_features(torch.zeros(2, 3, 40, 60, dtype=torch.uint8)).shape
        torch.Size([2, 32])
    """

    input_format = "uint8"
    """``uint8`` pixels: the reference resizes the 8-bit image (float images are quantised by the metric)."""

    def __init__(
        self,
        arch: str | DINOv2Arch = "vitl14",
        weights: WeightsArg = "default",
        *,
        resize: PilResizeMode = "pil",
    ) -> None:
        super().__init__()
        self.arch = _check_arch(arch)
        check_pil_resize(resize)
        self.resize = resize
        self.num_features = self.arch.embed_dim
        official = DINOV2_ARCHS.get(self.arch.name) == self.arch
        spec_name = f"dinov2_{self.arch.name}" if official else None
        state, source = resolve_state_dict(spec_name, weights, label=f"dinov2_{self.arch.label}")
        if state is None:
            self.vit = _vision_transformer(self.arch)
        else:
            form = f"({spec_name}_pretrain.pth)" if official else f"at the size {self.arch}"
            check_state_shapes(
                self.arch.official_shapes(), state, source, f"the official DINOv2 format {form}"
            )
            with torch.device("meta"):  # no initialisation: every tensor comes from the file
                self.vit = _vision_transformer(self.arch)
            converted = to_timm_state(state)
            if isinstance(weights, Mapping):  # the caller's tensors are copied, not adopted
                converted = {k: v.clone() for k, v in converted.items()}
            self.vit.load_state_dict(converted, strict=True, assign=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @property
    def identity(self) -> str:
        """``"dinov2_<arch>:<resize>:<sha256 of the weights>"`` (cache keys)."""
        return f"dinov2_{self.arch.label}:{self.resize}:{module_digest(self)}"

    def preprocess(self, images: Tensor) -> Tensor:
        """dgm-eval's transform of ``uint8`` images: 224x224 bicubic (Pillow's), ``ToTensor``, ImageNet statistics.

        Raises:
            TypeError: for a non-``uint8`` input.
            ValueError: for a shape other than ``(N, 3, H, W)``.
        """
        check_uint8_images(images)
        pixels = resize_uint8(images, (DINOV2_SIZE, DINOV2_SIZE), self.resize)
        return imagenet_normalize(pixels, (0.0, 255.0), self.mean, self.std, self.vit.cls_token.dtype)

    def extract_features(self, images: Tensor) -> Tensor:
        """The ``(N, num_features)`` float32 class tokens of ``uint8`` images (see the class notes).

        Raises:
            TypeError: for a non-``uint8`` input.
            ValueError: for a shape other than ``(N, 3, H, W)``.
        """
        check_uint8_images(images)
        if images.shape[0] == 0:
            return torch.zeros(0, self.num_features, device=images.device)
        return self.vit(self.preprocess(images)).float()

    def forward(self, images: Tensor) -> Tensor:
        """The same as :meth:`extract_features`."""
        return self.extract_features(images)


def _check_arch(arch: object) -> DINOv2Arch:
    if isinstance(arch, DINOv2Arch):
        return arch
    if isinstance(arch, str):
        if arch not in DINOV2_ARCHS:
            raise ValueError(
                f"Expected `arch` to be one of {sorted(DINOV2_ARCHS)} or a DINOv2Arch, but got {arch!r}."
            )
        return DINOV2_ARCHS[arch]
    raise TypeError(f"Expected `arch` to be a name or a DINOv2Arch, but got {type(arch).__name__}.")
