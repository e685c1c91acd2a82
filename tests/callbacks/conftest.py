"""Fixtures of the callback tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision


@pytest.fixture(scope="session")
def art_weights(tmp_path_factory: pytest.TempPathFactory, photos: Callable[..., torch.Tensor]) -> Path:
    """A random torchvision Inception3 saved with ``art_inception.pth``'s two heads (fc1/fc2, AuxLogits1/2).

    Its BatchNorm statistics are set from one batch of photographs so that activations stay in a realistic
    range through the network (as the FID Inception fixture does).
    """
    torch.manual_seed(0)
    net = torchvision.models.Inception3(num_classes=1000, aux_logits=True, init_weights=False)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration pass
    net.train()
    x = photos(4, 96)
    with torch.no_grad():
        for name in (
            "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
            "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
            "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
        ):  # fmt: skip
            x = getattr(net, name)(x)
    state = {}
    for key, value in net.state_dict().items():
        for head in ("AuxLogits", "fc"):
            if key.startswith(f"{head}."):
                for i in (1, 2):
                    state[key.replace(f"{head}.", f"{head}{i}.", 1)] = value
                break
        else:
            state[key] = value
    path = tmp_path_factory.mktemp("art_inception") / "art_inception.pth"
    torch.save(state, path)
    return path
