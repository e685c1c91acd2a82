"""Worker for the 2-process test of the extractor-generic metrics: each rank updates its share of the images."""

from __future__ import annotations

import torch
from _distributed import gloo_group


def worker(rank: int, world_size: int, store: str, real: torch.Tensor, fake: torch.Tensor, out: str) -> None:
    from _stub_extractor import StubExtractor

    from percep_lightning.metrics import CMMD, PRDC, FrechetDistance, KernelDistance

    with gloo_group(rank, world_size, store):
        net = StubExtractor()
        metrics = {
            "fd": FrechetDistance(net),
            "fd_inf": FrechetDistance(net, infinity=True, infinity_num_points=4, infinity_min_samples=30),
            "kd": KernelDistance(net, subsets=20, subset_size=20),
            "cmmd": CMMD(net),
            "prdc": PRDC(net, k=3),
        }
        # a strided share as DistributedSampler(shuffle=False) deals it, in uneven batches
        for side, images in (("real", real), ("fake", fake)):
            positions = torch.arange(rank, images.shape[0], world_size)
            for chunk in positions.split(8):
                for metric in metrics.values():
                    metric.update(images[chunk], real=side == "real", indices=chunk)
        values = {name: metric.compute() for name, metric in metrics.items()}
        values["prdc"] = tuple(values["prdc"])  # a plain tuple: torch.load(weights_only=True) reads it
        torch.save(values, f"{out}/rank{rank}.pt")
