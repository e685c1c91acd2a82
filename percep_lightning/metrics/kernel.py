"""Kernel distance (the unbiased polynomial-kernel MMD of KID) between the features of two image sets, on any
feature extractor, as a torchmetrics ``Metric`` (torch-fidelity's conventions)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.extractor import FeatureExtractor, as_extractor
from percep_lightning.functional.inputs import Quantize, check_bool, check_int
from percep_lightning.functional.kid import kernel_inception_distance
from percep_lightning.metrics._images import check_quantize, extract
from percep_lightning.metrics.frechet import check_indices, concatenated

__all__ = ["KernelDistance"]


class _Features(NamedTuple):
    """Precomputed features travelling through the wrapped ``update`` (see ``update_features``)."""

    values: Tensor


class KernelDistance(HoldsFrozen, Metric):
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
    is_differentiable = False
    full_state_update = False
    _frozen_keep_float32 = True

    real_features: list[Tensor]
    fake_features: list[Tensor]
    real_indices: list[Tensor]
    fake_indices: list[Tensor]

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
        super().__init__(**kwargs)
        check_int(seed, "seed")
        for name, value in (("subsets", subsets), ("subset_size", subset_size), ("degree", degree)):
            check_int(value, name, minimum=1)
        if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float))):
            raise TypeError(f"Expected `gamma` to be a float or None, but got {type(gamma).__name__}.")
        if isinstance(coef0, bool) or not isinstance(coef0, (int, float)):
            raise TypeError(f"Expected `coef0` to be a float, but got {type(coef0).__name__}.")
        check_bool(reset_real_features, "reset_real_features")
        check_quantize(quantize)
        extractor = as_extractor(extractor)
        self._hold("extractor", extractor)  # type: ignore[arg-type]
        self.num_features = int(extractor.num_features)
        self.subsets = int(subsets)
        self.subset_size = int(subset_size)
        self.degree = int(degree)
        self.gamma = None if gamma is None else float(gamma)
        self.coef0 = float(coef0)
        self.seed = int(seed)
        self.quantize = quantize
        self.reset_real_features = reset_real_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_features", [], dist_reduce_fx="cat")
            self.add_state(f"{side}_indices", [], dist_reduce_fx="cat")

    @property
    def extractor(self) -> FeatureExtractor:
        """The frozen feature extractor (shareable with other metrics on the same features)."""
        return self._held("extractor")  # type: ignore[return-value]

    def update(self, images: Tensor, real: bool, indices: Tensor | None = None) -> None:
        """Add a batch of real or generated images.

        Args:
            images: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
            real: ``True`` for reference images, ``False`` for generated ones.
            indices: optional ``(N,)`` integer positions of the images in their dataset (see the class notes).

        Raises:
            TypeError: for a wrong dtype, a non-bool ``real`` or non-integer ``indices``.
            ValueError: for a wrong shape or range, NaN/Inf, or badly shaped ``indices``.
        """
        check_bool(real, "real")
        if isinstance(images, _Features):
            features = images.values
        else:
            features = extract(self.extractor, images, "images", self.quantize)
        self._add(features, real, indices)

    def update_features(self, features: Tensor, real: bool, indices: Tensor | None = None) -> None:
        """Add precomputed features (the extractor's forward already done, e.g. shared with FID and IS).

        Args:
            features: ``(N, D)`` features of :attr:`extractor`.
            real: ``True`` for reference images, ``False`` for generated ones.
            indices: optional ``(N,)`` integer dataset positions; give them for every batch of a side or
                for none.

        Raises:
            TypeError, ValueError: for features that are not a finite ``(N, D)`` floating-point tensor,
                a non-bool ``real`` or bad ``indices``.
        """
        self.update(_Features(features), real, indices)  # type: ignore[arg-type]

    def _add(self, features: Tensor, real: bool, indices: Tensor | None) -> None:
        if not isinstance(features, Tensor) or not features.is_floating_point():
            raise TypeError("Expected `features` to be a floating-point tensor.")
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"Expected `features` to have shape (N, {self.num_features}), but got {tuple(features.shape)}."
            )
        if not bool(torch.isfinite(features).all()):
            raise ValueError("Expected `features` to be finite, but they contain NaN or Inf values.")
        side = "real" if real else "fake"
        if indices is not None:
            check_indices(indices, features.shape[0])
            getattr(self, f"{side}_indices").append(indices.detach().to(self.device, torch.long))
        getattr(self, f"{side}_features").append(features.detach().to(self.device, torch.float32))

    def compute(self) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` of the KID over the subsets.

        Raises:
            ValueError: if a side has fewer than 2 images, or ``indices`` were given for only some images.
        """
        real = self._ordered("real")
        fake = self._ordered("fake")
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

    def ordered_features(self, real: bool) -> Tensor:
        """The features of one side, ``(N, D)`` float32, in dataset order when ``indices`` were given.

        Call it inside ``sync_context()`` for the features of every process.

        Args:
            real: ``True`` for the reference images, ``False`` for the generated ones.

        Raises:
            ValueError: if ``indices`` were given for only some images of that side.
        """
        return self._ordered("real" if real else "fake")

    def reset(self) -> None:
        """Clear the features (keeping the real ones when ``reset_real_features=False``)."""
        if self.reset_real_features:
            super().reset()
            return
        kept = {name: getattr(self, name) for name in ("real_features", "real_indices")}
        kept = {name: list(value) if isinstance(value, list) else value for name, value in kept.items()}
        super().reset()
        for name, value in kept.items():
            setattr(self, name, value)

    def _ordered(self, side: str) -> Tensor:
        features = concatenated(getattr(self, f"{side}_features")).reshape(-1, self.num_features)
        indices = concatenated(getattr(self, f"{side}_indices")).reshape(-1)
        if indices.numel() == 0:
            return features
        if indices.numel() != features.shape[0]:
            which = "real" if side == "real" else "generated"
            raise ValueError(
                f"Expected `indices` for every {which} image or for none, but got {indices.numel()} indices "
                f"for {features.shape[0]} images."
            )
        return features[torch.argsort(indices.to(features.device), stable=True)]
