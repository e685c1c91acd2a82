"""Fréchet Inception Distance as a torchmetrics ``Metric`` with streaming float64 statistics."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn

from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.inception import FIDInceptionV3, ResizeMode
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.fid import feature_statistics, feature_sums, frechet_distance
from percep_lightning.metrics._images import (
    KeepFloat64States,
    Quantize,
    check_quantize,
    inception_forward,
    resolve_inception,
)

FEATURE_DIM = 2048


class FrechetInceptionDistance(KeepFloat64States, HoldsFrozen, Metric):
    r"""Fréchet Inception Distance between real and generated images (Heusel et al. 2017).

    .. math::
        \mathrm{FID} = \lVert \mu_r - \mu_f \rVert^2 + \operatorname{tr}\Sigma_r + \operatorname{tr}\Sigma_f
            - 2 \operatorname{tr}\big((\Sigma_r \Sigma_f)^{1/2}\big)

    with :math:`(\mu, \Sigma)` the mean and unbiased covariance of the 2048-d pool3 features of the
    TensorFlow FID Inception network. The defaults follow torch-fidelity: ``uint8`` pixels (float input is
    quantised, see ``quantize``), TensorFlow-1 bilinear resize to 299x299, ``(x - 128) / 128``, float64
    statistics. Given the same weights file the value equals torch-fidelity's and
    ``torchmetrics.image.fid.FrechetInceptionDistance(antialias=False)``.

    The state is streaming: float64 sums of features and of their outer products plus a count per side,
    reduced with ``sum`` across processes, so memory does not grow with the number of images. The network
    is held outside the module tree: it never enters ``state_dict()`` or checkpoints, stays in float32
    under ``.half()``, and moves with ``.to(device)``.

    Real statistics computed once can be fixed with :meth:`set_real_statistics` (e.g. loaded from a
    pytorch-fid ``.npz`` file); then only generated images need updating.

    Args:
        weights: the Inception weights: ``"default"`` (the official
            ``pt_inception-2015-12-05-6726825d.pth``), a path to a file in that format, a state dict, or
            ``None`` (random, for tests). Ignored when ``backbone`` is given.
        resize: ``"tensorflow"`` (torch-fidelity, published FID) or ``"bilinear"`` (pytorch-fid).
        quantize: how float images become ``uint8``: ``"round"`` (``floor(255 x + 0.5)``, as when saving a
            PNG) or ``"truncate"`` (``(255 x).byte()``, torchmetrics' ``normalize=True``).
        reset_real_features: if ``False``, :meth:`reset` keeps the real-image sums, so a fixed reference set
            is processed once.
        backbone: an existing :class:`~percep_lightning.backbones.FIDInceptionV3` to share (e.g. with
            :class:`~percep_lightning.metrics.InceptionScore`) instead of building one.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Raises:
        ValueError: for an unknown ``resize`` or ``quantize``.
        TypeError: if ``backbone`` is not an ``FIDInceptionV3`` or ``reset_real_features`` is not a bool.

    Shape:
        - ``images``: ``(N, 3, H, W)`` or ``(N, 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        - Output: ``()``, float64.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import FrechetInceptionDistance
        >>> fid = FrechetInceptionDistance(weights=None)  # doctest: +SKIP
        >>> fid.update(torch.rand(4, 3, 64, 64), real=True)  # doctest: +SKIP
        >>> fid.update(torch.rand(4, 3, 64, 64), real=False)  # doctest: +SKIP
        >>> fid.compute()  # doctest: +SKIP
        tensor(..., dtype=torch.float64)
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0
    _frozen_keep_float32 = True

    real_features_sum: Tensor
    real_outer_sum: Tensor
    real_num_samples: Tensor
    fake_features_sum: Tensor
    fake_outer_sum: Tensor
    fake_num_samples: Tensor

    def __init__(
        self,
        weights: WeightsArg = "default",
        *,
        resize: ResizeMode = "tensorflow",
        quantize: Quantize = "round",
        reset_real_features: bool = True,
        backbone: FIDInceptionV3 | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_quantize(quantize)
        if not isinstance(reset_real_features, bool):
            raise TypeError(
                f"Expected `reset_real_features` to be a bool, but got {type(reset_real_features).__name__}."
            )
        self._hold("inception", resolve_inception(backbone, weights, resize))
        self.quantize = quantize
        self.reset_real_features = reset_real_features
        self._fixed_real: tuple[Tensor, Tensor, int] | None = None

        for side in ("real", "fake"):
            self.add_state(f"{side}_features_sum", torch.zeros(FEATURE_DIM, dtype=torch.float64), "sum")
            self.add_state(
                f"{side}_outer_sum", torch.zeros(FEATURE_DIM, FEATURE_DIM, dtype=torch.float64), "sum"
            )
            self.add_state(f"{side}_num_samples", torch.zeros((), dtype=torch.long), "sum")

    @property
    def backbone(self) -> FIDInceptionV3:
        """The frozen Inception network (shareable with other metrics)."""
        return self._held("inception")  # type: ignore[return-value]

    @property
    def resize(self) -> str:
        """The backbone's resize mode (``"tensorflow"`` or ``"bilinear"``)."""
        return self.backbone.resize

    def update(self, images: Tensor, real: bool, *, precomputed: bool = False) -> None:
        """Add a batch of real or generated images (or their precomputed pool3 features).

        Args:
            images: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1]; with
                ``precomputed=True``, ``(N, 2048)`` pool3 features of the same Inception.
            real: ``True`` for reference images, ``False`` for generated ones.
            precomputed: whether ``images`` are pool3 features (the Inception forward already done).

        Raises:
            TypeError: for a wrong dtype or a non-bool ``real``.
            ValueError: for a wrong shape, NaN/Inf, or float values outside [0, 1].
            RuntimeError: when adding real images while real statistics are fixed.
        """
        _check_real_flag(real)
        if precomputed:
            features = images
        else:
            features = inception_forward(self.backbone, images, "images", self.quantize).pool3
        self._add_features(features, real)

    def update_features(self, features: Tensor, real: bool) -> None:
        """Add precomputed pool3 features (the Inception forward already done, e.g. shared with IS).

        The same as ``update(features, real, precomputed=True)``; see
        :class:`~percep_lightning.metrics.SharedInception` for one forward feeding several metrics.

        Args:
            features: ``(N, 2048)`` pool3 features of :class:`~percep_lightning.backbones.FIDInceptionV3`.
            real: ``True`` for reference images, ``False`` for generated ones.

        Raises:
            RuntimeError: when adding real features while real statistics are fixed.
        """
        self.update(features, real, precomputed=True)

    def _add_features(self, features: Tensor, real: bool) -> None:
        if not isinstance(features, Tensor) or not features.is_floating_point():
            raise TypeError("Expected `features` to be a floating-point tensor.")
        if features.ndim != 2 or features.shape[1] != FEATURE_DIM:
            raise ValueError(
                f"Expected `features` to have shape (N, {FEATURE_DIM}), but got {tuple(features.shape)}."
            )
        if real and self._fixed_real is not None:
            raise RuntimeError(
                "Real statistics were fixed with `set_real_statistics`; call `clear_real_statistics()` before "
                "adding real images."
            )
        if features.shape[0] == 0:
            return
        total, outer, n = feature_sums(features.to(self.real_features_sum.device))
        side = "real" if real else "fake"
        setattr(self, f"{side}_features_sum", getattr(self, f"{side}_features_sum") + total)
        setattr(self, f"{side}_outer_sum", getattr(self, f"{side}_outer_sum") + outer)
        setattr(self, f"{side}_num_samples", getattr(self, f"{side}_num_samples") + n)

    def compute(self) -> Tensor:
        """The FID between the accumulated (or fixed) real statistics and the generated images.

        Raises:
            ValueError: if either side has fewer than 2 images.

        Warns:
            UserWarning: once per call (on rank zero) when a side has fewer images than feature dimensions.
        """
        with _quiet_rank_warning():
            mu_real, sigma_real, n_real = self._statistics("real")
            mu_fake, sigma_fake, n_fake = self._statistics("fake")
        if min(n_real, n_fake) < FEATURE_DIM:
            rank_zero_warn(
                f"FID statistics from {n_real} real and {n_fake} generated samples of {FEATURE_DIM}-d features: a "
                "covariance is rank-deficient (fewer images than dimensions) and the FID value is unreliable; use "
                f"at least {FEATURE_DIM} images per side.",
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
            return self._fixed_real
        # With `sync_on_compute=False` (e.g. inside a caller's own `sync_context()`) neither sync nor unsync here.
        should_sync = self.sync_on_compute
        with (
            self.sync_context(
                dist_sync_fn=self.dist_sync_fn, should_sync=should_sync, should_unsync=should_sync
            ),
            _quiet_rank_warning(),
        ):
            return self._statistics("real")

    def set_real_statistics(self, mu: Tensor, sigma: Tensor, num_samples: int) -> None:
        """Fix the real-image statistics (e.g. cached, or loaded with :func:`~percep_lightning.metrics.load_stats`).

        Until :meth:`clear_real_statistics`, :meth:`compute` uses them and real updates are refused. Call it
        before the generated images of an evaluation are added: a value already returned by :meth:`compute`
        stays cached until the next update or :meth:`reset`.

        Args:
            mu: ``(2048,)`` mean.
            sigma: ``(2048, 2048)`` covariance.
            num_samples: the number of images they were computed from (``>= 2``).

        Raises:
            ValueError: on wrong shapes, NaN/Inf, or ``num_samples < 2``.
        """
        if tuple(mu.shape) != (FEATURE_DIM,) or tuple(sigma.shape) != (FEATURE_DIM, FEATURE_DIM):
            raise ValueError(
                f"Expected `mu` of shape ({FEATURE_DIM},) and `sigma` of shape ({FEATURE_DIM}, {FEATURE_DIM}), "
                f"but got {tuple(mu.shape)} and {tuple(sigma.shape)}."
            )
        if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(sigma).all())):
            raise ValueError("Expected `mu` and `sigma` to be finite, but they contain NaN or Inf values.")
        if int(num_samples) < 2:
            raise ValueError(f"Expected `num_samples` to be >= 2, but got {num_samples}.")
        device = self.real_features_sum.device
        self._fixed_real = (
            mu.detach().to(device, torch.float64),
            sigma.detach().to(device, torch.float64),
            int(num_samples),
        )

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

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        result = super()._apply(fn, *args, **kwargs)
        if self._fixed_real is not None:
            mu, sigma, n = self._fixed_real
            device = self.real_features_sum.device
            self._fixed_real = (mu.to(device), sigma.to(device), n)
        return result

    def _statistics(self, side: str) -> tuple[Tensor, Tensor, int]:
        if side == "real" and self._fixed_real is not None:
            return self._fixed_real
        n = int(getattr(self, f"{side}_num_samples"))
        if n < 2:
            which = "real (reference)" if side == "real" else "generated"
            raise ValueError(
                f"FID needs at least 2 {which} images to estimate a covariance, but got {n}; add more images "
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


def _check_real_flag(real: object) -> None:
    if not isinstance(real, bool):
        raise TypeError(f"Expected `real` to be a bool, but got {type(real).__name__} {real!r}.")
