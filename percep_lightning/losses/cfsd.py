"""CFSD (StyleID's content feature structural distance) as a training loss for style transfer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.torchvision_trunks import MemoryFormatArg, TorchvisionFeatures
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional._checks import (
    Reduction,
    check_input_range,
    check_loss_inputs,
    check_reduction,
)
from percep_lightning.functional._images import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize
from percep_lightning.functional.cfsd import DEFAULT_CHUNK_SIZE, cfsd, warn_random_backbone
from percep_lightning.functional.inputs import check_int

__all__ = ["CFSDLoss"]

CFSD_LAYER = "relu3_1"
"""VGG19 ``features[11]``, the layer StyleID's reference code uses (it calls it "conv3")."""


class CFSDLoss(HoldsFrozen, nn.Module):
    """Content Feature Structural Distance between stylized images and their content images.

    The images are ImageNet-normalised at their native resolution (no resize), passed through a frozen
    torchvision VGG19 up to relu3_1 (``features[11]``), and compared with
    :func:`~percep_lightning.functional.cfsd.cfsd`: the KL divergence between the row-wise softmax of
    the content's patch-similarity matrix and that of the stylized image, summed over all rows, as
    StyleID's ``PatchSimi`` (jiwoogit/StyleID, ``evaluation/image_metrics.py``). Memory stays
    ``O(chunk_size * h * w)`` per image in the forward and the backward.

    The content image goes through the network under ``torch.no_grad()`` (a constant: it builds no graph
    even if it requires grad). The network runs in its own dtype (float32) even under autocast: CFSD is
    second order in the feature differences, and bfloat16 features change it by up to 100% between
    near-identical images.

    Args:
        input_range: the ``(low, high)`` pixel range of the inputs, mapped to [0, 1] first.
        weights: the torchvision VGG19 ``state_dict``: ``"default"`` (IMAGENET1K_V1, cached or downloaded
            once), a file path, a state dict, or ``None`` (random, with a warning: CFSD is then ~1e-9 for
            any images and shows no trend).
        chunk_size: rows of the ``(hw, hw)`` similarity matrices computed at once.
        reduction: ``"mean"`` over the image pairs (StyleID's dataset value), ``"sum"``, or ``"none"``
            (``(N,)``).
        memory_format: the trunk's layout: ``"auto"`` (the device's rule, see
            :func:`~percep_lightning.backbones.preferred_memory_format`), ``"measure"``,
            ``"channels_last"`` or ``"contiguous"``.

    Raises:
        TypeError: if ``chunk_size`` is not an integer.
        ValueError: for a bad ``input_range``, ``chunk_size``, ``reduction`` or ``memory_format``; in the
            forward, images smaller than 4x4 (relu3_1 comes after two 2x2 poolings).
        RuntimeError: if ``weights`` does not hold the official VGG19 keys and shapes.

    Shape:
        - preds (stylized), target (content): ``(N, 3, H, W)`` or ``(N, 1, H, W)`` (repeated to RGB).
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; float32 (float64 for a float64 module).

    Example:
        >>> import torch
        >>> from percep_lightning.losses.cfsd import CFSDLoss
        >>> loss = CFSDLoss(weights=None, reduction="none")
        >>> content = torch.rand(2, 3, 32, 32)
        >>> loss(content, content).abs().max() < 1e-5
        tensor(True)
        >>> loss(content.flip(-1), content).shape
        torch.Size([2])
    """

    def __init__(
        self,
        *,
        input_range: Sequence[float] = (0.0, 1.0),
        weights: WeightsArg = "default",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        reduction: Reduction = "mean",
        memory_format: MemoryFormatArg = "auto",
    ) -> None:
        super().__init__()
        check_int(chunk_size, "chunk_size", minimum=1)
        check_reduction(reduction)
        self.input_range = check_input_range(input_range)
        self.chunk_size = chunk_size
        self.reduction = reduction
        self._hold(
            "vgg", TorchvisionFeatures("vgg19", [CFSD_LAYER], weights=weights, memory_format=memory_format)
        )
        if weights is None:
            warn_random_backbone()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        """CFSD of the stylized ``preds`` with respect to the content images ``target``."""
        check_loss_inputs(preds, target, self.input_range, owner=self)
        trunk: TorchvisionFeatures = self._held("vgg")  # type: ignore[assignment]
        trunk.check_size(preds, ("preds", "target"))
        # float32 even under autocast: CFSD is second order in the feature differences, and bfloat16
        # features (0.4% error) change it by up to 100% between near-identical images.
        with torch.autocast(preds.device.type, enabled=False):
            with torch.no_grad():
                content = self._features(target, trunk)
            stylized = self._features(preds, trunk)
        return cfsd(stylized, content, chunk_size=self.chunk_size, reduction=self.reduction)

    def _features(self, images: Tensor, trunk: TorchvisionFeatures) -> Tensor:
        dtype = trunk.layers[0].weight.dtype
        return trunk(imagenet_normalize(images, self.input_range, self.mean, self.std, dtype))[CFSD_LAYER]

    def extra_repr(self) -> str:
        return f"input_range={self.input_range}, chunk_size={self.chunk_size}, reduction={self.reduction!r}"
