"""DISTS as a training loss: the official ``DISTS_pytorch`` score on a frozen L2-pooling VGG16."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.dists_weights import DISTS_CHANNELS, dists_alpha_beta
from percep_lightning.backbones.folded import LayoutArg
from percep_lightning.backbones.l2pool_vgg import DISTS_LAYERS, L2PoolVGG16
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional._checks import (
    Reduction,
    check_input_range,
    check_loss_inputs,
    check_reduction,
    reduce,
)
from percep_lightning.functional._images import IMAGENET_MEAN, IMAGENET_STD, to_rgb
from percep_lightning.functional.dists import dists_distance

__all__ = ["DISTSLoss"]


class DISTSLoss(HoldsFrozen, nn.Module):
    """Deep Image Structure and Texture Similarity (Ding et al., TPAMI 2020) as a differentiable loss.

    Equal to the official ``DISTS_pytorch.DISTS()(preds, target, require_grad=True)`` for [0, 1] input
    (up to float rounding; package ``dists-pytorch`` 0.1): the images are ImageNet-normalised and passed
    through torchvision's VGG16 with L2 pooling instead of max pooling
    (:class:`~percep_lightning.backbones.l2pool_vgg.L2PoolVGG16`); the image itself and relu1_2, relu2_2,
    relu3_3, relu4_3 and relu5_3 are compared by their spatial means (structure) and variances and
    covariance (texture), weighted by the learned alpha and beta that ship with this package (see
    :func:`~percep_lightning.functional.dists.dists_distance`). 0 for identical images; the learned
    weights keep it in [0, 1] in practice.

    The target goes through the trunk under ``torch.no_grad()`` in its own pass: it is a constant and
    builds no graph even if it requires grad. The statistics are computed in float32 with autocast
    disabled (safe under ``bf16-mixed``); the trunk follows autocast.

    Args:
        weights: the torchvision ``state_dict`` of VGG16: ``"default"`` (IMAGENET1K_V1,
            ``vgg16-397923af.pth``, cached or downloaded once; ``percep-lightning weights download
            vgg16`` fetches it), a file path, a state dict, or ``None`` (random, with a warning). alpha and
            beta always come from the package data.
        input_range: the ``(low, high)`` pixel range of the inputs: ``(0, 1)`` (the reference's), ``(-1, 1)``,
            ``(0, 255)``, ...; mapped to [0, 1] first.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"``: ``(N,)`` per image.
        memory_format: the trunk's layout: ``"auto"``, ``"channels_last"`` or ``"contiguous"``.

    Raises:
        ValueError: for an unknown ``reduction`` or ``memory_format`` or a bad ``input_range``; in the
            forward, images of different shapes, not 4-D, with other than 1 or 3 channels, NaN/Inf, or
            smaller than 17x17 (relu5_3 must be at least 2x2); each message names the argument.
        TypeError: in the forward, if ``preds`` or ``target`` is not a floating-point tensor.
        RuntimeError: if ``weights`` does not hold the official keys and shapes of VGG16.

    Shape:
        - preds, target: ``(N, 3, H, W)`` or ``(N, 1, H, W)`` (grayscale, repeated to 3 channels),
          at least 17x17.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; float32 (float64 for a float64 module).

    Example:
        >>> loss = DISTSLoss(weights=None, reduction="none")
        >>> x = torch.rand(2, 3, 32, 32)
        >>> loss(x, x).abs().max() < 1e-6
        tensor(True)
        >>> loss(x, x.flip(-1)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        weights: WeightsArg = "default",
        *,
        input_range: Sequence[float] = (0.0, 1.0),
        reduction: Reduction = "mean",
        memory_format: LayoutArg = "auto",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.input_range = check_input_range(input_range)
        self.reduction = reduction
        self._hold("trunk", L2PoolVGG16(weights, memory_format=memory_format))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        alpha, beta = dists_alpha_beta()
        for i, (a, b) in enumerate(zip(alpha, beta, strict=True)):
            self.register_buffer(f"alpha{i}", a, persistent=False)
            self.register_buffer(f"beta{i}", b, persistent=False)

    @property
    def alpha(self) -> list[Tensor]:
        """The normalised structure weights, one ``(C_k,)`` tensor per stage (image, relu1_2 ... relu5_3)."""
        return [getattr(self, f"alpha{i}") for i in range(len(DISTS_CHANNELS))]

    @property
    def beta(self) -> list[Tensor]:
        """The normalised texture weights, one ``(C_k,)`` tensor per stage."""
        return [getattr(self, f"beta{i}") for i in range(len(DISTS_CHANNELS))]

    @property
    def trunk(self) -> L2PoolVGG16:
        """The frozen VGG16 with L2 pooling (held outside the module tree)."""
        return self._held("trunk")  # type: ignore[return-value]

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        """The DISTS distance between ``preds`` and ``target``, reduced as ``reduction`` says."""
        check_loss_inputs(preds, target, self.input_range, owner=self)
        return reduce(self.distance(preds, target), self.reduction)

    def distance(self, preds: Tensor, target: Tensor) -> Tensor:
        """The per-image distance of a pair that its caller has validated already (no value checks).

        For callers that check their inputs themselves (the streaming :class:`~percep_lightning.metrics.DISTS`),
        so the images are not scanned twice; :meth:`forward` is this after the checks, then the reduction.

        Returns:
            ``(N,)``.

        Raises:
            ValueError: for images smaller than 17x17 (the message names both arguments).

        Example:
            >>> loss = DISTSLoss(weights=None)
            >>> x = torch.rand(2, 3, 32, 32)
            >>> loss.distance(x, x).abs().max() < 1e-6
            tensor(True)
        """
        trunk = self.trunk
        trunk.check_size(preds, ("preds", "target"))
        dtype = trunk.layers[0].weight.dtype
        with torch.no_grad():
            target_unit = self._unit(target, dtype)
            if target_unit.untyped_storage().data_ptr() == target.untyped_storage().data_ptr():
                target_unit = target_unit.clone(
                    memory_format=torch.contiguous_format
                )  # centred in place below
            target_maps = trunk((target_unit - self.mean) / self.std)
        preds_unit = self._unit(preds, dtype)
        preds_maps = trunk((preds_unit - self.mean) / self.std)
        return dists_distance(
            [preds_unit, *(preds_maps[name] for name in DISTS_LAYERS)],
            [target_unit, *(target_maps[name] for name in DISTS_LAYERS)],
            self.alpha,
            self.beta,
            disposable_target=True,
        )

    def _unit(self, images: Tensor, dtype: torch.dtype) -> Tensor:
        """The images in [0, 1], RGB, in the trunk's dtype (``images`` itself when nothing changes).

        The normalisation that follows is the reference's ``(x - mean) / std``, not one folded
        multiply-add: DISTS' gradient is ill-conditioned where an L2-pooled window is nearly all zero
        (the slope of ``sqrt(w x^2 + 1e-12)`` goes from 0 to 1/2 as ``x`` goes from 0 to 1e-5), so a
        one-ulp change of the network input moves the float32 gradient by up to 1e-2 relative.
        """
        low, high = self.input_range
        images = to_rgb(images if images.dtype == dtype else images.to(dtype))
        return images if (low, high) == (0.0, 1.0) else (images - low) / (high - low)

    def extra_repr(self) -> str:
        return f"input_range={self.input_range}, reduction={self.reduction!r}"
