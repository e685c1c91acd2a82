"""What each metric of the evaluation table does with a batch: per-pair scorers and feature consumers.

Two kinds, so that a new metric is one class plus one table entry (:mod:`percep_lightning.evaluation.table`):

* a :class:`PairScorer` maps a batch of pairs ``(preds, other)`` to one float64 value per pair; the
  dataset value is the mean over pairs, its ``±`` the standard deviation over pairs (ddof 0);
* a :class:`FeatureConsumer` receives the Inception features of every image of the folders it needs
  (one Inception pass per folder feeds all of them) and computes its value at the end, through the
  streaming :mod:`percep_lightning.metrics` (so the multi-process sync is theirs).

Images arrive as ``(n, 3, H, W)`` ``uint8`` in [0, 255] (8-bit files) or float32 in [0, 1] (16-bit files).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor
from torchmetrics import Metric

from percep_lightning.backbones.art_inception import resize_shorter_side
from percep_lightning.backbones.inception import FIDInceptionV3, InceptionFeatures
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.cfsd import cfsd
from percep_lightning.functional.fid import feature_statistics, feature_sums, frechet_distance
from percep_lightning.functional.pixel import psnr
from percep_lightning.functional.ssim import ms_ssim, ssim
from percep_lightning.losses.lpips import LPIPSLoss
from percep_lightning.metrics._images import exact_float32, to_float, to_uint8
from percep_lightning.metrics.cfsd import CFSD, LAYER
from percep_lightning.metrics.fid import FrechetInceptionDistance
from percep_lightning.metrics.inception_score import InceptionScore
from percep_lightning.metrics.kid import KernelInceptionDistance

__all__ = [
    "ArtFIDConsumer",
    "CFSDScorer",
    "FIDConsumer",
    "FeatureConsumer",
    "ISConsumer",
    "KIDConsumer",
    "LPIPSScorer",
    "PairScorer",
    "PixelScorer",
    "grey_like_pil",
]


class PairScorer(Protocol):
    """A paired metric: one float64 value per pair."""

    def __call__(self, preds: Tensor, other: Tensor) -> Tensor:
        """``(n,)`` float64 values for ``n`` pairs of ``(n, 3, H, W)`` images."""
        ...


class FeatureConsumer(Protocol):
    """A metric on Inception features: fed per folder, computed once at the end."""

    sides: tuple[str, ...]
    """The folders it needs: ``"pred"`` and/or the compared folder (``"target"``, ``"style"``)."""

    def update(self, features: InceptionFeatures, indices: Tensor, side: str) -> None:
        """Add the features of images at dataset positions ``indices`` of folder ``side``."""
        ...

    def finish(self) -> tuple[float, float | None]:
        """``(value, std or None)``, synchronised across processes (call it on every process)."""
        ...


def _float64(images: Tensor) -> Tensor:
    """[0, 1] float64 images; ``uint8`` is divided by 255 in float64 (not rounded through float32)."""
    if images.dtype == torch.uint8:
        return images.to(torch.float64) / 255
    return to_float(images, "images").to(torch.float64)


class PixelScorer:
    """PSNR, SSIM or MS-SSIM per pair, in float64 on [0, 1] images (data range 1).

    Args:
        metric: ``"psnr"``, ``"ssim"`` or ``"ms_ssim"``.
        y_channel: compare the MATLAB luma (BasicSR's ``test_y_channel=True``) instead of RGB.
        crop_border: pixels removed on every side before comparing (BasicSR's ``crop_border``).
    """

    def __init__(self, metric: str, *, y_channel: bool = False, crop_border: int = 0) -> None:
        self.metric = metric
        self.y_channel = y_channel
        self.crop_border = crop_border

    def __call__(self, preds: Tensor, other: Tensor) -> Tensor:
        x, y = _float64(preds), _float64(other)
        s = self.crop_border
        if s and min(x.shape[-2:]) <= 2 * s:
            raise ValueError(
                f"--crop-border {s} removes the whole {x.shape[-2]}x{x.shape[-1]} image (2 x {s} pixels or more)."
            )
        function = {"psnr": psnr, "ssim": ssim, "ms_ssim": ms_ssim}[self.metric]
        values = function(
            x, y, data_range=1.0, channel="y" if self.y_channel else "rgb", crop_border=s, reduction="none"
        )
        return values.reshape(-1).to(torch.float64)


def grey_like_pil(images: Tensor) -> Tensor:
    """Pillow's ``convert("L")`` on ``uint8`` RGB (torchvision's ``Grayscale()`` on PIL images).

    ``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16``; float images use ``0.299 R + 0.587 G + 0.114 B``.

    Example:
        >>> import torch
        >>> grey_like_pil(torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)).flatten()
        tensor([76], dtype=torch.uint8)
    """
    if images.dtype == torch.uint8:
        r, g, b = images.to(torch.int64).unbind(1)
        return ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16).to(torch.uint8).unsqueeze(1)
    r, g, b = images.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


class LPIPSScorer:
    """LPIPS per pair (the ``lpips`` package's v0.1 metric), optionally on grey images (StyleID's LPIPS_gray).

    Args:
        net: ``"alex"``, ``"vgg"`` or ``"squeeze"``.
        weights: the trunk's torchvision weights (a path, ``"default"`` or ``None``).
        device: where the network runs.
        grey: compare Pillow-grey versions of the images.
        resize: first resize both images so that their shorter side has this length, as
            ``torchvision.transforms.Resize(resize)`` on the 8-bit Pillow image (StyleID reads its images
            so, with 512, before converting to grey); ``None`` keeps their size.
    """

    def __init__(
        self,
        net: str,
        weights: WeightsArg,
        device: torch.device,
        *,
        grey: bool = False,
        resize: int | None = None,
    ) -> None:
        self.loss = LPIPSLoss(net, weights=weights, reduction="none").to(device)
        self.device = device
        self.grey = grey
        self.resize = resize

    def __call__(self, preds: Tensor, other: Tensor) -> Tensor:
        if self.resize is not None:
            preds = resize_shorter_side(to_uint8(preds, "preds"), self.resize)
            other = resize_shorter_side(to_uint8(other, "content"), self.resize)
        if self.grey:
            preds, other = grey_like_pil(preds), grey_like_pil(other)
        x = to_float(preds, "preds").to(self.device)
        y = to_float(other, "target").to(self.device)
        with exact_float32(self.device):
            return self.loss(x, y).reshape(-1).to("cpu", torch.float64)


class CFSDScorer:
    """CFSD per (stylized, content) pair, on the VGG19 trunk of :class:`~percep_lightning.metrics.CFSD`."""

    def __init__(self, weights: WeightsArg, device: torch.device) -> None:
        self.metric = CFSD(weights).to(device)
        self.device = device

    def __call__(self, preds: Tensor, other: Tensor) -> Tensor:
        mean, std = self.metric.mean, self.metric.std
        with exact_float32(self.device):
            pair = torch.cat([to_float(preds, "preds"), to_float(other, "content")]).to(self.device)
            features = self.metric.backbone((pair - mean) / std)[LAYER].float()
            n = preds.shape[0]
            values = cfsd(features[:n], features[n:], chunk_size=self.metric.chunk_size, reduction="none")
        return values.to("cpu", torch.float64)


class FIDConsumer:
    """FID between the ``pred`` folder and ``against`` (a folder, or fixed statistics from an ``.npz``)."""

    def __init__(self, backbone: FIDInceptionV3, against: str) -> None:
        self.metric = FrechetInceptionDistance(backbone=backbone)
        self.sides = ("pred", against)
        self.against = against
        self._reference: tuple[Tensor, Tensor] | None = None

    def fix_reference(self, mu: Tensor, sigma: Tensor) -> None:
        """Use precomputed reference statistics (the reference folder is then not read).

        Their image count is not needed (a pytorch-fid ``.npz`` does not carry it): the predicted images'
        statistics are accumulated on their own and compared with ``mu`` and ``sigma`` directly.
        """
        self._reference = (mu.to(torch.float64), sigma.to(torch.float64))
        self.sides = ("pred",)

    def use_cached_target(self, entry: dict, is_main: bool) -> None:
        """Use TARGET statistics from the cache (``entry["mu"]``, ``entry["sigma"]``) instead of a pass."""
        self.fix_reference(entry["mu"], entry["sigma"])

    def update(self, features: InceptionFeatures, indices: Tensor, side: str) -> None:
        # with fixed reference statistics the metric's real side only accumulates the predicted images
        real = side != "pred" or self._reference is not None
        self.metric.update_features(features.pool3, real=real)

    def finish(self) -> tuple[float, float | None]:
        if self._reference is None:
            return float(self.metric.compute()), None
        mu, sigma, _ = self.metric.real_statistics()
        reference_mu, reference_sigma = (t.to(mu.device) for t in self._reference)
        return float(frechet_distance(reference_mu, reference_sigma, mu, sigma)), None


class _FeatureStatistics(Metric):
    """Streaming float64 sums of feature vectors (mean and unbiased covariance), summed across processes."""

    full_state_update = False
    features_sum: Tensor
    outer_sum: Tensor
    num_samples: Tensor

    def __init__(self, dim: int = 2048) -> None:
        super().__init__()
        self.add_state("features_sum", torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer_sum", torch.zeros(dim, dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, features: Tensor) -> None:
        total, outer, n = feature_sums(features.to(self.features_sum.device))
        self.features_sum += total
        self.outer_sum += outer
        self.num_samples += n

    def compute(self) -> tuple[Tensor, Tensor]:
        return feature_statistics(self.features_sum, self.outer_sum, self.num_samples)


class ArtFIDConsumer:
    """StyleID's FID: the art Inception's pooled features of the ``pred`` and ``style`` folders.

    The features arrive from :class:`~percep_lightning.backbones.ArtInception` (images resized to the
    shorter side ``--styleid-size``); statistics are float64 sums, the distance as ``numpy.cov`` and
    ``scipy.linalg.sqrtm`` give it (see :func:`~percep_lightning.functional.frechet_distance`).
    """

    network = "art_inception"

    def __init__(self) -> None:
        self.sides = ("pred", "style")
        self.statistics = {side: _FeatureStatistics() for side in self.sides}

    def update(self, features: Tensor, indices: Tensor, side: str) -> None:
        self.statistics[side].update(features)

    def finish(self) -> tuple[float, float | None]:
        (mu1, sigma1), (mu2, sigma2) = (self.statistics[side].compute() for side in self.sides)
        return float(frechet_distance(mu1, sigma1, mu2, sigma2)), None


class KIDConsumer:
    """KID between the ``pred`` folder and TARGET (torch-fidelity's kernel, subsets and seed), mean and std."""

    def __init__(self, backbone: FIDInceptionV3, *, subsets: int = 100, subset_size: int = 1000) -> None:
        self.metric = KernelInceptionDistance(backbone=backbone, subsets=subsets, subset_size=subset_size)
        self.sides = ("pred", "target")
        self._seen: set[str] = set()

    def update(self, features: InceptionFeatures, indices: Tensor, side: str) -> None:
        self._seen.add(side)
        self.metric.update_features(features.pool3, real=side != "pred", indices=indices)

    def use_cached_target(self, entry: dict, is_main: bool) -> None:
        """Use TARGET features from the cache (``entry["features"]``, in folder order) instead of a pass.

        Process 0 adds them all; the others none (the metric gathers them).
        """
        self.sides = ("pred",)
        if is_main:
            features = entry["features"].to(self.metric.device)
            indices = torch.arange(features.shape[0], device=features.device)
            self.metric.update_features(features, real=True, indices=indices)
            self._seen.add("target")

    def finish(self) -> tuple[float, float | None]:
        device = self.metric.device
        for side in ("pred", "target"):
            if side not in self._seen:  # a process without images still takes part in the gather
                self.metric.update_features(
                    torch.empty(0, 2048, device=device),
                    real=side != "pred",
                    indices=torch.empty(0, dtype=torch.long, device=device),
                )
        mean, std = self.metric.compute()
        return float(mean), float(std)


class ISConsumer:
    """Inception Score of the ``pred`` folder (torch-fidelity's splits and seed), mean and std over splits."""

    def __init__(self, backbone: FIDInceptionV3, splits: int = 10) -> None:
        self.metric = InceptionScore(backbone=backbone, splits=splits)
        self.sides = ("pred",)
        self._empty = True

    def update(self, features: InceptionFeatures, indices: Tensor, side: str) -> None:
        self._empty = False
        self.metric.update_logits(features.logits_unbiased, indices.to(features.logits_unbiased.device))

    def finish(self) -> tuple[float, float | None]:
        if self._empty:  # a process without images still takes part in the gather
            device = self.metric.device
            self.metric.update_logits(torch.empty(0, 1008, device=device), torch.empty(0, dtype=torch.long))
        mean, std = self.metric.compute()
        return float(mean), float(std)
