"""Streaming PSNR, SSIM, MS-SSIM and LPIPS: the streamed value equals the function over the concatenated set,
with 1 process and with 2 (gloo), in torchmetrics' class-test style."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.multiprocessing as mp
from _numerics import float32_tolerance
from _paired_ddp import build_metrics, pairs, worker

from percep_lightning.functional import ms_ssim, psnr, ssim
from percep_lightning.losses import LPIPSLoss
from percep_lightning.metrics import LPIPS, MSSSIM, PSNR, SSIM

N, SIZE = 7, 48


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return pairs(N, SIZE)


@pytest.fixture(scope="module")
def alex(torchvision_weights) -> str:
    return str(torchvision_weights("alexnet"))


def reference_values(preds: torch.Tensor, target: torch.Tensor, lpips_weights: str) -> dict[str, float]:
    """Each metric's function over the whole set at once, averaged over images."""
    loss = LPIPSLoss("alex", weights=lpips_weights, reduction="none").double()  # the float64 reference
    with torch.no_grad():
        lpips_values = loss(preds, target).flatten()
    return {
        "psnr": float(psnr(preds, target, channel="y", crop_border=2)),
        "psnr_per_channel": float(psnr(preds, target, channel="per_channel")),
        "ssim": float(ssim(preds, target, channel="y", crop_border=2)),
        "ms_ssim": float(ms_ssim(preds, target, weights=(0.5, 0.5))),
        "lpips": float(lpips_values.double().mean()),
    }


# float64 inputs give float64 per-image values: only the summation order differs. LPIPS runs its trunk in
# float32 and is compared with the float64 model at float32 round-off over AlexNet's longest reduction
# (3 x 3 x 384 taps in conv4).
RTOL = {"psnr": 1e-12, "psnr_per_channel": 1e-12, "ssim": 1e-12, "ms_ssim": 1e-12}
LPIPS_TERMS = 3 * 3 * 384


def assert_matches(name: str, value: float, expected: float) -> None:
    if name == "lpips":
        tolerance = float32_tolerance(torch.tensor(expected), terms=LPIPS_TERMS)
        assert abs(value - expected) <= tolerance, (name, value, expected, tolerance)
    else:
        assert value == pytest.approx(expected, rel=RTOL[name]), name


@pytest.mark.parametrize("batches", [(7,), (3, 2, 1, 1)])
def test_streamed_equals_the_function_over_the_whole_set(data, alex, batches) -> None:
    preds, target = data
    metrics = build_metrics(alex)
    start = 0
    for size in batches:
        for name, metric in metrics.items():
            p, t = preds[start : start + size], target[start : start + size]
            metric.update(*((p.float(), t.float()) if name == "lpips" else (p, t)))
        start += size
    expected = reference_values(preds, target, alex)
    for name, metric in metrics.items():
        value = metric.compute()
        assert value.dtype == torch.float64
        assert_matches(name, float(value), expected[name])


@pytest.mark.slow
def test_two_processes_equal_one(data, alex, tmp_path) -> None:
    """7 pairs over 2 processes (4 + 3), ``compute()`` on both ranks, equal to the whole-set value."""
    mp.spawn(
        worker,
        args=(2, str(tmp_path / "init"), str(tmp_path), N, SIZE, alex),
        nprocs=2,
        join=True,
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    expected = reference_values(*data, alex)
    for name, value in ranks[0].items():
        assert_matches(name, value, expected[name])


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric SSIM was called before")
def test_forward_returns_the_batch_value_and_accumulates(data) -> None:
    preds, target = data
    metric = SSIM(channel="y")
    first = metric(preds[:3], target[:3])
    torch.testing.assert_close(first, ssim(preds[:3], target[:3], channel="y").double())
    metric(preds[3:], target[3:])
    torch.testing.assert_close(metric.compute(), ssim(preds, target, channel="y").double())
    metric.reset()
    with pytest.raises(ValueError, match=r"SSIM needs at least 1 image pair, but got 0"):
        metric.compute()


def test_uint8_images_use_data_range_255(data) -> None:
    preds, target = (torch.round(x * 255).to(torch.uint8) for x in data)
    metric = PSNR(channel="y", crop_border=4)
    metric.update(preds, target)
    expected = psnr(preds.double() / 255, target.double() / 255, channel="y", crop_border=4)
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-6)
    ssim_metric = SSIM()
    ssim_metric.update(preds, target)
    expected = ssim(preds.double() / 255, target.double() / 255)
    assert float(ssim_metric.compute()) == pytest.approx(float(expected), abs=1e-5)


def test_psnr_averages_per_image_not_the_pooled_mse() -> None:
    target = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    preds = target + torch.tensor([0.1, 0.01], dtype=torch.float64).view(2, 1, 1, 1)
    metric = PSNR()
    metric.update(preds, target)
    assert float(metric.compute()) == pytest.approx((20.0 + 40.0) / 2)  # pooled MSE would give 22.97


def test_lpips_metric_is_float32_under_autocast_and_holds_no_weights(data, alex) -> None:
    preds, target = (x.float() for x in data)
    metric = LPIPS("alex", weights=alex)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        metric.update(preds, target)
    with torch.no_grad():
        reference = LPIPSLoss("alex", weights=alex, reduction="none").double()(*data).mean()
    assert abs(float(metric.compute()) - float(reference)) <= float32_tolerance(reference, terms=LPIPS_TERMS)
    assert list(metric.state_dict()) == [] and list(metric.parameters()) == []
    grey = LPIPS("alex", weights=alex)
    grey.update((preds[:, :1] * 255).round().to(torch.uint8), (target[:, :1] * 255).round().to(torch.uint8))
    assert math.isfinite(float(grey.compute()))


@pytest.mark.parametrize(("cls", "higher"), [(PSNR, True), (SSIM, True), (MSSSIM, True), (LPIPS, False)])
def test_torchmetrics_contract(cls, higher) -> None:
    assert cls.higher_is_better is higher
    assert cls.is_differentiable is False
    assert cls.full_state_update is False


def test_argument_errors(data) -> None:
    with pytest.raises(
        ValueError, match=r"`channel` to be one of \('rgb', 'y', 'per_channel'\), but got 'luma'"
    ):
        PSNR(channel="luma")
    with pytest.raises(ValueError, match=r"`crop_border` to be >= 0, but got -2"):
        SSIM(crop_border=-2)
    with pytest.raises(ValueError, match=r"`data_range` to be > 0, but got 0"):
        PSNR(data_range=0)
    with pytest.raises(ValueError, match=r"high - low = 2.0 of input_range"):
        SSIM(data_range=1.0, input_range=(-1, 1))
    with pytest.raises(ValueError, match=r"`weights` to be a non-empty sequence of positive numbers"):
        MSSSIM(weights=())
    with pytest.raises(ValueError, match=r"`kernel_size` to be an odd positive integer, but got 4"):
        SSIM(kernel_size=4)
    with pytest.raises(ValueError, match=r"`net` to be one of \('alex', 'vgg', 'squeeze'\), but got 'res'"):
        LPIPS("res", weights=None)
    preds, target = data
    with pytest.raises(ValueError, match=r"leave pixels in images of size \(48, 48\), but crop_border=24"):
        PSNR(crop_border=24).update(preds, target)
    with pytest.raises(ValueError, match=r"same shape, but got \(7, 3, 48, 48\) and \(6, 3, 48, 48\)"):
        LPIPS("alex", weights=None).update(preds.float(), target[:6].float())
    lpips = LPIPS("alex", weights=None)
    with pytest.raises(ValueError, match=r"float `preds` to be in \[0, 1\], but got values in \[-1"):
        lpips.update(preds.float() * 2 - 1, target.float())
    with pytest.raises(ValueError, match=r"`target` to be finite"):
        lpips.update(preds.float(), torch.full_like(target, float("nan")).float())
    with pytest.raises(TypeError, match=r"`preds` to be uint8 in \[0, 255\] or floating point in \[0, 1\]"):
        lpips.update(preds.int(), target.int())


def test_lpips_metric_takes_the_lpips_packages_minus_one_to_one_range(torchvision_weights, photos):
    from percep_lightning.metrics import LPIPS

    weights = torchvision_weights("alexnet")
    x, y = photos(2, 48), photos(4, 48)[2:]
    unit, signed = LPIPS(weights=weights), LPIPS(weights=weights, input_range=(-1, 1))
    unit.update(x, y)
    signed.update(2 * x - 1, 2 * y - 1)
    assert float(signed.compute()) == pytest.approx(float(unit.compute()), rel=1e-6)
    with pytest.raises(
        ValueError, match=r"Expected `input_range` to be \(0, 1\) or \(-1, 1\), but got \(0, 255\)"
    ):
        LPIPS(weights=None, input_range=(0, 255))
