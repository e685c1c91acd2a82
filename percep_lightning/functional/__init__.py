"""Pure functions on tensors: the maths behind every loss and metric."""

from percep_lightning.functional.cfsd import cfsd
from percep_lightning.functional.cmmd import cmmd
from percep_lightning.functional.color import rgb_to_y
from percep_lightning.functional.cosine import image_cosine_similarity
from percep_lightning.functional.dists import dists_distance
from percep_lightning.functional.fid import feature_statistics, fid_infinity, frechet_distance
from percep_lightning.functional.inception_score import inception_score
from percep_lightning.functional.kid import kernel_inception_distance
from percep_lightning.functional.lpips import lpips_distance
from percep_lightning.functional.perceptual import gram_matrix
from percep_lightning.functional.pixel import pixel_loss, psnr
from percep_lightning.functional.prdc import PRDC, prdc
from percep_lightning.functional.ssim import ms_ssim, ssim

__all__ = [
    "PRDC",
    "cfsd",
    "cmmd",
    "dists_distance",
    "feature_statistics",
    "fid_infinity",
    "frechet_distance",
    "gram_matrix",
    "image_cosine_similarity",
    "inception_score",
    "kernel_inception_distance",
    "lpips_distance",
    "ms_ssim",
    "pixel_loss",
    "prdc",
    "psnr",
    "rgb_to_y",
    "ssim",
]
