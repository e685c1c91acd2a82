"""Streaming DISTS: the mean of DISTSLoss's per-pair values over every pair seen, in one or two processes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.multiprocessing as mp
from _dists_ddp import worker
from _numerics import assert_float32_close

from percep_lightning.losses import DISTSLoss
from percep_lightning.metrics import DISTS

TRUNK_TERMS = 3 * 3 * 512  # VGG16's longest float32 reduction (conv5)


@pytest.fixture(scope="module")
def vgg16(torchvision_weights):
    return str(torchvision_weights("vgg16"))


@pytest.fixture(scope="module")
def data(photos):
    """5 pairs of 32x32 photographs: a noisy copy against the original."""
    target = photos(5, 32)
    noise = 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    return (target + noise).clamp(0, 1), target


@pytest.fixture(scope="module")
def expected(data, vgg16):
    """The float64 loss over the whole set: the value every split must give."""
    with torch.no_grad():
        return DISTSLoss(weights=vgg16, reduction="none").double()(*(x.double() for x in data))


@pytest.mark.parametrize("batches", [(5,), (2, 2, 1)])
def test_streamed_equals_the_loss_over_the_whole_set(data, vgg16, expected, batches):
    metric = DISTS(weights=vgg16)
    start = 0
    for size in batches:
        metric.update(data[0][start : start + size], data[1][start : start + size])
        start += size
    value = metric.compute()
    assert value.dtype == torch.float64 and int(metric.num_images) == 5
    assert_float32_close(value, expected.mean(), terms=TRUNK_TERMS)


def test_uint8_images_and_autocast_and_no_weights_in_the_state(photos, vgg16):
    target = photos(2, 24, dtype=torch.uint8)
    preds = target.flip(-1)
    metric = DISTS(weights=vgg16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the metric computes in float32 anyway
        metric.update(preds, target)
    with torch.no_grad():
        reference = DISTSLoss(weights=vgg16).double()(preds.double() / 255, target.double() / 255)
    assert_float32_close(metric.compute(), reference, terms=TRUNK_TERMS)
    assert set(metric.state_dict()) <= {"value_sum", "num_images"} and list(metric.parameters()) == []
    metric.half()
    assert next(metric.loss.trunk.parameters()).dtype == torch.float32
    grey = DISTS(weights=vgg16)
    grey.update(preds[:, :1], target[:, :1])
    assert torch.isfinite(grey.compute())


def test_torchmetrics_contract_and_minimum_size():
    metric = DISTS(weights=None)
    assert metric.higher_is_better is False and metric.is_differentiable is False
    assert metric.full_state_update is False and metric.min_size == (17, 17)


def test_argument_errors(vgg16):
    metric = DISTS(weights=vgg16)
    x = torch.rand(2, 3, 24, 24)
    with pytest.raises(TypeError, match=r"Expected `preds` to be a torch.Tensor, but got list"):
        metric.update([x], x)
    with pytest.raises(TypeError, match=r"Expected `target` to be uint8 in \[0, 255\] or floating point"):
        metric.update(x, x.long())
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to have the same shape"):
        metric.update(x, x[:1])
    with pytest.raises(ValueError, match=r"Expected float `preds` to be in \[0, 1\]"):
        metric.update(x * 255, x)
    with pytest.raises(ValueError, match=r"Expected `preds` and `target` to be at least 17x17 pixels"):
        metric.update(x[..., :16], x[..., :16])
    with pytest.raises(ValueError, match=r"DISTS needs at least 1 image pair, but got 0"):
        metric.compute()


@pytest.mark.slow
def test_two_processes_equal_one(data, vgg16, expected, tmp_path):
    """5 pairs over 2 processes (3 + 2), ``compute()`` on both ranks, equal to the whole-set value."""
    images = tmp_path / "pairs.pt"
    torch.save(data, images)
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path), str(images), vgg16), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert_float32_close(torch.tensor(ranks[0], dtype=torch.float64), expected.mean(), terms=TRUNK_TERMS)
