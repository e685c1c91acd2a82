"""The base of the distribution metrics that need every image's features (KID, CMMD, PRDC): an extractor held
frozen, and the real and generated ``(N, D)`` features kept per image, gathered across processes in dataset
order."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.extractor import FeatureExtractor, as_extractor
from percep_lightning.functional.inputs import Quantize, check_bool
from percep_lightning.metrics._images import check_quantize, extract
from percep_lightning.metrics.frechet import check_indices, concatenated

__all__ = ["FeatureSetMetric"]


class _Features(NamedTuple):
    """Precomputed features travelling through the wrapped ``update`` (see ``update_features``)."""

    values: Tensor


class FeatureSetMetric(HoldsFrozen, Metric):
    """A metric on the whole feature sets of real and generated images, on any feature extractor.

    Subclasses implement :meth:`compute` from :meth:`ordered_features`. The state is the list of features
    (``D`` float32 per image) of each side, concatenated across processes. For a result independent of the
    number of processes pass each image's position in its dataset as ``indices``: the gathered rows are put
    back in that order first (without them, rows are in the order processes and batches delivered them).

    Args:
        extractor: the feature network: a :class:`~percep_lightning.backbones.FeatureExtractor`, or any
            ``nn.Module`` mapping ``(N, 3, H, W)`` float images in [0, 1] to ``(N, D)``.
        quantize: how float images become ``uint8`` for an extractor that reads ``uint8``: ``"round"`` or
            ``"truncate"``.
        reset_real_features: if ``False``, :meth:`reset` keeps the real features, so a fixed reference set
            is processed once.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: for an unknown ``quantize``.
        TypeError: for an ``extractor`` that is not an ``nn.Module`` or extractor, or a non-bool
            ``reset_real_features``.
    """

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
        quantize: Quantize = "round",
        reset_real_features: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_bool(reset_real_features, "reset_real_features")
        check_quantize(quantize)
        extractor = as_extractor(extractor)
        self._hold("extractor", extractor)  # type: ignore[arg-type]
        self.num_features = int(extractor.num_features)
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
        """Add precomputed features (the extractor's forward already done, e.g. shared with other metrics).

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

    def ordered_features(self, real: bool) -> Tensor:
        """The features of one side, ``(N, D)`` float32, in dataset order when ``indices`` were given.

        Call it inside ``sync_context()`` for the features of every process.

        Args:
            real: ``True`` for the reference images, ``False`` for the generated ones.

        Raises:
            ValueError: if ``indices`` were given for only some images of that side.
        """
        side = "real" if real else "fake"
        features = concatenated(getattr(self, f"{side}_features")).reshape(-1, self.num_features)
        indices = concatenated(getattr(self, f"{side}_indices")).reshape(-1)
        if indices.numel() == 0:
            return features
        if indices.numel() != features.shape[0]:
            which = "real" if real else "generated"
            raise ValueError(
                f"Expected `indices` for every {which} image or for none, but got {indices.numel()} indices "
                f"for {features.shape[0]} images."
            )
        return features[torch.argsort(indices.to(features.device), stable=True)]

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
