"""Running sums stay float64 under ``set_dtype``, ``reset`` and moves, without torchmetrics' private hooks.

FID, KID-free Fréchet metrics, ArtFID and every per-image mean (PSNR, SSIM, LPIPS, DISTS, CFSD) keep their
sums in float64 (``Float64Sums``). A half-precision ``set_dtype`` must not round them, a reset must bring
back float64 zeros, and a move must never hand a float64 tensor to the conversion (MPS has no float64:
there the sums stay on the CPU).
"""

from __future__ import annotations

import pytest
import torch
from _stub_extractor import StubExtractor
from torch import nn

from percep_lightning.metrics import PSNR, SSIM, ArtFID, FrechetDistance

pytestmark = pytest.mark.filterwarnings("ignore:.*random weights", "ignore:.*rank-deficient")


def _fed(name: str, photos) -> tuple[object, list[str]]:
    """A metric of kind ``name`` with some images added, and the names of its float64 sums."""
    images = photos(4, 48)
    if name == "fd":
        metric = FrechetDistance(StubExtractor())
        metric.update(images, real=True)
        metric.update(images.flip(-1), real=False)
        return metric, ["real_features_sum", "real_outer_sum", "fake_features_sum", "fake_outer_sum"]
    if name == "artfid":
        torch.manual_seed(0)  # the same random networks in every call
        metric = ArtFID(weights=None, lpips_weights=None, resize=75)
        metric.update(images, images.flip(-1), images.flip(-2))
        sums = ["stylized_features_sum", "stylized_outer_sum", "style_features_sum", "style_outer_sum"]
        return metric, [*sums, "lpips_sum"]
    metric = {"psnr": PSNR, "ssim": SSIM}[name]()
    metric.update(images, (images * 0.9).clamp(0, 1))
    return metric, ["value_sum"]


KINDS = ["fd", "psnr", "ssim", "artfid"]


@pytest.mark.parametrize("kind", KINDS)
def test_half_precision_set_dtype_keeps_the_sums_and_the_value(kind, photos):
    reference, names = _fed(kind, photos)
    metric, _ = _fed(kind, photos)
    metric.set_dtype(torch.float16)
    for name in names:
        assert getattr(metric, name).dtype == torch.float64, name
        assert torch.equal(getattr(metric, name), getattr(reference, name)), name
    value, expected = metric.compute(), reference.compute()
    if isinstance(expected, dict):
        assert {k: float(v) for k, v in value.items()} == {k: float(v) for k, v in expected.items()}
    else:
        assert float(value) == float(expected)


@pytest.mark.parametrize("kind", KINDS)
def test_reset_after_set_dtype_gives_float64_zeros(kind, photos):
    metric, names = _fed(kind, photos)
    metric.set_dtype(torch.bfloat16)
    metric.reset()
    for name in names:
        value = getattr(metric, name)
        assert value.dtype == torch.float64 and not value.any(), name


@pytest.mark.parametrize("kind", ["fd", "psnr"])
def test_a_move_never_converts_a_float64_sum(kind, photos):
    """Moving to a device without float64 (as MPS) must not pass the sums through the conversion."""
    metric, names = _fed(kind, photos)
    before = {name: getattr(metric, name) for name in names}
    seen = []

    def no_float64(tensor: torch.Tensor) -> torch.Tensor:
        seen.append(tensor.dtype)
        if tensor.dtype == torch.float64:
            raise TypeError("this device has no float64")
        return tensor

    holder = nn.Module()
    holder.metric = metric
    holder._apply(no_float64)  # what `.to(device)` on a LightningModule calls for each child
    assert seen and torch.float64 not in seen
    for name in names:
        assert getattr(metric, name) is before[name] or torch.equal(getattr(metric, name), before[name])
