"""Worker for the 2-process (gloo) test of the paired metrics, importable by spawned processes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _distributed import gloo_group


def pairs(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` deterministic (preds, target) pairs in [0, 1], float64: smooth images and a noisy copy."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=generator, dtype=torch.float64)
    target = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)
    noise = 0.05 * torch.randn(target.shape, generator=generator, dtype=torch.float64)
    return (target + noise).clamp(0, 1), target


def build_metrics(lpips_weights: str) -> dict:
    from percep_lightning.metrics import LPIPS, MSSSIM, PSNR, SSIM

    return {
        "psnr": PSNR(channel="y", crop_border=2),
        "psnr_per_channel": PSNR(channel="per_channel"),
        "ssim": SSIM(channel="y", crop_border=2),
        "ms_ssim": MSSSIM(weights=(0.5, 0.5)),
        "lpips": LPIPS("alex", weights=lpips_weights),
    }


def worker(
    rank: int, world: int, init_file: str, out_dir: str, n: int, size: int, lpips_weights: str
) -> None:
    """Rank ``r`` adds the pairs ``r, r + world, ...`` (DistributedSampler's split) in batches of 2."""
    torch.set_num_threads(1)
    with gloo_group(rank, world, init_file):
        preds, target = pairs(n, size)
        mine = torch.arange(rank, n, world)
        metrics = build_metrics(lpips_weights)
        for start in range(0, len(mine), 2):
            index = mine[start : start + 2]
            for name, metric in metrics.items():
                images = (preds[index], target[index])
                metric.update(*(x.float() if name == "lpips" else x for x in images))
        values = {name: float(metric.compute()) for name, metric in metrics.items()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(values))
