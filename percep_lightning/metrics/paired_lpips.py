"""LPIPS (Zhang et al. 2018) as a streaming torchmetrics ``Metric``, averaged per image over a dataset."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from percep_lightning.backbones.art_inception import resize_shorter_side
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.color import grey_like_pil
from percep_lightning.functional.inputs import check_bool, check_int
from percep_lightning.losses.lpips import LPIPSLoss
from percep_lightning.metrics._images import exact_float32, to_unit_float, unit_float_pair
from percep_lightning.metrics.paired import PerImageMean

__all__ = ["LPIPS"]


class LPIPS(PerImageMean):
    """Learned Perceptual Image Patch Similarity between image pairs, averaged per image over the dataset.

    Each pair's distance is :class:`~percep_lightning.losses.LPIPSLoss`'s (the ``lpips`` package's v0.1
    metric: ``lpips.LPIPS(net=net)(preds, target, normalize=True)`` for images in [0, 1]), computed in
    float32 with autocast and TF32 off, whatever the surrounding precision. The state is a float64 sum of
    the per-pair distances and a pair count, reduced with ``sum`` across processes. The network is held
    outside the module tree: it never enters ``state_dict()`` or checkpoints, stays in float32 under
    ``.half()``, and moves with ``.to(device)``.

    Args:
        net: ``"alex"`` (default, the package's recommended metric), ``"vgg"`` or ``"squeeze"``.
        weights: the torchvision ``state_dict`` of the trunk: ``"default"`` (IMAGENET1K_V1, cached or
            downloaded once), a file path, a state dict, or ``None`` (random, with a warning). The
            calibrated lin weights always come from the package data.
        resize: first resize both images of a pair so that their shorter side has this length, as
            ``torchvision.transforms.Resize(resize)`` on the 8-bit Pillow image (StyleID reads its images
            so, with 512); ``None`` (default) keeps their size.
        grey: compare Pillow-grey versions of the (resized) images (StyleID's ``LPIPS_gray``).
        input_range: the range of float images: ``(0, 1)`` (default) or ``(-1, 1)``, the ``lpips`` package's
            own convention (mapped with ``(x + 1) / 2``); ``uint8`` images are always [0, 255].
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Raises:
        TypeError: if ``resize`` is neither None nor an integer, or ``grey`` is not a bool.
        ValueError: for an unknown ``net`` (the message lists the choices) or ``resize < 1``.
        RuntimeError: if ``weights`` does not hold the official keys and shapes of the trunk.

    Shape:
        - ``preds``, ``target``: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1] (grey
          images are repeated to three channels).
        - Output: ``()``, float64.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import LPIPS
        >>> metric = LPIPS("alex", weights=None)
        >>> target = torch.rand(2, 3, 64, 64)
        >>> metric.update(target, target)
        >>> metric.compute()
        tensor(0., dtype=torch.float64)
    """

    higher_is_better = False
    plot_lower_bound = 0.0
    _frozen_keep_float32 = True

    def __init__(
        self,
        net: Literal["alex", "vgg", "squeeze"] = "alex",
        *,
        weights: WeightsArg = "default",
        resize: int | None = None,
        grey: bool = False,
        input_range: tuple[float, float] = (0.0, 1.0),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if tuple(input_range) not in ((0.0, 1.0), (-1.0, 1.0)):
            raise ValueError(f"Expected `input_range` to be (0, 1) or (-1, 1), but got {tuple(input_range)}.")
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.net = net
        self.resize = None if resize is None else check_int(resize, "resize", minimum=1)
        self.grey = check_bool(grey, "grey")
        self._hold("lpips", LPIPSLoss(net, weights=weights, reduction="none"))

    @property
    def loss(self) -> LPIPSLoss:
        """The frozen :class:`~percep_lightning.losses.LPIPSLoss` that computes each distance."""
        return self._held("lpips")  # type: ignore[return-value]

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        """Each pair's LPIPS distance, ``(N,)``."""
        if self.input_range == (-1.0, 1.0):
            preds, target = (x if x.dtype == torch.uint8 else (x + 1) / 2 for x in (preds, target))
        preds_f, target_f = unit_float_pair(preds, target)
        if self.resize is not None or self.grey:
            preds_f, target_f = (self._styleid_view(x) for x in (preds_f, target_f))
        if preds_f.shape[0] == 0:
            return preds_f.new_zeros(0)
        loss = self.loss
        device = loss.shift.device
        with exact_float32(device):  # the pair was validated above: the loss's own checks are skipped
            return loss.distance(preds_f.to(device), target_f.to(device)).flatten()

    def _styleid_view(self, images: Tensor) -> Tensor:
        """``images`` (float in [0, 1]) as StyleID reads them: 8-bit with the shorter side resized, then grey."""
        images = images.expand(-1, 3, -1, -1)
        if self.resize is not None:
            pixels = (images * 255 + 0.5).floor().to(torch.uint8)  # exact for images that came from uint8
            images = resize_shorter_side(pixels, self.resize)
        if self.grey:
            images = grey_like_pil(images)
        return to_unit_float(images)
