"""A 64-d stand-in feature extractor: any ``nn.Module`` mapping images to ``(N, D)`` works with the metrics.

It pools the image to 4x4, mixes the 48 values with a fixed random matrix and applies ``tanh``: cheap,
deterministic (the same weights in every process), and sensitive to the image content, so distances of
different image sets differ. Its Fréchet distance needs a 64x64 eigendecomposition, not a 2048x2048 one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STUB_FEATURES = 64


class StubExtractor(nn.Module):
    """``(N, 3, H, W)`` float images in [0, 1] -> ``(N, 64)`` features (``num_features`` is not declared)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.mix = nn.Linear(48, STUB_FEATURES)
        with torch.no_grad():
            self.mix.weight.copy_(torch.randn(STUB_FEATURES, 48, generator=generator) / 48**0.5)
            self.mix.bias.copy_(torch.randn(STUB_FEATURES, generator=generator) * 0.1)

    def forward(self, images: Tensor) -> Tensor:
        # The mix runs in float64, so a row's features do not depend on the batch it came in (float32 matrix
        # products round differently for different batch sizes); the features are float32, as a network's.
        pooled = F.adaptive_avg_pool2d(images, 4).flatten(1).double() - 0.5
        mixed = F.linear(pooled, self.mix.weight.double(), self.mix.bias.double())
        return torch.tanh(3 * mixed).float()
