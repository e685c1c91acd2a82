"""Sharding an evaluation across the processes of ``torchrun`` (torch.distributed), and gathering back.

Process ``r`` of ``W`` evaluates the samples at positions ``r, r + W, r + 2W, ...``: every sample once, no
padding, so there is no duplicate to drop (the rule the Lightning callback applies to
``DistributedSampler``'s padded list gives the same split). Every value is put back in dataset order before
it is reduced, so ``W`` processes give the values of one process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["World", "all_gather_objects", "distributed_world"]


@dataclass(frozen=True)
class World:
    """The process group an evaluation runs in: ``rank`` of ``size`` (``1`` without torch.distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process prints and writes the outputs."""
        return self.rank == 0

    def shard(self, n: int) -> list[int]:
        """The positions of ``n`` samples this process evaluates.

        Example:
            >>> World(rank=1, size=2).shard(5)
            [1, 3]
        """
        return list(range(self.rank, n, self.size))


@contextlib.contextmanager
def distributed_world(device: str | None) -> Iterator[World]:
    """The current process group, started from ``torchrun``'s environment when needed.

    Inside an initialised ``torch.distributed`` group, that group is used. Otherwise, when ``WORLD_SIZE``
    (set by ``torchrun``) is above 1, a group is initialised (``nccl`` for CUDA, else ``gloo``) and
    destroyed on exit. Otherwise there is one process.

    Args:
        device: the evaluation device (``"cuda"``, ``"cpu"``, ...), to choose the backend.
    """
    if dist.is_available() and dist.is_initialized():
        yield World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        return
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available():
        yield World()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if (device or "").startswith("cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    try:
        yield World(dist.get_rank(), dist.get_world_size(), local_rank)
    finally:
        dist.destroy_process_group()


def all_gather_objects(world: World, value: Any) -> list[Any]:
    """``value`` from every process, in rank order (``[value]`` on one process)."""
    if world.size == 1:
        return [value]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered
