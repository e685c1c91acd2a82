"""Kernel Inception Distance as a torchmetrics ``Metric`` (torch-fidelity's conventions)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.inception import FIDInceptionV3, ResizeMode
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.kid import kernel_inception_distance
from percep_lightning.metrics._images import Quantize, check_quantize, inception_forward, resolve_inception

FEATURE_DIM = 2048


class _Features(NamedTuple):
    """Precomputed pool3 features travelling through the wrapped ``update`` (see ``update_features``)."""

    values: Tensor


class KernelInceptionDistance(HoldsFrozen, Metric):
    r"""Kernel Inception Distance between real and generated images (Binkowski et al. 2018).

    The unbiased squared MMD between the 2048-d pool3 features of the TensorFlow FID Inception network
    under the kernel :math:`k(x, y) = (x^T y / 2048 + 1)^3`, averaged over random subsets; see
    :func:`~percep_lightning.functional.kernel_inception_distance`. Images reach the network as for
    :class:`~percep_lightning.metrics.FrechetInceptionDistance` (``uint8`` pixels, the ``resize`` mode's
    reference pipeline). With the same weights file and seed the value equals torch-fidelity's ``kid``.
    Unlike FID, KID is unbiased, so it suits the small sets of a validation epoch; when ``subset_size``
    exceeds a set, all its samples are used (with one warning) instead of failing as torch-fidelity does.

    The subsets need every image's features, so the state is the list of features (2048 float32 per image),
    concatenated across processes. For a result independent of the number of processes pass each image's
    position in its dataset as ``indices``: :meth:`compute` puts the gathered rows back in that order first
    (without them, rows are in the order processes and batches delivered them).

    Args:
        weights: the Inception weights (``"default"``, a path, a state dict or ``None``); ignored when
            ``backbone`` is given.
        subsets: the number of random subsets (torch-fidelity: 100).
        subset_size: the samples per set in a subset (torch-fidelity: 1000).
        degree: the polynomial kernel's degree.
        gamma: the kernel's scale; ``None`` means ``1 / 2048``.
        coef0: the kernel's constant term.
        seed: the seed of ``numpy.random.RandomState`` that draws the subsets (torch-fidelity: 2020).
        resize: ``"tensorflow"`` (torch-fidelity), ``"pytorch_fid"``, ``"clean"`` or ``"bilinear"``
            (see :class:`~percep_lightning.backbones.FIDInceptionV3`).
        quantize: how float images become ``uint8``: ``"round"`` or ``"truncate"``.
        reset_real_features: if ``False``, :meth:`reset` keeps the real features, so a fixed reference set
            is processed once.
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
        >>> kid = KernelInceptionDistance(weights=None, subsets=10, subset_size=4)  # doctest: +SKIP
        >>> kid.update(torch.rand(4, 3, 64, 64), real=True)  # doctest: +SKIP
        >>> kid.update(torch.rand(4, 3, 64, 64), real=False)  # doctest: +SKIP
        >>> mean, std = kid.compute()  # doctest: +SKIP
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
        super().__init__(**kwargs)
        for name, value in (
            ("subsets", subsets),
            ("subset_size", subset_size),
            ("degree", degree),
            ("seed", seed),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(
                    f"Expected `{name}` to be an integer, but got {type(value).__name__} {value!r}."
                )
        for name, value in (("subsets", subsets), ("subset_size", subset_size), ("degree", degree)):
            if value < 1:
                raise ValueError(f"Expected `{name}` to be >= 1, but got {value}.")
        if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float))):
            raise TypeError(f"Expected `gamma` to be a float or None, but got {type(gamma).__name__}.")
        if isinstance(coef0, bool) or not isinstance(coef0, (int, float)):
            raise TypeError(f"Expected `coef0` to be a float, but got {type(coef0).__name__}.")
        if not isinstance(reset_real_features, bool):
            raise TypeError(
                f"Expected `reset_real_features` to be a bool, but got {type(reset_real_features).__name__}."
            )
        check_quantize(quantize)
        self._hold("inception", resolve_inception(backbone, weights, resize))
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
    def backbone(self) -> FIDInceptionV3:
        """The frozen Inception network (shareable with FID and IS)."""
        return self._held("inception")  # type: ignore[return-value]

    @property
    def resize(self) -> str:
        """The backbone's resize mode."""
        return self.backbone.resize

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
        if not isinstance(real, bool):
            raise TypeError(f"Expected `real` to be a bool, but got {type(real).__name__} {real!r}.")
        if isinstance(images, _Features):
            features = images.values
        else:
            features = inception_forward(self.backbone, images, "images", self.quantize).pool3
        self._add(features, real, indices)

    def update_features(self, features: Tensor, real: bool, indices: Tensor | None = None) -> None:
        """Add precomputed pool3 features (the Inception forward already done, e.g. shared with FID and IS).

        Args:
            features: ``(N, 2048)`` pool3 features of :class:`~percep_lightning.backbones.FIDInceptionV3`.
            real: ``True`` for reference images, ``False`` for generated ones.
            indices: optional ``(N,)`` integer dataset positions; give them for every batch of a side or
                for none.

        Raises:
            TypeError, ValueError: for features that are not a finite ``(N, 2048)`` floating-point tensor,
                a non-bool ``real`` or bad ``indices``.
        """
        self.update(_Features(features), real, indices)  # type: ignore[arg-type]

    def _add(self, features: Tensor, real: bool, indices: Tensor | None) -> None:
        if not isinstance(features, Tensor) or not features.is_floating_point():
            raise TypeError("Expected `features` to be a floating-point tensor.")
        if features.ndim != 2 or features.shape[1] != FEATURE_DIM:
            raise ValueError(
                f"Expected `features` to have shape (N, {FEATURE_DIM}), but got {tuple(features.shape)}."
            )
        if not bool(torch.isfinite(features).all()):
            raise ValueError("Expected `features` to be finite, but they contain NaN or Inf values.")
        side = "real" if real else "fake"
        if indices is not None:
            if not isinstance(indices, Tensor) or indices.is_floating_point() or indices.dtype == torch.bool:
                raise TypeError("Expected `indices` to be an integer tensor.")
            if tuple(indices.shape) != (features.shape[0],):
                raise ValueError(
                    f"Expected `indices` to have shape ({features.shape[0]},), but got {tuple(indices.shape)}."
                )
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
        """The pool3 features of one side, ``(N, 2048)`` float32, in dataset order when ``indices`` were given.

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
        features = _concatenated(getattr(self, f"{side}_features")).reshape(-1, FEATURE_DIM)
        indices = _concatenated(getattr(self, f"{side}_indices")).reshape(-1)
        if indices.numel() == 0:
            return features
        if indices.numel() != features.shape[0]:
            which = "real" if side == "real" else "generated"
            raise ValueError(
                f"Expected `indices` for every {which} image or for none, but got {indices.numel()} indices "
                f"for {features.shape[0]} images."
            )
        return features[torch.argsort(indices.to(features.device), stable=True)]


def _concatenated(state: list[Tensor] | Tensor) -> Tensor:
    """A list state as one tensor (after a distributed sync it already is one)."""
    if isinstance(state, Tensor):
        return state
    if not state:
        return torch.empty(0)
    return dim_zero_cat(state)
