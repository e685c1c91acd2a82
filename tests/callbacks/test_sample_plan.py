"""Sample plan of the metrics callback: where the DistributedSampler sits, and which images a rank keeps."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from percep_lightning.callbacks.sample_plan import SamplePlan, find_distributed_sampler, plan_samples

DATA = list(range(7))


def test_sampler_of_the_loader():
    """Lightning's default layout: the DistributedSampler replaces the loader's sampler."""
    sampler = DistributedSampler(DATA, num_replicas=2, rank=1, shuffle=False)
    assert find_distributed_sampler(DataLoader(DATA, batch_size=2, sampler=sampler)) is sampler


def test_sampler_inside_a_batch_sampler():
    """A custom batch sampler: Lightning puts the DistributedSampler inside it."""
    sampler = DistributedSampler(DATA, num_replicas=2, rank=0, shuffle=False)
    loader = DataLoader(DATA, batch_sampler=BatchSampler(sampler, batch_size=2, drop_last=False))
    assert find_distributed_sampler(loader) is sampler


def test_lightning_wrapper_around_a_custom_sampler():
    """A custom sampler: Lightning wraps it in a DistributedSamplerWrapper (a DistributedSampler)."""
    sampler = DistributedSamplerWrapper(SequentialSampler(DATA), num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(DATA, batch_size=2, sampler=sampler)
    assert find_distributed_sampler(loader) is sampler
    plan = plan_samples(loader, world_size=2, rank=1, max_samples=None)
    assert (plan.world_size, plan.rank, plan.keep, plan.dataset_len) == (2, 1, 3, 7)


def test_no_distributed_sampler():
    loader = DataLoader(DATA, batch_size=2, shuffle=True)
    assert isinstance(find_distributed_sampler(loader), RandomSampler)
    plan = plan_samples(loader, world_size=1, rank=0, max_samples=None)
    assert plan.shuffled and plan.recognises_duplicates and plan.keep is None


@pytest.mark.parametrize(
    ("n", "world", "max_samples"), [(7, 2, None), (10, 3, None), (9, 3, 4), (5, 4, None)]
)
def test_every_sample_is_kept_exactly_once(n, world, max_samples):
    data = list(range(n))
    positions = []
    for rank in range(world):
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False)
        plan = plan_samples(
            DataLoader(data, sampler=sampler), world_size=world, rank=rank, max_samples=max_samples
        )
        order = list(sampler)
        keep, where = plan.select(0, len(order))
        assert [order[k] for k in range(keep)] == where.tolist()  # positions are the dataset indices
        positions += where.tolist()
    assert sorted(positions) == list(range(n if max_samples is None else max_samples))


def test_select_counts_across_batches():
    plan = SamplePlan(world_size=2, rank=0, keep=3, dataset_len=5, shuffled=False)
    assert plan.select(0, 2)[1].tolist() == [0, 2]
    keep, where = plan.select(2, 2)
    assert keep == 1 and torch.equal(where, torch.tensor([4]))
    assert plan.select(4, 2)[0] == 0


def test_distributed_run_without_distributed_sampler_cannot_see_duplicates():
    plan = plan_samples(DataLoader(list(range(5))), world_size=2, rank=1, max_samples=4)
    assert not plan.recognises_duplicates
    assert (plan.world_size, plan.rank, plan.keep) == (2, 1, 2)  # rank 1 keeps positions 1 and 3
