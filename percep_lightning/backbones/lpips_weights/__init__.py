"""LPIPS v0.1 calibrated linear layers, shipped as package data (BSD-2-Clause, see LICENSE here)."""

from __future__ import annotations

from importlib import resources

import torch
from torch import Tensor

_NETS = ("alex", "vgg", "squeeze")


def lpips_linear_weights(net: str) -> list[Tensor]:
    """Return the LPIPS v0.1 1x1 "lin" weights of ``net``, one ``(1, C_l, 1, 1)`` tensor per layer.

    The files are those of the ``lpips`` package 0.1.4 (``lpips/weights/v0.1/<net>.pth``), unchanged;
    they load with no network.

    Raises:
        ValueError: if ``net`` is not ``"alex"``, ``"vgg"`` or ``"squeeze"``.
    """
    if net not in _NETS:
        raise ValueError(f"Expected `net` to be one of {_NETS}, but got {net!r}.")
    with resources.as_file(resources.files(__name__) / f"{net}.pth") as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    return [state[f"lin{i}.model.1.weight"] for i in range(len(state))]
