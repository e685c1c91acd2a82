"""DISTS (Ding et al., TPAMI 2020) as a streaming torchmetrics ``Metric``, averaged per image over a dataset."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.losses.dists import DISTSLoss
from percep_lightning.metrics._images import exact_float32, unit_float_pair
from percep_lightning.metrics.paired import PerImageMean

__all__ = ["DISTS"]


class DISTS(PerImageMean):
    """Deep Image Structure and Texture Similarity between image pairs, averaged per image over the dataset.

    Each pair's distance is :class:`~percep_lightning.losses.DISTSLoss`'s (the official
    ``DISTS_pytorch.DISTS()(preds, target)`` for images in [0, 1]), computed in float32 with autocast and
    TF32 off, whatever the surrounding precision. The state is a float64 sum of the per-pair distances
    and a pair count, reduced with ``sum`` across processes, so the result is the mean over every pair
    seen whatever the batch sizes and the number of processes. The network is held outside the module
    tree: it never enters ``state_dict()`` or checkpoints, stays in float32 under ``.half()``, and moves
    with ``.to(device)``.

    Args:
        weights: the torchvision ``state_dict`` of VGG16: ``"default"`` (IMAGENET1K_V1, cached or
            downloaded once), a file path, a state dict, or ``None`` (random, with a warning). The learned
            alpha and beta always come from the package data.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Raises:
        RuntimeError: if ``weights`` does not hold the official keys and shapes of VGG16.

    Shape:
        - ``preds``, ``target``: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1] (grey
          images are repeated to three channels), at least 17x17.
        - Output: ``()``, float64 (lower is better; 0 for identical images).

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import DISTS
        >>> metric = DISTS(weights=None)
        >>> target = torch.rand(2, 3, 32, 32)
        >>> metric.update(target, target)
        >>> metric.compute()
        tensor(0., dtype=torch.float64)
    """

    higher_is_better = False
    plot_lower_bound = 0.0
    _frozen_keep_float32 = True

    def __init__(self, *, weights: WeightsArg = "default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hold("dists", DISTSLoss(weights, reduction="none"))

    @property
    def loss(self) -> DISTSLoss:
        """The frozen :class:`~percep_lightning.losses.DISTSLoss` that computes each distance."""
        return self._held("dists")  # type: ignore[return-value]

    @property
    def min_size(self) -> tuple[int, int]:
        """The smallest ``(H, W)`` accepted (relu5_3 of the trunk at least 2x2): ``(17, 17)``."""
        return self.loss.trunk.min_size

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        """Each pair's DISTS distance, ``(N,)``.

        Raises:
            TypeError: if either is not a tensor, or is neither ``uint8`` nor floating point.
            ValueError: on a bad or different shape, NaN/Inf values, float values outside [0, 1], or
                images smaller than 17x17.
        """
        preds_f, target_f = unit_float_pair(preds, target)
        if preds_f.shape[0] == 0:
            return preds_f.new_zeros(0)
        loss = self.loss
        device = loss.mean.device
        with exact_float32(device):  # the pair was validated above: the loss's own checks are skipped
            return loss.distance(preds_f.to(device), target_f.to(device))
