"""FD-DINOv2's feature computed the reference way, in float64, for the DINOv2 parity tests.

* :func:`dgm_eval_transform`: dgm-eval's ``DINOv2Encoder.transform`` on a PIL image (torchvision
  ``Resize((224, 224), BICUBIC)`` on the 8-bit image, ``ToTensor``, ``Normalize`` with the ImageNet statistics).
* :func:`official_forward`: ``facebookresearch/dinov2``'s ``DinoVisionTransformer(x)`` re-expressed step by
  step on an official-format state dict: patch convolution, class token, the run-time resampling of the
  37x37 position embeddings (``interpolate_pos_encoding``: bicubic with ``scale_factor = (grid + 0.1) / 37``,
  no antialiasing), pre-norm blocks with LayerScale (``x + ls1 * attn(norm1(x))``, ``x + ls2 * ffn(norm2(x))``,
  the FFN a GELU MLP or the packed SwiGLU), the final LayerNorm, the class token.
* :func:`random_official_state`: random weights in the format of ``dinov2_<arch>_pretrain.pth``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dgm_eval_transform(image: np.ndarray) -> Tensor:
    """``(3, 224, 224)`` float32: dgm-eval's DINOv2 transform of an ``(H, W, 3)`` or ``(H, W)`` uint8 image.

    The image goes through PIL as dgm-eval's loader reads it (``.convert('RGB')``).
    """
    from PIL import Image
    from torchvision import transforms

    pil = Image.fromarray(image).convert("RGB")
    tensor = transforms.Compose(
        [transforms.Resize((224, 224), transforms.InterpolationMode.BICUBIC), transforms.ToTensor()]
    )(pil)
    return transforms.Normalize(np.array(IMAGENET_MEAN), np.array(IMAGENET_STD))(tensor)


def resample_pos_embed(pos_embed: Tensor, grid: int, *, size_based: bool = False) -> Tensor:
    """``(1, 1 + M * M, D)`` position embeddings resampled to ``grid x grid`` in their own dtype.

    ``size_based=False`` is the official run-time call (``scale_factor = (grid + 0.1) / M``, no antialiasing);
    ``size_based=True`` asks for the output size instead, antialiased, as timm resamples checkpoints.
    """
    side = math.isqrt(pos_embed.shape[1] - 1)
    patches = pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if size_based:
        patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", antialias=True)
    else:
        scale = (grid + 0.1) / side
        patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    assert patches.shape[-2:] == (grid, grid)
    return torch.cat([pos_embed[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def _layer_norm(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], state[f"{prefix}.weight"], state[f"{prefix}.bias"], eps=1e-6)


def _linear(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    return x @ state[f"{prefix}.weight"].T + state[f"{prefix}.bias"]


def _attention(x: Tensor, state: dict[str, Tensor], prefix: str, num_heads: int) -> Tensor:
    batch, tokens, dim = x.shape
    qkv = _linear(x, state, f"{prefix}.qkv").reshape(batch, tokens, 3, num_heads, dim // num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim // num_heads), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
    return _linear(out, state, f"{prefix}.proj")


def _ffn(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    if f"{prefix}.w12.weight" in state:  # ViT-g/14's SwiGLUFFNFused
        x1, x2 = _linear(x, state, f"{prefix}.w12").chunk(2, dim=-1)
        return _linear(F.silu(x1) * x2, state, f"{prefix}.w3")
    return _linear(F.gelu(_linear(x, state, f"{prefix}.fc1")), state, f"{prefix}.fc2")


def official_forward(
    state: dict[str, Tensor], images: Tensor, num_heads: int, *, size_based_pos: bool = False
) -> Tensor:
    """``(N, D)`` float64 class tokens of normalised ``(N, 3, H, W)`` images (``H``, ``W`` multiples of 14)."""
    s = {k: v.double() for k, v in state.items()}
    x = images.double()
    depth = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    tokens = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=14)
    grid = tokens.shape[-1]
    tokens = tokens.flatten(2).transpose(1, 2)
    tokens = torch.cat([s["cls_token"].expand(len(x), -1, -1), tokens], dim=1)
    tokens = tokens + resample_pos_embed(s["pos_embed"], grid, size_based=size_based_pos)
    for i in range(depth):
        p = f"blocks.{i}"
        tokens = tokens + s[f"{p}.ls1.gamma"] * _attention(
            _layer_norm(tokens, s, f"{p}.norm1"), s, f"{p}.attn", num_heads
        )
        tokens = tokens + s[f"{p}.ls2.gamma"] * _ffn(_layer_norm(tokens, s, f"{p}.norm2"), s, f"{p}.mlp")
    return _layer_norm(tokens, s, "norm")[:, 0]


def random_official_state(
    embed_dim: int, depth: int, *, swiglu: bool = False, seed: int = 0
) -> dict[str, Tensor]:
    """Random float32 tensors under the keys and shapes of ``dinov2_<arch>_pretrain.pth``.

    The position embeddings are as large as the patch embeddings (std 1), so that where they are sampled
    changes the features; the weights are scaled so that activations stay of order one through the blocks.
    """
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float = 1.0, mean: float = 0.0) -> Tensor:
        return mean + std * torch.randn(*shape, generator=g)

    d = embed_dim
    hidden = (int(4 * d * 2 / 3) + 7) // 8 * 8 if swiglu else 4 * d
    state = {
        "cls_token": randn(1, 1, d),
        "pos_embed": randn(1, 1 + 37 * 37, d),
        "mask_token": randn(1, d),
        "patch_embed.proj.weight": randn(d, 3, 14, 14, std=(3 * 14 * 14) ** -0.5),
        "patch_embed.proj.bias": randn(d, std=0.1),
        "norm.weight": randn(d, std=0.1, mean=1.0),
        "norm.bias": randn(d, std=0.1),
    }
    for i in range(depth):
        p = f"blocks.{i}"
        layers = {"attn.qkv": (3 * d, d), "attn.proj": (d, d)}
        if swiglu:
            layers.update({"mlp.w12": (2 * hidden, d), "mlp.w3": (d, hidden)})
        else:
            layers.update({"mlp.fc1": (hidden, d), "mlp.fc2": (d, hidden)})
        for name, (out, inp) in layers.items():
            state[f"{p}.{name}.weight"] = randn(out, inp, std=inp**-0.5)
            state[f"{p}.{name}.bias"] = randn(out, std=0.1)
        for norm in ("norm1", "norm2"):
            state[f"{p}.{norm}.weight"] = randn(d, std=0.1, mean=1.0)
            state[f"{p}.{norm}.bias"] = randn(d, std=0.1)
        state[f"{p}.ls1.gamma"] = randn(d, std=0.2, mean=1.0)
        state[f"{p}.ls2.gamma"] = randn(d, std=0.2, mean=1.0)
    return state
