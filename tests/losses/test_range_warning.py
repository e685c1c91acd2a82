"""The input-range warning of the losses: once per loss and calling line, pointing at the caller's line."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from percep_lightning.losses import CompositeLoss, SSIMLoss
from percep_lightning.losses.cfsd import CFSDLoss
from percep_lightning.losses.lpips import LPIPSLoss
from percep_lightning.losses.perceptual import VGGPerceptualLoss

BUILDERS = {
    "lpips": lambda: LPIPSLoss("alex", weights=None),
    "perceptual": lambda: VGGPerceptualLoss({"relu1_1": 1.0}, arch="vgg16", weights=None),
    "cfsd": lambda: CFSDLoss(weights=None),
}


def _range_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if "far outside" in str(w.message)]


def _unclamped_outputs(steps: int) -> list[torch.Tensor]:
    """What an un-clamped network output looks like: a different overshoot at every step."""
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(1, 3, 32, 32, generator=generator) * (1.5 + 0.1 * i) - 0.3 for i in range(steps)]


class _Model(nn.Module):
    """A model whose forward calls the loss, so the loss runs under two levels of ``Module.__call__``."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(preds, target)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def loss(request) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one "random weights" warning
        return BUILDERS[request.param]()


def test_sixteen_steps_warn_once_at_the_callers_line(loss) -> None:
    target = torch.rand(1, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # no help from Python's once-per-location filter
        for preds in _unclamped_outputs(16):
            loss(preds, target)
    (warning,) = _range_warnings(caught)
    assert warning.filename == __file__, warning.filename
    assert "input_range (0.0, 1.0): `preds` in [" in str(warning.message)
    assert "once per loss and calling line" in str(warning.message)


def test_a_wrapping_module_still_points_at_the_user_line(loss) -> None:
    model = _Model(loss)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for preds in _unclamped_outputs(3):
            model(preds, torch.rand(1, 3, 32, 32))
    (warning,) = _range_warnings(caught)
    assert warning.filename == __file__  # not torch/nn/modules/module.py


def test_another_line_or_another_loss_warns_again() -> None:
    first, second = LPIPSLoss("alex", weights=None), LPIPSLoss("alex", weights=None)
    preds, target = torch.rand(1, 3, 32, 32) * 3, torch.rand(1, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            first(preds, target)
        first(preds, target)  # a different line
        second(preds, target)  # a different loss
    assert len(_range_warnings(caught)) == 3


def test_ssim_inside_a_composite_loss_points_at_the_user_line() -> None:
    loss = CompositeLoss({"ssim": SSIMLoss()})
    target = torch.rand(1, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for preds in _unclamped_outputs(4):
            loss(preds * 2, target)
    (warning,) = _range_warnings(caught)
    assert warning.filename == __file__, warning.filename  # not losses/composite.py
