"""DINOv2 feature extraction: ``DINOv2.extract_features`` against the bare transformer's forward.

Both contenders hold the same random weights in the official ``dinov2_<arch>_pretrain.pth`` format. Ours
reads ``uint8`` images already at 224x224 (so the Pillow resize is a no-op and both do the same work) and
normalises them; the bare model is timm's ``VisionTransformer`` of the same size given the normalised
batch, its position embeddings set once from the checkpoint as ours (the facebookresearch/dinov2 code is
not a package; timm is the library that holds our transformer). The ratio is the cost of our wrapper:
normalisation, the input checks and the float32 setting of the metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from benchmarks.assets import Assets
from benchmarks.config import Config
from benchmarks.harness import OURS, PEER, Bench, Contender, Env, Target

DINOV2_TARGET = 1.0  # ours / the bare forward, wall-time medians
SIDE = 224


def _official_state(arch: object, seed: int = 0) -> dict[str, Tensor]:
    """Random weights of ``arch`` with the keys and shapes of the official file (LayerScale at 1, position
    embeddings at a visible scale, so the features depend on every part)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in arch.official_shapes().items():  # type: ignore[attr-defined]
        fan_in = shape[-1] if len(shape) > 1 else 1
        value = torch.randn(shape, generator=generator) / fan_in**0.5
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "gamma")):
            value = 1 + 0.1 * value
        state[key] = value
    return state


def build_dinov2(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    del assets  # the weights are generated here: no torchvision file has this format

    def build(env: Env) -> list[Contender]:
        from percep_lightning.backbones.dinov2 import DINOV2_ARCHS, DINOv2, DINOv2Arch

        arch = DINOV2_ARCHS[cfg.dinov2_arch] if cfg.dinov2_arch in DINOV2_ARCHS else DINOv2Arch(64, 2, 4)
        ours = DINOv2(arch, weights=_official_state(arch)).to(env.device)
        bare = ours.vit  # the very transformer ours holds: the peer is its forward alone
        generator = torch.Generator().manual_seed(1)
        images = torch.randint(
            0, 256, (cfg.dinov2_batch, 3, SIDE, SIDE), generator=generator, dtype=torch.uint8
        )
        images = images.to(env.device)
        normalised = ours.preprocess(images)
        last: dict[str, Tensor] = {}

        def ours_step() -> None:
            with torch.inference_mode(), env.autocast():
                last["ours"] = ours.extract_features(images)

        def bare_step() -> None:
            with torch.inference_mode(), env.autocast():
                last["bare"] = bare(normalised)

        return [
            Contender(
                "percep_lightning DINOv2.extract_features", OURS, ours_step, lambda: [last["ours"].float()]
            ),
            Contender(
                f"bare timm ViT forward ({arch.label})", PEER, bare_step, lambda: [last["bare"].float()]
            ),
        ]

    return build


def dinov2_benches(cfg: Config, assets: Assets) -> list[Bench]:
    what = f"{cfg.dinov2_arch}, {cfg.dinov2_batch}x3x{SIDE}x{SIDE} uint8, features only"
    return [
        Bench(
            "dinov2", "DINOv2 features", what, build_dinov2(cfg, assets), reps=cfg.reps_heavy,
            warmup=cfg.warmup_heavy, rtol=(1e-4,), variants=True,
            targets=(Target(f"DINOv2 <= {DINOV2_TARGET}x bare forward", "fastest peer", DINOV2_TARGET),),
        ),
    ]  # fmt: skip
