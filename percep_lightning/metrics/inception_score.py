"""Inception Score as a torchmetrics ``Metric`` (torch-fidelity's conventions)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.inception import FIDInceptionV3, ResizeMode
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.inception_score import inception_score
from percep_lightning.functional.inputs import Quantize, check_bool, check_int
from percep_lightning.metrics._images import check_quantize, inception_forward, resolve_inception
from percep_lightning.metrics.frechet import check_indices, concatenated

NUM_CLASSES = 1008


class InceptionScore(HoldsFrozen, Metric):
    r"""Inception Score of generated images (Salimans et al. 2016), as torch-fidelity computes it.

    .. math::
        \mathrm{IS}_k = \exp\Big(\frac{1}{|S_k|} \sum_{x \in S_k}
            \mathrm{KL}\big(p(y \mid x) \,\Vert\, \bar p_k(y)\big)\Big)

    on the 1008-way logits without the fc bias of the TensorFlow FID Inception network; the images are
    shuffled with ``numpy.random.RandomState(seed)``, cut into ``splits`` groups, and the result is the mean
    and population standard deviation of :math:`\mathrm{IS}_k` over the groups. Given the same weights file
    the value equals torch-fidelity's ``isc``.

    The splits need every image's logits, so the state is the list of logits (``1008`` float32 per image),
    concatenated across processes. For a result independent of the number of processes pass each image's
    position in the dataset as ``indices``: :meth:`compute` puts the gathered rows back in that order before
    shuffling (the :class:`~percep_lightning.callbacks.ImageMetricsCallback` does this).

    Args:
        weights: the Inception weights (``"default"``, a path, a state dict or ``None``); ignored when
            ``backbone`` is given.
        splits: the number of groups (torch-fidelity: 10).
        shuffle: shuffle the images before splitting (torch-fidelity: ``True``).
        seed: seed of the shuffle (torch-fidelity: 2020).
        resize: ``"tensorflow"`` (torch-fidelity), ``"pytorch_fid"``, ``"clean"`` or ``"bilinear"``
            (see :class:`~percep_lightning.backbones.FIDInceptionV3`).
        quantize: how float images become ``uint8``: ``"round"`` or ``"truncate"``
            (see :class:`~percep_lightning.metrics.FrechetInceptionDistance`).
        backbone: an existing :class:`~percep_lightning.backbones.FIDInceptionV3` to share.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: for ``splits < 1``, an unknown ``resize`` or ``quantize``.
        TypeError: for a non-integer ``splits`` or ``seed``, or a ``backbone`` of the wrong type.

    Shape:
        - ``images``: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        - Output: ``(mean, std)``, two ``()`` float64 tensors.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import InceptionScore
        >>> metric = InceptionScore(weights=None, splits=2)
        >>> metric.update(torch.rand(4, 3, 64, 64))
        >>> mean, std = metric.compute()
        >>> bool(mean >= 1)
        True
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 1.0
    _frozen_keep_float32 = True

    logits: list[Tensor]
    indices: list[Tensor]

    def __init__(
        self,
        weights: WeightsArg = "default",
        *,
        splits: int = 10,
        shuffle: bool = True,
        seed: int = 2020,
        resize: ResizeMode = "tensorflow",
        quantize: Quantize = "round",
        backbone: FIDInceptionV3 | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_int(splits, "splits", minimum=1)
        check_int(seed, "seed")
        check_bool(shuffle, "shuffle")
        check_quantize(quantize)
        self._hold("inception", resolve_inception(backbone, weights, resize))
        self.splits = int(splits)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.quantize = quantize
        self.add_state("logits", [], dist_reduce_fx="cat")
        self.add_state("indices", [], dist_reduce_fx="cat")

    @property
    def backbone(self) -> FIDInceptionV3:
        """The frozen Inception network (shareable with other metrics)."""
        return self._held("inception")  # type: ignore[return-value]

    @property
    def extractor(self) -> FIDInceptionV3:
        """The same network as :attr:`backbone` (metrics sharing it share one forward)."""
        return self.backbone

    def update(self, images: Tensor, indices: Tensor | None = None, *, precomputed: bool = False) -> None:
        """Add a batch of generated images (or their precomputed unbiased logits).

        Args:
            images: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1]; with
                ``precomputed=True``, ``(N, 1008)`` ``logits_unbiased`` of the same Inception.
            indices: optional ``(N,)`` integer positions of the images in the dataset (see the class notes);
                give them for every batch or for none.
            precomputed: whether ``images`` are logits (the Inception forward already done).

        Raises:
            TypeError, ValueError: for a wrong dtype, shape or range, NaN/Inf, or badly shaped ``indices``.
        """
        if precomputed:
            logits = images
        else:
            logits = inception_forward(self.backbone, images, "images", self.quantize).logits_unbiased
        self._add_logits(logits, indices)

    def update_logits(self, logits: Tensor, indices: Tensor | None = None) -> None:
        """Add precomputed unbiased logits (the Inception forward already done, e.g. shared with FID).

        The same as ``update(logits, indices, precomputed=True)``; see
        :class:`~percep_lightning.metrics.SharedInception` for one forward feeding several metrics.

        Args:
            logits: ``(N, 1008)`` ``logits_unbiased`` of :class:`~percep_lightning.backbones.FIDInceptionV3`.
            indices: optional ``(N,)`` integer dataset positions; give them for every batch or for none.
        """
        self.update(logits, indices, precomputed=True)

    def _add_logits(self, logits: Tensor, indices: Tensor | None) -> None:
        if not isinstance(logits, Tensor) or not logits.is_floating_point():
            raise TypeError("Expected `logits` to be a floating-point tensor.")
        if logits.ndim != 2 or logits.shape[1] != NUM_CLASSES:
            raise ValueError(
                f"Expected `logits` to have shape (N, {NUM_CLASSES}), but got {tuple(logits.shape)}."
            )
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("Expected `logits` to be finite, but they contain NaN or Inf values.")
        if indices is not None:
            check_indices(indices, logits.shape[0])
            self.indices.append(indices.detach().to(self.device, torch.long))
        self.logits.append(logits.detach().to(self.device, torch.float32))

    def compute(self) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` of the Inception Score over the splits.

        Raises:
            ValueError: if fewer images than ``splits`` were added, or ``indices`` were given for only some.
        """
        logits = concatenated(self.logits).reshape(-1, NUM_CLASSES)
        n = logits.shape[0]
        if n < self.splits:
            raise ValueError(
                f"Inception Score with splits={self.splits} needs at least {self.splits} images (one per split), "
                f"but got {n}; add images or lower `splits`."
            )
        indices = concatenated(self.indices).reshape(-1)
        if indices.numel() > 0:
            if indices.numel() != n:
                raise ValueError(
                    f"Expected `indices` for every image or for none, but got {indices.numel()} indices for {n} images."
                )
            logits = logits[torch.argsort(indices.to(logits.device), stable=True)]
        return inception_score(logits, splits=self.splits, shuffle=self.shuffle, seed=self.seed)
