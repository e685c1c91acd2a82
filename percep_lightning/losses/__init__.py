"""Training losses as ``nn.Module``s: pixel, SSIM/MS-SSIM, VGG perceptual + style, LPIPS, DISTS, CFSD, composite."""

from percep_lightning.losses.cfsd import CFSDLoss
from percep_lightning.losses.composite import CompositeLoss
from percep_lightning.losses.dists import DISTSLoss
from percep_lightning.losses.lpips import LPIPSLoss
from percep_lightning.losses.perceptual import VGGPerceptualLoss
from percep_lightning.losses.pixel import PixelLoss
from percep_lightning.losses.ssim import MSSSIMLoss, SSIMLoss

__all__ = [
    "CFSDLoss",
    "CompositeLoss",
    "DISTSLoss",
    "LPIPSLoss",
    "MSSSIMLoss",
    "PixelLoss",
    "SSIMLoss",
    "VGGPerceptualLoss",
]
