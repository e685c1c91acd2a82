"""ArtFID (Wright & Ommer 2022) as StyleID evaluates it, as a torchmetrics ``Metric``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from percep_lightning.backbones.art_inception import ART_INCEPTION_SIZE, ArtInception, resize_shorter_side
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.fid import feature_statistics, feature_sums, frechet_distance
from percep_lightning.losses.lpips import LPIPSLoss
from percep_lightning.metrics._images import (
    Float64Sums,
    Quantize,
    check_quantize,
    exact_float32,
    to_uint8,
)

FEATURE_DIM = 2048


class ArtFID(Float64Sums, Metric):
    r"""ArtFID of stylized images: content preservation and style match in one number (Wright & Ommer 2022).

    .. math::
        \mathrm{ArtFID} = \big(1 + \mathrm{LPIPS}(\text{content}, \text{stylized})\big)
            \cdot \big(1 + \mathrm{FID}(\text{stylized}, \text{style})\big)

    as StyleID's ``evaluation/eval_artfid.py`` computes it in mode ``art_fid``: every image is read as
    8-bit, its shorter side resized to 512 pixels (Pillow bilinear, antialiased) and scaled to [0, 1];
    LPIPS is ``lpips.LPIPS(net="alex")`` on ``2 x - 1`` averaged over the (stylized, content) pairs; FID uses
    the 2048-d pooled features of the art-trained Inception
    (:class:`~percep_lightning.backbones.ArtInception`), unbiased covariances, float64. Given the same
    weights files the value equals StyleID's.

    The state is streaming (float64 feature sums per side and an LPIPS sum and count, all reduced with
    ``sum``), so memory does not grow with the number of images. Style images may be added with the
    stylized batches or separately (``style=None`` in :meth:`update`, then :meth:`update_style`); their
    count need not match the stylized images'.

    Args:
        weights: the art Inception weights: ``"default"`` (``art_inception.pth`` from its published URL,
            cached), a path to a file in that format, a state dict, or ``None`` (random, for tests).
        lpips_weights: the torchvision AlexNet weights of LPIPS (``"default"``, a path, a state dict or
            ``None``); its calibrated lin weights ship with this package.
        resize: the shorter-side length of every image before both networks (StyleID: 512), or ``None``
            to use the images at their own size.
        quantize: how float images become 8-bit: ``"round"`` (as saving a PNG) or ``"truncate"``.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: for an unknown ``quantize`` or a bad ``resize``.

    Shape:
        - ``stylized``, ``content``: ``(N, 3 or 1, H, W)`` of one size, ``uint8`` in [0, 255] or float in [0, 1].
        - ``style``: ``(M, 3 or 1, H', W')``, any ``M`` and size.
        - Output: a dict of 0-dim float64 tensors ``{"artfid", "fid", "lpips"}``.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import ArtFID
        >>> metric = ArtFID(weights=None, lpips_weights=None, resize=96)
        >>> stylized, content, style = torch.rand(3, 4, 3, 96, 96)
        >>> metric.update(stylized, content, style)
        >>> sorted(metric.compute())
        ['artfid', 'fid', 'lpips']
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    _frozen_keep_float32 = True

    stylized_features_sum: Tensor
    stylized_outer_sum: Tensor
    stylized_num_samples: Tensor
    style_features_sum: Tensor
    style_outer_sum: Tensor
    style_num_samples: Tensor
    lpips_sum: Tensor
    lpips_count: Tensor

    def __init__(
        self,
        weights: WeightsArg = "default",
        *,
        lpips_weights: WeightsArg = "default",
        resize: int | None = ART_INCEPTION_SIZE,
        quantize: Quantize = "round",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_quantize(quantize)
        self._hold("inception", ArtInception(weights, resize=resize))
        self._hold("lpips", LPIPSLoss("alex", weights=lpips_weights, reduction="none"))
        self.quantize = quantize
        for side in ("stylized", "style"):
            self.add_float64_sum(f"{side}_features_sum", (FEATURE_DIM,))
            self.add_float64_sum(f"{side}_outer_sum", (FEATURE_DIM, FEATURE_DIM))
            self.add_state(f"{side}_num_samples", torch.zeros((), dtype=torch.long), "sum")
        self.add_float64_sum("lpips_sum", ())
        self.add_state("lpips_count", torch.zeros((), dtype=torch.long), "sum")

    @property
    def backbone(self) -> ArtInception:
        """The frozen art Inception."""
        return self._held("inception")  # type: ignore[return-value]

    def update(self, stylized: Tensor, content: Tensor, style: Tensor | None = None) -> None:
        """Add stylized images with their content images, and optionally style images.

        Args:
            stylized: ``(N, 3 or 1, H, W)`` stylized images, ``uint8`` in [0, 255] or float in [0, 1].
            content: ``(N, 3 or 1, H, W)`` their content images, in the same order.
            style: ``(M, 3 or 1, H', W')`` style images, or ``None``.

        Raises:
            TypeError: for a wrong dtype.
            ValueError: for a wrong shape or range, NaN/Inf, or ``stylized`` and ``content`` of different shapes.
        """
        stylized_u8 = to_uint8(stylized, "stylized", self.quantize)
        content_u8 = to_uint8(content, "content", self.quantize)
        if stylized_u8.shape != content_u8.shape:
            raise ValueError(
                "Expected `stylized` and `content` to have the same shape, but got "
                f"{tuple(stylized.shape)} and {tuple(content.shape)}."
            )
        device = next(self.backbone.parameters()).device
        resize = self.backbone.resize
        with exact_float32(device):
            stylized_u8 = stylized_u8.to(device)
            content_u8 = content_u8.to(device)
            if resize is not None:
                stylized_u8 = resize_shorter_side(stylized_u8, resize)
                content_u8 = resize_shorter_side(content_u8, resize)
            # the shorter side is now `resize`, so the backbone's own resize is a no-op
            self._add_features("stylized", self.backbone(stylized_u8))
            lpips = self._held("lpips")
            distance = lpips(stylized_u8.to(torch.float32) / 255, content_u8.to(torch.float32) / 255)
        self.lpips_sum += distance.to(self.lpips_sum.device, torch.float64).sum()
        self.lpips_count += distance.shape[0]
        if style is not None:
            self._add_style(style)

    def update_style(self, style: Tensor) -> None:
        """Add style images only (the reference set of the FID term).

        Args:
            style: ``(M, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        """
        self._add_style(style)

    def _add_style(self, style: Tensor) -> None:
        style_u8 = to_uint8(style, "style", self.quantize)
        device = next(self.backbone.parameters()).device
        with exact_float32(device):
            self._add_features("style", self.backbone(style_u8.to(device)))

    def _add_features(self, side: str, features: Tensor) -> None:
        total, outer, n = feature_sums(features.to(self.stylized_features_sum.device))
        setattr(self, f"{side}_features_sum", getattr(self, f"{side}_features_sum") + total)
        setattr(self, f"{side}_outer_sum", getattr(self, f"{side}_outer_sum") + outer)
        setattr(self, f"{side}_num_samples", getattr(self, f"{side}_num_samples") + n)

    def compute(self) -> dict[str, Tensor]:
        """``{"artfid", "fid", "lpips"}`` over everything added.

        Raises:
            ValueError: if fewer than 2 stylized or 2 style images were added.
        """
        stats = []
        for side, which in (("stylized", "stylized"), ("style", "style")):
            n = int(getattr(self, f"{side}_num_samples"))
            if n < 2:
                raise ValueError(
                    f"ArtFID needs at least 2 {which} images to estimate a covariance, but got {n}."
                )
            stats.append(
                feature_statistics(
                    getattr(self, f"{side}_features_sum"), getattr(self, f"{side}_outer_sum"), n
                )
            )
        (mu1, sigma1), (mu2, sigma2) = stats
        fid = frechet_distance(mu1, sigma1, mu2, sigma2)
        lpips = self.lpips_sum / self.lpips_count
        return {"artfid": (1 + lpips) * (1 + fid), "fid": fid, "lpips": lpips}
