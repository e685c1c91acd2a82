"""Training losses as ``nn.Module``s: pixel, SSIM/MS-SSIM, VGG perceptual + style, LPIPS, CFSD, composite."""

from percep_lightning.losses.cfsd import CFSDLoss
from percep_lightning.losses.composite import CompositeLoss
from percep_lightning.losses.lpips import LPIPSLoss
from percep_lightning.losses.perceptual import VGGPerceptualLoss
from percep_lightning.losses.pixel import PixelLoss
from percep_lightning.losses.ssim import MSSSIMLoss, SSIMLoss

__all__ = [
    "CFSDLoss",
    "CompositeLoss",
    "LPIPSLoss",
    "MSSSIMLoss",
    "PixelLoss",
    "SSIMLoss",
    "VGGPerceptualLoss",
]
