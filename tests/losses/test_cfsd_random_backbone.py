"""CFSD on a randomly initialised VGG19 carries no signal: the loss and the metric say so, once."""

from __future__ import annotations

import warnings
from importlib import import_module

import pytest
import torch

from percep_lightning.losses import CFSDLoss
from percep_lightning.metrics import CFSD

functional_cfsd = import_module("percep_lightning.functional.cfsd")  # the module, not the function
MESSAGE = r"CFSD with a randomly initialised VGG19 \(weights=None\) is ~1e-9 for any pair of images"


@pytest.fixture
def fresh_warning(monkeypatch):
    """Each test starts as a new process would: the warning not given yet."""
    monkeypatch.setattr(functional_cfsd, "_warned_random", False)


def _cfsd_warnings(build) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build()
    return [w for w in caught if "CFSD with a randomly initialised VGG19" in str(w.message)]


def test_loss_and_metric_warn_once_per_process(fresh_warning):
    with pytest.warns(UserWarning, match=MESSAGE):
        CFSDLoss(weights=None)
    assert _cfsd_warnings(lambda: CFSDLoss(weights=None)) == []
    assert _cfsd_warnings(lambda: CFSD(weights=None)) == []


def test_metric_warns(fresh_warning):
    with pytest.warns(UserWarning, match=MESSAGE):
        CFSD(weights=None)


def test_a_weights_file_does_not_warn(fresh_warning, torchvision_weights):
    path = torchvision_weights("vgg19")
    assert _cfsd_warnings(lambda: CFSDLoss(weights=path)) == []
    assert _cfsd_warnings(lambda: CFSD(weights=path)) == []


def test_random_backbone_values_show_no_signal(fresh_warning, photos):
    """What the warning says: ~1e-9 whatever the pair, with no order between mild and severe damage."""
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=MESSAGE):
        loss = CFSDLoss(weights=None, reduction="none")
    content = photos(2, 48).double()
    loss = loss.double()
    values = torch.stack(
        [
            loss(content * 0.9 + 0.05, content),  # mild contrast change
            loss(content.flip(0), content),  # the other photograph
            loss(torch.rand_like(content), content),  # noise
        ]
    )
    assert values.abs().max() < 1e-6, values
