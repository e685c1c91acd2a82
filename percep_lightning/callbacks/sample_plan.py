"""Which validation images a process keeps, so that every sample counts exactly once on any world size.

Under DDP Lightning gives the evaluation dataloader a ``DistributedSampler``, which pads the dataset with
repeats of its first samples so that every process gets the same number of batches: process ``r`` of
``W`` sees the positions ``r, r + W, r + 2W, ...`` of the padded list, and positions ``>= len(dataset)``
are the repeats. A process counts the images it has seen in the epoch and keeps local image ``k`` only if
its position ``k * W + r`` is below ``len(dataset)`` (and below ``max_samples``). The positions also put
gathered per-image results back in dataset order.

This relies on each step output holding one image per sample of its batch, in batch order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler, IterableDataset, RandomSampler

__all__ = ["SamplePlan", "find_distributed_sampler", "plan_samples"]


@dataclass(frozen=True)
class SamplePlan:
    """Which of a process's images to keep in an epoch, and their positions in the global order.

    Local image ``k`` (counted from the start of the epoch) has global position ``k * world_size + rank``
    and is kept if ``k < keep`` (``keep=None``: all).

    Attributes:
        world_size: the number of processes sharing the dataset.
        rank: this process's index among them.
        keep: how many of its images this process keeps (``None``: all).
        dataset_len: the length of the dataset when known (map-style), else ``None``.
        shuffled: whether the sampler shuffles (positions are then sampler order, not dataset order).
        recognises_duplicates: whether padded repeats can be told apart (a ``DistributedSampler`` was
            found, or there is one process).
    """

    world_size: int
    rank: int
    keep: int | None
    dataset_len: int | None
    shuffled: bool
    recognises_duplicates: bool = True

    def select(self, seen: int, count: int) -> tuple[int, Tensor]:
        """How many of the next ``count`` images to keep after ``seen``, and their global positions.

        Example:
            >>> plan = SamplePlan(world_size=2, rank=1, keep=3, dataset_len=7, shuffled=False)
            >>> plan.select(seen=2, count=2)
            (1, tensor([5]))
        """
        keep = count if self.keep is None else max(0, min(count, self.keep - seen))
        local = torch.arange(seen, seen + keep, dtype=torch.long)
        return keep, local * self.world_size + self.rank

    def expected_count(self) -> int | None:
        """The number of images the sampler gives this process per epoch, when known."""
        if self.dataset_len is None or self.world_size <= 1 or not self.recognises_duplicates:
            return None
        return math.ceil(self.dataset_len / self.world_size)


def find_distributed_sampler(loader: Any) -> Any:
    """The sampler that decides the order of ``loader``: a ``DistributedSampler`` wherever Lightning put it.

    Lightning offers no public accessor; the supported layouts are ``loader.sampler`` (Lightning's default
    replacement, including its ``DistributedSamplerWrapper`` around a custom sampler) and
    ``loader.batch_sampler.sampler`` (a custom batch sampler whose sampler Lightning replaced). Otherwise
    the loader's own sampler (or ``None``) is returned.

    Example:
        >>> from torch.utils.data import DataLoader, DistributedSampler
        >>> data = list(range(5))
        >>> sampler = DistributedSampler(data, num_replicas=2, rank=0, shuffle=False)
        >>> find_distributed_sampler(DataLoader(data, sampler=sampler)) is sampler
        True
    """
    inner = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    if isinstance(inner, DistributedSampler):
        return inner
    return getattr(loader, "sampler", None)


def plan_samples(loader: Any, *, world_size: int, rank: int, max_samples: int | None) -> SamplePlan:
    """The :class:`SamplePlan` of one process for one epoch of ``loader``.

    Args:
        loader: the evaluation dataloader this process iterates.
        world_size: the number of processes (the trainer's), used when no ``DistributedSampler`` is found.
        rank: this process's global rank, likewise.
        max_samples: keep at most this many images over all processes (the first of the dataset order).

    Returns:
        The plan; ``recognises_duplicates`` is ``False`` when several processes read a loader without a
        ``DistributedSampler`` (then every image each process sees is counted).

    Example:
        >>> from torch.utils.data import DataLoader
        >>> plan = plan_samples(DataLoader(list(range(9))), world_size=1, rank=0, max_samples=4)
        >>> plan.keep, plan.dataset_len
        (4, 9)
    """
    sampler = find_distributed_sampler(loader)
    if isinstance(sampler, DistributedSampler):
        world, index = int(sampler.num_replicas), int(sampler.rank)
        dataset_len = len(sampler.dataset)  # type: ignore[arg-type]
        unique = dataset_len if max_samples is None else min(dataset_len, max_samples)
        keep = min(len(range(index, unique, world)), int(sampler.num_samples))
        return SamplePlan(world, index, keep, dataset_len, bool(sampler.shuffle))
    keep = None if max_samples is None else len(range(rank, max_samples, world_size))
    dataset = getattr(loader, "dataset", None)
    dataset_len = len(dataset) if is_map_style(dataset) else None
    return SamplePlan(
        world_size,
        rank,
        keep,
        dataset_len if world_size == 1 else None,
        isinstance(sampler, RandomSampler),
        recognises_duplicates=world_size == 1,
    )


def is_map_style(dataset: Any) -> bool:
    """Whether ``dataset`` has a length and indexing (not an ``IterableDataset``)."""
    return dataset is not None and not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__")
