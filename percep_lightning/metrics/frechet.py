"""Fréchet distance between the features of two image sets, on any feature extractor, as a torchmetrics
``Metric`` with streaming float64 statistics (and FID-infinity)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn
from torchmetrics.utilities.data import dim_zero_cat

from percep_lightning.backbones.extractor import FeatureExtractor, as_extractor
from percep_lightning.functional.fid import (
    feature_statistics,
    feature_sums,
    fid_infinity_from_statistics,
    frechet_distance,
)
from percep_lightning.functional.inputs import check_bool, check_int
from percep_lightning.metrics._images import Float64Sums, Quantize, check_quantize, extract

__all__ = ["FrechetDistance", "concatenated", "check_indices"]


class FrechetDistance(Float64Sums, Metric):
    r"""Fréchet distance between the features of real and generated images, on any feature extractor.

    .. math::
        \mathrm{FD} = \lVert \mu_r - \mu_f \rVert^2 + \operatorname{tr}\Sigma_r + \operatorname{tr}\Sigma_f
            - 2 \operatorname{tr}\big((\Sigma_r \Sigma_f)^{1/2}\big)

    with :math:`(\mu, \Sigma)` the mean and unbiased covariance of the ``(N, D)`` features of
    ``extractor`` (float64 sums, see :func:`~percep_lightning.functional.frechet_distance`). On the FID
    Inception this is FID (:class:`~percep_lightning.metrics.FrechetInceptionDistance`); on another network
    it is that network's Fréchet distance (FD-DINOv2, ...).

    The state is streaming: float64 sums of features and of their outer products plus a count per side,
    reduced with ``sum`` across processes, so memory does not grow with the number of images. The
    extractor is held outside the module tree: it never enters ``state_dict()`` or checkpoints, stays in
    float32 under ``.half()``, and moves with ``.to(device)``.

    Real statistics computed once can be fixed with :meth:`set_real_statistics` (e.g. loaded from a
    pytorch-fid ``.npz`` file); then only generated images need updating.

    Args:
        extractor: the feature network: a :class:`~percep_lightning.backbones.FeatureExtractor`, or any
            ``nn.Module`` mapping ``(N, 3, H, W)`` float images in [0, 1] to ``(N, D)`` (wrapped with
            :func:`~percep_lightning.backbones.as_extractor`; ``D`` from its ``num_features`` or one probe).
        quantize: how float images become ``uint8`` for an extractor that reads ``uint8``: ``"round"``
            (``floor(255 x + 0.5)``, as when saving a PNG) or ``"truncate"`` (``(255 x).byte()``,
            torchmetrics' ``normalize=True``).
        reset_real_features: if ``False``, :meth:`reset` keeps the real-image sums, so a fixed reference set
            is processed once.
        infinity: if ``True``, :meth:`compute` returns the distance extrapolated to infinitely many generated
            images (FID-infinity, Chong & Forsyth 2020): the generated features are kept per image
            (``D`` float32 each, gathered across processes) and the value is fitted from random subsets of
            ``infinity_min_samples`` to all of them; see
            :func:`~percep_lightning.functional.fid.fid_infinity_from_statistics`. Pass ``indices`` to the
            updates for a value independent of the number of processes.
        infinity_num_points: the number of subset sizes of the fit (the reference uses 15), at least 2.
        infinity_min_samples: the smallest subset (the reference uses 5000), at least 2; :meth:`compute`
            needs more generated images than this. ``None`` takes dgm-eval's rule,
            ``min(5000, max(N // 10, 2))`` for ``N`` generated images.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Raises:
        ValueError: for an unknown ``quantize``, or ``infinity_*`` options below 2.
        TypeError: for an ``extractor`` that is not an ``nn.Module`` or extractor, or ``reset_real_features``
            or ``infinity`` that is not a bool.

    Shape:
        - ``images``: ``(N, 3, H, W)`` or ``(N, 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        - Output: ``()``, float64.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from percep_lightning.metrics import FrechetDistance
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> fd = FrechetDistance(net)
        >>> fd.num_features
        8
        >>> fd.update(torch.rand(16, 3, 32, 32), real=True)
        >>> fd.update(torch.rand(16, 3, 32, 32) * 0.5, real=False)
        >>> bool(fd.compute() > 0)
        True
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0
    _frozen_keep_float32 = True
    _label = "FD"

    real_features_sum: Tensor
    real_outer_sum: Tensor
    real_num_samples: Tensor
    fake_features_sum: Tensor
    fake_outer_sum: Tensor
    fake_num_samples: Tensor

    def __init__(
        self,
        extractor: FeatureExtractor | nn.Module,
        *,
        quantize: Quantize = "round",
        reset_real_features: bool = True,
        infinity: bool = False,
        infinity_num_points: int = 15,
        infinity_min_samples: int | None = 5000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_quantize(quantize)
        check_bool(infinity, "infinity")
        check_int(infinity_num_points, "infinity_num_points", minimum=2)
        if infinity_min_samples is not None:
            check_int(infinity_min_samples, "infinity_min_samples", minimum=2)
        check_bool(reset_real_features, "reset_real_features")
        extractor = as_extractor(extractor)
        self._hold("extractor", extractor)  # type: ignore[arg-type]
        self.num_features = int(extractor.num_features)
        self.infinity = infinity
        self.infinity_num_points = infinity_num_points
        self.infinity_min_samples = infinity_min_samples
        self.quantize = quantize
        self.reset_real_features = reset_real_features
        self._fixed_real: tuple[Tensor, Tensor, int | None] | None = None

        dim = self.num_features
        for side in ("real", "fake"):
            self.add_float64_sum(f"{side}_features_sum", (dim,))
            self.add_float64_sum(f"{side}_outer_sum", (dim, dim))
            self.add_state(f"{side}_num_samples", torch.zeros((), dtype=torch.long), "sum")
        if infinity:
            self.add_state("fake_features", [], dist_reduce_fx="cat")
            self.add_state("fake_indices", [], dist_reduce_fx="cat")

    @property
    def extractor(self) -> FeatureExtractor:
        """The frozen feature extractor (shareable with other metrics on the same features)."""
        return self._held("extractor")  # type: ignore[return-value]

    def update(
        self, images: Tensor, real: bool, indices: Tensor | None = None, *, precomputed: bool = False
    ) -> None:
        """Add a batch of real or generated images (or their precomputed features).

        Args:
            images: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1]; with
                ``precomputed=True``, ``(N, D)`` features of the same extractor.
            real: ``True`` for reference images, ``False`` for generated ones.
            indices: optional ``(N,)`` dataset positions, used only with ``infinity=True`` (see there).
            precomputed: whether ``images`` are features (the extractor's forward already done).

        Raises:
            TypeError: for a wrong dtype or a non-bool ``real``.
            ValueError: for a wrong shape, NaN/Inf, or float values outside [0, 1].
            RuntimeError: when adding real images while real statistics are fixed.
        """
        check_bool(real, "real")
        features = images if precomputed else extract(self.extractor, images, "images", self.quantize)
        self._add_features(features, real, indices)

    def update_features(self, features: Tensor, real: bool, indices: Tensor | None = None) -> None:
        """Add precomputed features (the extractor's forward already done, e.g. shared with other metrics).

        The same as ``update(features, real, precomputed=True)``.

        Args:
            features: ``(N, D)`` features of :attr:`extractor`.
            real: ``True`` for reference images, ``False`` for generated ones.
            indices: optional ``(N,)`` dataset positions, used only with ``infinity=True``.

        Raises:
            RuntimeError: when adding real features while real statistics are fixed.
        """
        self.update(features, real, indices, precomputed=True)

    def _add_features(self, features: Tensor, real: bool, indices: Tensor | None = None) -> None:
        if not isinstance(features, Tensor) or not features.is_floating_point():
            raise TypeError("Expected `features` to be a floating-point tensor.")
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"Expected `features` to have shape (N, {self.num_features}), but got {tuple(features.shape)}."
            )
        if real and self._fixed_real is not None:
            raise RuntimeError(
                "Real statistics were fixed with `set_real_statistics`; call `clear_real_statistics()` before "
                "adding real images."
            )
        if features.shape[0] == 0:  # an empty batch still joins the gathers of the kept generated features
            if self.infinity and not real:
                self._keep_fake_features(features, indices)
            return
        total, outer, n = feature_sums(features.to(self.real_features_sum.device))
        side = "real" if real else "fake"
        setattr(self, f"{side}_features_sum", getattr(self, f"{side}_features_sum") + total)
        setattr(self, f"{side}_outer_sum", getattr(self, f"{side}_outer_sum") + outer)
        setattr(self, f"{side}_num_samples", getattr(self, f"{side}_num_samples") + n)
        if self.infinity and not real:
            self._keep_fake_features(features, indices)

    def _keep_fake_features(self, features: Tensor, indices: Tensor | None) -> None:
        if indices is not None:
            check_indices(indices, features.shape[0])
            self.fake_indices.append(indices.detach().to(self.device, torch.long))
        self.fake_features.append(features.detach().to(self.device, torch.float32))

    def _ordered_fake_features(self) -> Tensor:
        features = concatenated(self.fake_features).reshape(-1, self.num_features)
        indices = concatenated(self.fake_indices).reshape(-1)
        if indices.numel() == 0:
            return features
        if indices.numel() != features.shape[0]:
            raise ValueError(
                f"Expected `indices` for every generated image or for none, but got {indices.numel()} indices "
                f"for {features.shape[0]} images."
            )
        return features[torch.argsort(indices.to(features.device), stable=True)]

    def compute(self) -> Tensor:
        """The distance (extrapolated with ``infinity=True``) between the real statistics and the generated images.

        Raises:
            ValueError: if either side has fewer than 2 images (with ``infinity=True``: if there are not
                more than ``infinity_min_samples`` generated images).

        Warns:
            UserWarning: once per call (on rank zero) when a side has fewer images than feature dimensions.
        """
        if self.infinity:
            with _quiet_rank_warning():
                mu_real, sigma_real, _ = self._statistics("real")
            fake = self._ordered_fake_features()
            min_samples = self.infinity_min_samples
            if min_samples is None:
                min_samples = min(5000, max(fake.shape[0] // 10, 2))
            return fid_infinity_from_statistics(
                mu_real, sigma_real, fake, num_points=self.infinity_num_points, min_samples=min_samples
            )
        with _quiet_rank_warning():
            mu_real, sigma_real, n_real = self._statistics("real")
            mu_fake, sigma_fake, n_fake = self._statistics("fake")
        dim = self.num_features
        if min(n_fake, dim if n_real is None else n_real) < dim:
            rank_zero_warn(
                f"{self._label} statistics from {n_real} real and {n_fake} generated samples of {dim}-d features: "
                f"a covariance is rank-deficient (fewer images than dimensions) and the {self._label} value is "
                f"unreliable; use at least {dim} images per side.",
                UserWarning,
            )
        return frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake)

    def real_statistics(self) -> tuple[Tensor, Tensor, int]:
        """The real-image ``(mu, sigma, num_samples)``, synchronised across processes like :meth:`compute`.

        Call it on every process: it gathers the states, unless the metric was built with
        ``sync_on_compute=False`` (then synchronise it yourself, e.g. inside ``with metric.sync_context():``).
        Returns the fixed statistics when set.

        Raises:
            ValueError: if fewer than 2 real images were added.
        """
        if self._fixed_real is not None:
            return self._fixed_on_device()
        # With `sync_on_compute=False` (e.g. inside a caller's own `sync_context()`) neither sync nor unsync here.
        should_sync = self.sync_on_compute
        with (
            self.sync_context(
                dist_sync_fn=self.dist_sync_fn, should_sync=should_sync, should_unsync=should_sync
            ),
            _quiet_rank_warning(),
        ):
            return self._statistics("real")

    def set_real_statistics(self, mu: Tensor, sigma: Tensor, num_samples: int | None) -> None:
        """Fix the real-image statistics (e.g. cached, or loaded with :func:`~percep_lightning.metrics.load_stats`).

        Until :meth:`clear_real_statistics`, :meth:`compute` uses them and real updates are refused. Call it
        before the generated images of an evaluation are added: a value already returned by :meth:`compute`
        stays cached until the next update or :meth:`reset`.

        Args:
            mu: ``(D,)`` mean.
            sigma: ``(D, D)`` covariance.
            num_samples: the number of images they were computed from (``>= 2``), or ``None`` when unknown
                (a pytorch-fid ``.npz`` does not record it; no rank warning is then given for the real side).

        Raises:
            ValueError: on wrong shapes, NaN/Inf, or ``num_samples < 2``.
        """
        dim = self.num_features
        if tuple(mu.shape) != (dim,) or tuple(sigma.shape) != (dim, dim):
            raise ValueError(
                f"Expected `mu` of shape ({dim},) and `sigma` of shape ({dim}, {dim}), "
                f"but got {tuple(mu.shape)} and {tuple(sigma.shape)}."
            )
        if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(sigma).all())):
            raise ValueError("Expected `mu` and `sigma` to be finite, but they contain NaN or Inf values.")
        if num_samples is not None and int(num_samples) < 2:
            raise ValueError(f"Expected `num_samples` to be >= 2, but got {num_samples}.")
        device = self.real_features_sum.device
        self._fixed_real = (
            mu.detach().to(device, torch.float64),
            sigma.detach().to(device, torch.float64),
            None if num_samples is None else int(num_samples),
        )

    def _fixed_on_device(self) -> tuple[Tensor, Tensor, int]:
        """The fixed real statistics, moved to the device of the states (the metric may have moved since)."""
        mu, sigma, n = self._fixed_real  # type: ignore[misc]
        device = self.real_features_sum.device
        if mu.device != device:
            mu, sigma = mu.to(device), sigma.to(device)
            self._fixed_real = (mu, sigma, n)
        return mu, sigma, n

    def clear_real_statistics(self) -> None:
        """Forget statistics fixed with :meth:`set_real_statistics` (real images are needed again)."""
        self._fixed_real = None

    @property
    def has_fixed_real_statistics(self) -> bool:
        """Whether :meth:`set_real_statistics` is in effect."""
        return self._fixed_real is not None

    def reset(self) -> None:
        """Reset the sums (keeping the real ones when ``reset_real_features=False``); fixed statistics stay."""
        if self.reset_real_features:
            super().reset()
            return
        kept = {
            name: getattr(self, name).clone()
            for name in ("real_features_sum", "real_outer_sum", "real_num_samples")
        }
        super().reset()
        for name, value in kept.items():
            setattr(self, name, value)

    def _statistics(self, side: str) -> tuple[Tensor, Tensor, int]:
        if side == "real" and self._fixed_real is not None:
            return self._fixed_on_device()
        n = int(getattr(self, f"{side}_num_samples"))
        if n < 2:
            which = "real (reference)" if side == "real" else "generated"
            raise ValueError(
                f"{self._label} needs at least 2 {which} images to estimate a covariance, but got {n}; add more images "
                f"with `update(images, real={side == 'real'})`."
            )
        mu, sigma = feature_statistics(
            getattr(self, f"{side}_features_sum"), getattr(self, f"{side}_outer_sum"), n
        )
        return mu, sigma, n


@contextlib.contextmanager
def _quiet_rank_warning() -> Iterator[None]:
    """Silence the per-side rank-deficiency warning of ``feature_statistics``: :meth:`compute` gives one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FID statistics from", category=UserWarning)
        yield


def check_indices(indices: object, count: int) -> None:
    """Raise unless ``indices`` is an integer tensor of shape ``(count,)``."""
    if not isinstance(indices, Tensor) or indices.is_floating_point() or indices.dtype == torch.bool:
        raise TypeError("Expected `indices` to be an integer tensor.")
    if tuple(indices.shape) != (count,):
        raise ValueError(f"Expected `indices` to have shape ({count},), but got {tuple(indices.shape)}.")


def concatenated(state: list[Tensor] | Tensor) -> Tensor:
    """A list state as one tensor (after a distributed sync it already is one)."""
    if isinstance(state, Tensor):
        return state
    if not state:
        return torch.empty(0)
    return dim_zero_cat(state)
