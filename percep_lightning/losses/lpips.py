"""LPIPS as a training loss: the ``lpips`` package's v0.1 metric on a frozen torchvision trunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.lpips_weights import lpips_linear_weights
from percep_lightning.backbones.torchvision_trunks import MemoryFormatArg, TorchvisionFeatures
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional._checks import (
    Reduction,
    check_choice,
    check_input_range,
    check_loss_inputs,
    check_reduction,
    reduce,
)
from percep_lightning.functional._images import imagenet_normalize
from percep_lightning.functional.lpips import lpips_distance

__all__ = ["LPIPS_NETS", "LPIPSLoss"]

LPIPS_NETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "alex": ("alexnet", ("relu1", "relu2", "relu3", "relu4", "relu5")),
    "vgg": ("vgg16", ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")),
    "squeeze": ("squeezenet1_1", ("relu1", "fire3", "fire5", "fire6", "fire7", "fire8", "fire9")),
}
"""LPIPS ``net`` -> (torchvision architecture, the outputs of the ``lpips`` package's slices)."""

# lpips' ScalingLayer, applied to [-1, 1] input (ImageNet mean/std expressed on that scale).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPSLoss(HoldsFrozen, nn.Module):
    """Learned Perceptual Image Patch Similarity (Zhang et al. 2018) as a differentiable loss.

    Equal to ``lpips.LPIPS(net=net, version="0.1")(preds, target, normalize=True)`` for [0, 1] input
    (up to float rounding): the images are mapped to [-1, 1], shifted and scaled by LPIPS' scaling
    layer, passed through the frozen trunk (AlexNet, VGG16 or SqueezeNet 1.1, cut at the package's
    slices), and each layer's unit-normalised feature difference is squared, weighted by the calibrated
    v0.1 "lin" weights that ship with this package, averaged over space (or upsampled to the image size,
    ``spatial=True``) and summed over layers. See :mod:`percep_lightning.functional.lpips`.

    The target goes through the trunk under ``torch.no_grad()`` in its own pass: it is a constant and
    builds no graph even if it requires grad. The trunk's memory layout follows the device
    (``memory_format="auto"``: channels-last on CUDA and on AVX-512 CPUs, see
    :func:`~percep_lightning.backbones.preferred_memory_format`; ``"measure"`` times both once per
    process); the values do not depend on it beyond float rounding.

    Args:
        net: ``"alex"`` (default, the package's recommended metric), ``"vgg"`` or ``"squeeze"``.
        input_range: the ``(low, high)`` pixel range of the inputs: ``(0, 1)`` (the package's
            ``normalize=True``), ``(-1, 1)`` (its default), ``(0, 255)``, ...
        spatial: return the per-pixel distance map instead of its mean.
        weights: the torchvision ``state_dict`` of the trunk: ``"default"`` (IMAGENET1K_V1, cached or
            downloaded once), a file path, a state dict, or ``None`` (random, with a warning). The lin
            weights always come from the package data.
        reduction: ``"mean"`` or ``"sum"`` over every value of the output, or ``"none"``: ``(N, 1, 1, 1)``
            per image as the ``lpips`` package (``(N, 1, H, W)`` with ``spatial=True``).
        memory_format: the trunk's layout: ``"auto"``, ``"measure"``, ``"channels_last"`` or ``"contiguous"``.

    Raises:
        ValueError: for an unknown ``net``, ``reduction`` or ``memory_format`` or a bad ``input_range``;
            in the forward, images smaller than the network needs (alex 31x31, vgg 16x16, squeeze 17x17,
            see :attr:`~percep_lightning.backbones.TorchvisionFeatures.min_size`).
        RuntimeError: if ``weights`` does not hold the official keys and shapes of the trunk.

    Shape:
        - preds, target: ``(N, 3, H, W)`` or ``(N, 1, H, W)`` (grayscale, repeated to 3 channels), at least
          the trunk's ``min_size``.
        - Output: scalar, ``(N, 1, 1, 1)`` or ``(N, 1, H, W)`` (see ``reduction``); float32 (float64 for
          a float64 module).

    Example:
        >>> import torch
        >>> from percep_lightning.losses.lpips import LPIPSLoss
        >>> loss = LPIPSLoss("alex", weights=None, reduction="none")
        >>> x = torch.rand(2, 3, 64, 64)
        >>> loss(x, x).flatten()
        tensor([0., 0.])
        >>> loss(x, x.flip(-1)).shape
        torch.Size([2, 1, 1, 1])
    """

    def __init__(
        self,
        net: Literal["alex", "vgg", "squeeze"] = "alex",
        *,
        input_range: Sequence[float] = (0.0, 1.0),
        spatial: bool = False,
        weights: WeightsArg = "default",
        reduction: Reduction = "mean",
        memory_format: MemoryFormatArg = "auto",
    ) -> None:
        super().__init__()
        check_choice(net, "net", tuple(LPIPS_NETS))
        check_reduction(reduction)
        self.net = net
        self.input_range = check_input_range(input_range)
        self.spatial = bool(spatial)
        self.reduction = reduction
        arch, layers = LPIPS_NETS[net]
        self._layers = layers
        self._hold("trunk", TorchvisionFeatures(arch, layers, weights=weights, memory_format=memory_format))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        for i, weight in enumerate(lpips_linear_weights(net)):
            self.register_buffer(f"lin{i}", weight, persistent=False)

    @property
    def lin_weights(self) -> list[Tensor]:
        """The calibrated v0.1 lin weights, one ``(1, C_l, 1, 1)`` tensor per layer."""
        return [getattr(self, f"lin{i}") for i in range(len(self._layers))]

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        """The LPIPS distance between ``preds`` and ``target``, reduced as ``reduction`` says."""
        check_loss_inputs(preds, target, self.input_range, owner=self)
        return reduce(self.distance(preds, target), self.reduction)

    def distance(self, preds: Tensor, target: Tensor) -> Tensor:
        """The unreduced distance of a pair that its caller has validated already (no value checks).

        For callers that check their inputs themselves (the streaming
        :class:`~percep_lightning.metrics.LPIPS`), so the images are not scanned twice; :meth:`forward`
        is this after the checks, then the reduction.

        Returns:
            ``(N, 1, 1, 1)``, or the ``(N, 1, H, W)`` map when ``spatial``.

        Raises:
            ValueError: for images too small for the network (the minimum size is in the message).

        Example:
            >>> import torch
            >>> from percep_lightning.losses.lpips import LPIPSLoss
            >>> loss = LPIPSLoss("alex", weights=None)
            >>> x = torch.rand(2, 3, 64, 64)
            >>> loss.distance(x, x).flatten()
            tensor([0., 0.])
        """
        trunk: TorchvisionFeatures = self._held("trunk")  # type: ignore[assignment]
        trunk.check_size(preds, ("preds", "target"))
        with torch.no_grad():
            target_features = trunk(self._scale(target, trunk))
        preds_features = trunk(self._scale(preds, trunk))
        return lpips_distance(
            [preds_features[name] for name in self._layers],
            [target_features[name] for name in self._layers],
            self.lin_weights,
            spatial=self.spatial,
            output_size=tuple(preds.shape[-2:]),
            disposable_target=True,
        )

    def _scale(self, images: Tensor, trunk: TorchvisionFeatures) -> Tensor:
        """Map ``input_range`` to [-1, 1] (as the package's ``normalize=True``), then the scaling layer."""
        dtype = trunk.layers[0].weight.dtype
        return imagenet_normalize(
            images, self.input_range, self.shift, self.scale, dtype, unit_range=(-1.0, 1.0)
        )

    def extra_repr(self) -> str:
        return (
            f"net={self.net!r}, input_range={self.input_range}, spatial={self.spatial}, "
            f"reduction={self.reduction!r}"
        )
