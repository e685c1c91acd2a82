"""One range rule for every image check: a small overshoot is accepted everywhere, a wrong pixel scale never.

Images reaching ``RANGE_TOLERANCE`` (a tenth of the range's width) beyond [0, 1] are an un-clamped network
output: metrics, the callback, losses and the SSIM functions all take them silently. Further out the
images are on another scale: metrics and the callback raise, losses and SSIM warn.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _stub_extractor import StubExtractor

from percep_lightning import functional
from percep_lightning.backbones import ModuleExtractor
from percep_lightning.callbacks.step_outputs import extract_images
from percep_lightning.functional.inputs import RANGE_TOLERANCE, far_outside, value_bounds
from percep_lightning.losses import LPIPSLoss
from percep_lightning.metrics import LPIPS, FrechetDistance

pytestmark = pytest.mark.filterwarnings("ignore:.*random weights")


def _images(low: float, high: float) -> torch.Tensor:
    """Photograph-like values spanning exactly [low, high]."""
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = (x - x.min()) / (x.max() - x.min())
    return low + (high - low) * x


OVERSHOOT = (-0.06, 1.08)
WRONG_SCALE = (-0.2, 1.25)


def _fd(images: torch.Tensor) -> None:
    FrechetDistance(StubExtractor()).update(images, real=False)


def _lpips(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    LPIPS(weights=None).update(images, images.flip(-1))


def _callback(images: torch.Tensor) -> torch.Tensor:
    out = extract_images({"preds": images}, None, keys={"preds": "keys['preds']"}, extractor=None, step="x")
    return out["preds"]


def test_the_rule():
    assert RANGE_TOLERANCE == 0.1
    assert not far_outside(OVERSHOOT, 0.0, 1.0) and far_outside(WRONG_SCALE, 0.0, 1.0)
    assert not far_outside((-1.15, 1.1), -1.0, 1.0)  # a tenth of the width: 0.2 for [-1, 1]
    bounds = value_bounds(
        {"`a`": torch.tensor([0.5, -0.25]), "`b`": torch.tensor([3.0]), "`c`": torch.ones(0)}
    )
    assert bounds == {"`a`": (-0.25, 0.5), "`b`": (3.0, 3.0)}
    with pytest.raises(ValueError, match=r"Expected `b` to be finite, but it contains NaN or Inf values"):
        value_bounds({"`a`": torch.zeros(2), "`b`": torch.tensor([0.0, float("inf")])})


@pytest.mark.parametrize("metric", [_fd, _lpips])
def test_metrics_take_an_overshoot_and_reject_a_wrong_scale(metric):
    metric(_images(*OVERSHOOT))
    with pytest.raises(ValueError, match=r"to be in \[0, 1\], but got values in \[-0\.2, 1\.25\]"):
        metric(_images(*WRONG_SCALE))


def test_quantising_metrics_clamp_the_overshoot_as_saving_a_png_would():
    images = _images(*OVERSHOOT)
    values = []
    for batch in (images, images.clamp(0, 1)):
        metric = FrechetDistance(ModuleExtractor(StubExtractor(), input_format="uint8"))
        metric.update(batch, real=False)
        metric.update(_images(0.0, 1.0).flip(-1), real=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 2 images per side: rank-deficient covariances
            values.append(float(metric.compute()))
    assert values[0] == values[1]


def test_the_callback_clamps_an_overshoot_and_rejects_a_wrong_scale():
    out = _callback(_images(*OVERSHOOT))
    assert torch.equal(out, _images(*OVERSHOOT).clamp(0, 1))
    with pytest.raises(
        ValueError, match=r"float images under `keys\['preds'\]`='preds' in .* to be in \[0, 1\]"
    ):
        _callback(_images(*WRONG_SCALE))


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: functional.ssim(a, b),
        lambda a, b: functional.ms_ssim(a, b, weights=(0.5, 0.5)),
        lambda a, b: LPIPSLoss("alex", weights=None)(a, b),
    ],
)
def test_losses_and_ssim_are_silent_on_an_overshoot_and_warn_on_a_wrong_scale(call):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*far outside")
        call(_images(*OVERSHOOT), _images(0.0, 1.0))
    with pytest.warns(UserWarning, match="far outside"):
        call(_images(*WRONG_SCALE), _images(0.0, 1.0))
