"""Kernel Inception Distance: :class:`~percep_lightning.metrics.KernelDistance` on the FID Inception."""

from __future__ import annotations

from typing import Any

from percep_lightning.backbones.inception import FIDInceptionV3, ResizeMode
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.inputs import Quantize
from percep_lightning.metrics._images import resolve_inception
from percep_lightning.metrics.kernel import KernelDistance

__all__ = ["KernelInceptionDistance"]


class KernelInceptionDistance(KernelDistance):
    r"""Kernel Inception Distance between real and generated images (Binkowski et al. 2018).

    :class:`~percep_lightning.metrics.KernelDistance` on the 2048-d pool3 features of the TensorFlow FID
    Inception network, with the kernel :math:`k(x, y) = (x^T y / 2048 + 1)^3`. Images reach the network as
    for :class:`~percep_lightning.metrics.FrechetInceptionDistance` (``uint8`` pixels, the ``resize`` mode's
    reference pipeline). With the same weights file and seed the value equals torch-fidelity's ``kid``.

    Args:
        weights: the Inception weights (``"default"``, a path, a state dict or ``None``); ignored when
            ``backbone`` is given.
        subsets, subset_size, degree, gamma, coef0, seed, quantize, reset_real_features: as
            :class:`~percep_lightning.metrics.KernelDistance` (torch-fidelity: 100 subsets of 1000, degree 3,
            ``gamma = 1 / 2048``, ``coef0 = 1``, seed 2020).
        resize: ``"tensorflow"`` (torch-fidelity), ``"pytorch_fid"``, ``"clean"`` or ``"bilinear"``
            (see :class:`~percep_lightning.backbones.FIDInceptionV3`).
        backbone: an existing :class:`~percep_lightning.backbones.FIDInceptionV3` to share.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: for non-positive ``subsets`` / ``subset_size`` / ``degree``, an unknown ``resize`` or
            ``quantize``.
        TypeError: for options of the wrong type or a ``backbone`` that is not an ``FIDInceptionV3``.

    Shape:
        - ``images``: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        - Output: ``(mean, std)``, two ``()`` float64 tensors.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import KernelInceptionDistance
        >>> kid = KernelInceptionDistance(weights=None, subsets=10, subset_size=4)
        >>> kid.update(torch.rand(4, 3, 64, 64), real=True)
        >>> kid.update(torch.rand(4, 3, 64, 64), real=False)
        >>> mean, std = kid.compute()
        >>> mean.dtype
        torch.float64
    """

    def __init__(
        self,
        weights: WeightsArg = "default",
        *,
        subsets: int = 100,
        subset_size: int = 1000,
        degree: int = 3,
        gamma: float | None = None,
        coef0: float = 1.0,
        seed: int = 2020,
        resize: ResizeMode = "tensorflow",
        quantize: Quantize = "round",
        reset_real_features: bool = True,
        backbone: FIDInceptionV3 | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            resolve_inception(backbone, weights, resize),
            subsets=subsets,
            subset_size=subset_size,
            degree=degree,
            gamma=gamma,
            coef0=coef0,
            seed=seed,
            quantize=quantize,
            reset_real_features=reset_real_features,
            **kwargs,
        )

    @property
    def backbone(self) -> FIDInceptionV3:
        """The frozen Inception network (shareable with FID and IS)."""
        return self.extractor  # type: ignore[return-value]

    @property
    def resize(self) -> str:
        """The backbone's resize mode."""
        return self.backbone.resize
