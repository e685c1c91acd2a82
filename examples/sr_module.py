"""The networks and the LightningModule of the super-resolution example.

Both networks predict a residual on top of the bicubic upscale of their input, and their last layer
starts near zero: from the first step the output is (almost) the bicubic baseline, so even a short
CPU run shows sensible images and training only has to add the missing detail.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _upscale_bicubic(x: Tensor, scale: int) -> Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class EDSRLite(nn.Module):
    """A small EDSR (Lim et al. 2017): residual blocks without batch norm, then sub-pixel upsampling.

    Args:
        scale: upscaling factor.
        channels: feature channels.
        num_blocks: residual blocks.

    Shape:
        - Input: ``(N, 3, H, W)`` in [0, 1].
        - Output: ``(N, 3, H * scale, W * scale)``, roughly in [0, 1] (not clamped, for the loss).
    """

    def __init__(self, scale: int = 2, channels: int = 32, num_blocks: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[_ResidualBlock(channels) for _ in range(num_blocks)])
        self.tail = nn.Sequential(nn.Conv2d(channels, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale))
        with torch.no_grad():  # start as (almost) the bicubic baseline
            self.tail[0].weight.mul_(0.1)
            self.tail[0].bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        features = self.head(x)
        return _upscale_bicubic(x, self.scale) + self.tail(features + self.body(features))


class ESPCN(nn.Module):
    """ESPCN (Shi et al. 2016): three convolutions and a sub-pixel shuffle, plus a bicubic skip.

    Args:
        scale: upscaling factor.
        channels: channels of the first layer (the second has half).

    Shape:
        - Input: ``(N, 3, H, W)`` in [0, 1].
        - Output: ``(N, 3, H * scale, W * scale)``.
    """

    def __init__(self, scale: int = 2, channels: int = 64) -> None:
        super().__init__()
        self.scale = scale
        self.layers = nn.Sequential(
            nn.Conv2d(3, channels, 5, padding=2),
            nn.Tanh(),
            nn.Conv2d(channels, channels // 2, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(channels // 2, 3 * scale**2, 3, padding=1),
            nn.PixelShuffle(scale),
        )
        with torch.no_grad():
            self.layers[4].weight.mul_(0.1)
            self.layers[4].bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return _upscale_bicubic(x, self.scale) + self.layers(x)


class SuperResolutionModule(L.LightningModule):
    """Train ``net`` with a perceptual :class:`~percep_lightning.losses.CompositeLoss`.

    ``training_step`` logs every part of the loss (``train/loss/<part>``, per step and per epoch)
    through the loss's own ``log_parts``; ``validation_step`` returns ``{"preds", "target"}`` in [0, 1], the
    dict that :class:`~percep_lightning.callbacks.ImageMetricsCallback` reads its metrics from (the example
    config asks for FID, IS, CFSD, PSNR and SSIM).

    Args:
        net: the super-resolution network, ``(N, 3, h, w) -> (N, 3, h * s, w * s)``.
        loss: the training loss, called as ``loss(preds, target)``. Its pretrained backbones are held
            outside the module tree, so they are neither optimised nor saved in checkpoints.
        lr: Adam learning rate.
        betas: Adam betas.
    """

    def __init__(
        self, net: nn.Module, loss: nn.Module, lr: float = 5e-4, betas: tuple[float, float] = (0.9, 0.99)
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss"])
        self.net = net
        self.loss = loss

    def forward(self, lr: Tensor) -> Tensor:
        return self.net(lr)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        preds = self.net(batch["lr"])
        total = self.loss(preds, batch["hr"])
        log = {"on_step": True, "on_epoch": True, "batch_size": len(preds), "sync_dist": True}
        if hasattr(self.loss, "log_parts"):  # a CompositeLoss: every part, unweighted, and the total
            self.loss.log_parts(self, prefix="train/loss", **log)
        else:  # a single loss module
            self.log("train/loss/total", total.detach(), **log)
        self.log("loss", total.detach(), prog_bar=True, logger=False, batch_size=len(preds))
        return total

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        preds = self.net(batch["lr"]).float().clamp(0, 1)
        return {"preds": preds, "target": batch["hr"].float()}  # read by ImageMetricsCallback

    def configure_optimizers(self) -> Any:
        # Only the network: the loss and its frozen backbones are never optimised.
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas))
