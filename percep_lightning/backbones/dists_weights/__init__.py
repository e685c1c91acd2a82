"""The learned DISTS weights alpha and beta, shipped as package data (MIT, see LICENSE here)."""

from __future__ import annotations

from importlib import resources

import torch
from torch import Tensor

DISTS_CHANNELS: tuple[int, ...] = (3, 64, 128, 256, 512, 512)
"""Channels of the six DISTS stages: the image itself, then relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""


def dists_alpha_beta() -> tuple[list[Tensor], list[Tensor]]:
    """The DISTS structure (alpha) and texture (beta) weights, divided by their joint sum, one per stage.

    The file is ``DISTS_pytorch/weights.pt`` of the ``dists-pytorch`` package 0.1, unchanged: two
    ``(1, 1475, 1, 1)`` float32 tensors. As the reference does before every score, both are divided by
    ``sum(alpha) + sum(beta)`` (here once, in float64), then split by stage.

    Returns:
        ``(alpha, beta)``: two lists of six float32 tensors of shape ``(C_k,)``, ``C_k`` in
        :data:`DISTS_CHANNELS`; all twelve sum to 1.

    Example:
        >>> alpha, beta = dists_alpha_beta()
        >>> [a.shape[0] for a in alpha]
        [3, 64, 128, 256, 512, 512]
        >>> round(float(sum(a.sum() + b.sum() for a, b in zip(alpha, beta))), 6)
        1.0
    """
    with resources.as_file(resources.files(__name__) / "weights.pt") as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    alpha, beta = state["alpha"].double().flatten(), state["beta"].double().flatten()
    total = alpha.sum() + beta.sum()
    return (
        [a.float() for a in torch.split(alpha / total, DISTS_CHANNELS)],
        [b.float() for b in torch.split(beta / total, DISTS_CHANNELS)],
    )
