"""Worker for the 2-process (gloo) test of the DISTS metric, importable by spawned processes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _distributed import gloo_group


def worker(rank: int, world: int, init_file: str, out_dir: str, images: str, weights: str) -> None:
    """Rank ``r`` adds the pairs ``r, r + world, ...`` (DistributedSampler's split) in batches of 2."""
    from percep_lightning.metrics import DISTS

    torch.set_num_threads(1)
    with gloo_group(rank, world, init_file):
        preds, target = torch.load(images, weights_only=True)
        mine = torch.arange(rank, preds.shape[0], world)
        metric = DISTS(weights=weights)
        for start in range(0, len(mine), 2):
            index = mine[start : start + 2]
            metric.update(preds[index], target[index])
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(float(metric.compute())))
