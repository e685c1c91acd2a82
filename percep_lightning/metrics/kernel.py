"""Kernel distance (the unbiased polynomial-kernel MMD of KID) between the features of two image sets, on any
feature extractor, as a torchmetrics ``Metric`` (torch-fidelity's conventions)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from percep_lightning.backbones.extractor import FeatureExtractor
from percep_lightning.functional.inputs import Quantize, check_int, check_real
from percep_lightning.functional.kid import kernel_inception_distance
from percep_lightning.metrics.feature_set import FeatureSetMetric

__all__ = ["KernelDistance"]


class KernelDistance(FeatureSetMetric):
    r"""Kernel distance between the features of real and generated images, on any feature extractor.

    The unbiased squared MMD between ``(N, D)`` features under the polynomial kernel
    :math:`k(x, y) = (\gamma\, x^T y + c_0)^{d}` with :math:`\gamma = 1/D` by default, averaged over random
    subsets; see :func:`~percep_lightning.functional.kernel_inception_distance`. On the FID Inception this is
    KID (:class:`~percep_lightning.metrics.KernelInceptionDistance`, equal to torch-fidelity's ``kid`` with
    the same weights and seed). KID is unbiased, so it suits the small sets of a validation epoch; when
    ``subset_size`` exceeds a set, all its samples are used (with one warning) instead of failing as
    torch-fidelity does.

    The subsets need every image's features, so the state is the list of features (``D`` float32 per
    image), concatenated across processes. For a result independent of the number of processes pass each
    image's position in its dataset as ``indices``: :meth:`compute` puts the gathered rows back in that order
    first (without them, rows are in the order processes and batches delivered them).

    Args:
        extractor: the feature network: a :class:`~percep_lightning.backbones.FeatureExtractor`, or any
            ``nn.Module`` mapping ``(N, 3, H, W)`` float images in [0, 1] to ``(N, D)``.
        subsets: the number of random subsets (torch-fidelity: 100).
        subset_size: the samples per set in a subset (torch-fidelity: 1000).
        degree: the polynomial kernel's degree.
        gamma: the kernel's scale; ``None`` means ``1 / D``.
        coef0: the kernel's constant term.
        seed: the seed of ``numpy.random.RandomState`` that draws the subsets (torch-fidelity: 2020).
        quantize: how float images become ``uint8`` for an extractor that reads ``uint8``: ``"round"`` or
            ``"truncate"``.
        reset_real_features: if ``False``, :meth:`reset` keeps the real features, so a fixed reference set
            is processed once.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: for non-positive ``subsets`` / ``subset_size`` / ``degree`` or an unknown ``quantize``.
        TypeError: for options of the wrong type or an ``extractor`` that is not an ``nn.Module`` or extractor.

    Shape:
        - ``images``: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        - Output: ``(mean, std)``, two ``()`` float64 tensors.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from percep_lightning.metrics import KernelDistance
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> kd = KernelDistance(net, subsets=10, subset_size=8)
        >>> kd.update(torch.rand(8, 3, 32, 32), real=True)
        >>> kd.update(torch.rand(8, 3, 32, 32) * 0.5, real=False)
        >>> mean, std = kd.compute()
        >>> mean.dtype
        torch.float64
    """

    higher_is_better = False

    def __init__(
        self,
        extractor: FeatureExtractor | nn.Module,
        *,
        subsets: int = 100,
        subset_size: int = 1000,
        degree: int = 3,
        gamma: float | None = None,
        coef0: float = 1.0,
        seed: int = 2020,
        quantize: Quantize = "round",
        reset_real_features: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(extractor, quantize=quantize, reset_real_features=reset_real_features, **kwargs)
        check_int(seed, "seed")
        for name, value in (("subsets", subsets), ("subset_size", subset_size), ("degree", degree)):
            check_int(value, name, minimum=1)
        if gamma is not None:
            check_real(gamma, "gamma")
        check_real(coef0, "coef0")
        self.subsets = int(subsets)
        self.subset_size = int(subset_size)
        self.degree = int(degree)
        self.gamma = None if gamma is None else float(gamma)
        self.coef0 = float(coef0)
        self.seed = int(seed)

    def compute(self) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` of the KID over the subsets.

        Raises:
            ValueError: if a side has fewer than 2 images, or ``indices`` were given for only some images.
        """
        real = self.ordered_features(real=True)
        fake = self.ordered_features(real=False)
        return kernel_inception_distance(
            real,
            fake,
            subsets=self.subsets,
            subset_size=self.subset_size,
            degree=self.degree,
            gamma=self.gamma,
            coef0=self.coef0,
            seed=self.seed,
        )
