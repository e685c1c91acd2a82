"""Fréchet Inception Distance: :class:`~percep_lightning.metrics.FrechetDistance` on the FID Inception."""

from __future__ import annotations

from typing import Any

from percep_lightning.backbones.inception import FIDInceptionV3, ResizeMode
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.inputs import Quantize
from percep_lightning.metrics._images import resolve_inception
from percep_lightning.metrics.frechet import FrechetDistance

__all__ = ["FrechetInceptionDistance"]


class FrechetInceptionDistance(FrechetDistance):
    r"""Fréchet Inception Distance between real and generated images (Heusel et al. 2017).

    :class:`~percep_lightning.metrics.FrechetDistance` on the 2048-d pool3 features of the TensorFlow FID
    Inception network. The defaults follow torch-fidelity: ``uint8`` pixels (float input is quantised, see
    ``quantize``), TensorFlow-1 bilinear resize to 299x299, ``(x - 128) / 128``, float64 statistics. Given
    the same weights file the value equals torch-fidelity's and
    ``torchmetrics.image.fid.FrechetInceptionDistance(antialias=False)``.

    Args:
        weights: the Inception weights: ``"default"`` (the official
            ``pt_inception-2015-12-05-6726825d.pth``), a path to a file in that format, a state dict, or
            ``None`` (random, for tests). Ignored when ``backbone`` is given.
        resize: ``"tensorflow"`` (torch-fidelity, published FID), ``"pytorch_fid"`` (pytorch-fid), ``"clean"``
            (clean-fid) or ``"bilinear"`` (legacy); see :class:`~percep_lightning.backbones.FIDInceptionV3`.
        quantize: how float images become ``uint8``: ``"round"`` (``floor(255 x + 0.5)``, as when saving a
            PNG) or ``"truncate"`` (``(255 x).byte()``, torchmetrics' ``normalize=True``).
        reset_real_features: if ``False``, :meth:`reset` keeps the real-image sums.
        backbone: an existing :class:`~percep_lightning.backbones.FIDInceptionV3` to share (e.g. with
            :class:`~percep_lightning.metrics.InceptionScore`) instead of building one.
        infinity, infinity_num_points, infinity_min_samples: FID-infinity, as
            :class:`~percep_lightning.metrics.FrechetDistance`.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Raises:
        ValueError: for an unknown ``resize`` or ``quantize``, or ``infinity_*`` options below 2.
        TypeError: if ``backbone`` is not an ``FIDInceptionV3``, or ``reset_real_features`` or ``infinity``
            is not a bool.

    Shape:
        - ``images``: ``(N, 3, H, W)`` or ``(N, 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        - Output: ``()``, float64.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import FrechetInceptionDistance
        >>> fid = FrechetInceptionDistance(weights=None)
        >>> fid.update(torch.rand(4, 3, 64, 64), real=True)
        >>> fid.update(torch.rand(4, 3, 64, 64), real=False)
        >>> value = fid.compute()  # random weights and 4 images: a smoke test, not a comparable number
        >>> value.dtype, bool(value >= 0)
        (torch.float64, True)
    """

    _label = "FID"

    def __init__(
        self,
        weights: WeightsArg = "default",
        *,
        resize: ResizeMode = "tensorflow",
        quantize: Quantize = "round",
        reset_real_features: bool = True,
        backbone: FIDInceptionV3 | None = None,
        infinity: bool = False,
        infinity_num_points: int = 15,
        infinity_min_samples: int = 5000,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            resolve_inception(backbone, weights, resize),
            quantize=quantize,
            reset_real_features=reset_real_features,
            infinity=infinity,
            infinity_num_points=infinity_num_points,
            infinity_min_samples=infinity_min_samples,
            **kwargs,
        )

    @property
    def backbone(self) -> FIDInceptionV3:
        """The frozen Inception network (shareable with other metrics)."""
        return self.extractor  # type: ignore[return-value]

    @property
    def resize(self) -> str:
        """The backbone's resize mode (one of :data:`~percep_lightning.backbones.RESIZE_MODES`)."""
        return self.backbone.resize
