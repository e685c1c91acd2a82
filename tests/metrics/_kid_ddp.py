"""Worker for the 2-process KID test: each rank adds its share of the features, then computes."""

from __future__ import annotations

import warnings

import torch
from _distributed import gloo_group


def worker(rank: int, world_size: int, store: str, real: torch.Tensor, fake: torch.Tensor, out: str) -> None:
    from percep_lightning.metrics import KernelInceptionDistance

    with gloo_group(rank, world_size, store):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = KernelInceptionDistance(weights=None, subsets=30, subset_size=5)
        # a strided share as DistributedSampler(shuffle=False) deals it, in uneven batches
        for side, features in (("real", real), ("fake", fake)):
            indices = torch.arange(rank, features.shape[0], world_size)
            for chunk in indices.split(2):
                metric.update_features(features[chunk], real=side == "real", indices=chunk)
        mean, std = metric.compute()
        torch.save({"mean": mean, "std": std}, f"{out}/rank{rank}.pt")
