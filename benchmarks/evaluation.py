"""``percep-lightning evaluate --preset lpips`` over a folder pair against the loop of lpips' README."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.assets import Assets, uint8_pair
from benchmarks.config import Config
from benchmarks.harness import OURS, PEER, Bench, Contender, Env, Target
from benchmarks.losses import _load_lpips_backbone


def _write_pairs(n: int, size: int) -> tuple[Path, Path]:
    preds, target = uint8_pair(n, size)
    root = Path(tempfile.mkdtemp(prefix="bench_lpips_pairs_"))
    for name, images in (("pred", preds), ("target", target)):
        (root / name).mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / name / f"{i:04d}.png")
    return root / "pred", root / "target"


def build_lpips_preset(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        import lpips

        from percep_lightning.evaluation import evaluate

        pred, target = _write_pairs(cfg.eval_pairs, cfg.eval_size)
        alexnet = str(assets.torchvision("alexnet"))
        state = assets.state_dict("alexnet")
        last: dict[str, list[torch.Tensor]] = {}

        def ours() -> None:
            values = evaluate(
                pred, target, preset="lpips", weights={"alexnet": alexnet}, device=str(env.device),
                batch_size=cfg.eval_batch, num_workers=cfg.eval_workers, progress=False,
            )  # fmt: skip
            last["ours"] = [torch.tensor(values["lpips"], dtype=torch.float64)]

        def readme_loop() -> None:
            # lpips' README script: build the model, then for each file present in both folders load, im2tensor,
            # forward one pair (both contenders include building their network, as a command-line run does)
            model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
            _load_lpips_backbone(model, state)
            model = model.to(env.device).eval()
            values = []
            with torch.no_grad():
                for file in sorted(os.listdir(pred)):
                    if os.path.exists(os.path.join(target, file)):
                        img0 = lpips.im2tensor(
                            np.asarray(Image.open(os.path.join(pred, file)).convert("RGB"))
                        )
                        img1 = lpips.im2tensor(
                            np.asarray(Image.open(os.path.join(target, file)).convert("RGB"))
                        )
                        values.append(model(img0.to(env.device), img1.to(env.device)).item())
            last["peer"] = [torch.tensor(float(np.mean(values)), dtype=torch.float64)]

        return [
            Contender("percep_lightning evaluate --preset lpips", OURS, ours, lambda: last["ours"]),
            Contender("lpips README loop", PEER, readme_loop, lambda: last["peer"]),
        ]

    return build


def evaluation_benches(cfg: Config, assets: Assets) -> list[Bench]:
    what = (
        f"{cfg.eval_pairs} PNG pairs {cfg.eval_size}x{cfg.eval_size}, batch {cfg.eval_batch}, "
        f"{cfg.eval_workers} decoding workers; the README loop decodes in the main process, one pair a forward"
    )
    return [
        Bench(
            "evaluate_lpips", "evaluate --preset lpips (folders)", what, build_lpips_preset(cfg, assets),
            reps=cfg.reps_heavy, warmup=cfg.warmup_heavy, rtol=(1e-5,), variants=False,
            targets=(Target("lpips preset <= 0.8x the README loop", "lpips README loop", 0.8),),
        ),
    ]  # fmt: skip
