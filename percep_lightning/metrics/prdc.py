"""Precision, recall, density and coverage of generated images against real ones, in a feature space (by
default DINOv2 ViT-L/14, as dgm-eval), as a torchmetrics ``Metric``."""

from __future__ import annotations

from typing import Any

from torch import nn

from percep_lightning.backbones.extractor import FeatureExtractor
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.inputs import Quantize, check_int
from percep_lightning.functional.prdc import PRDC as PRDCValues
from percep_lightning.functional.prdc import prdc
from percep_lightning.metrics.feature_set import FeatureSetMetric

__all__ = ["PRDC"]


class PRDC(FeatureSetMetric):
    r"""Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

    Every sample gets a ball reaching its ``k``-th nearest neighbour in its own set. Then, with real and
    generated (fake) features:

    * **precision**: the share of generated samples inside some real ball (fidelity);
    * **recall**: the share of real samples inside some generated ball (diversity);
    * **density**: the number of real balls holding a generated sample, averaged over the generated samples
      and divided by ``k`` (fidelity that counts how deep inside the real manifold they are);
    * **coverage**: the share of real samples whose ball holds their nearest generated sample.

    The values equal the ``prdc`` package's ``compute_prdc(real_features, fake_features, nearest_k=k)``
    (strict comparisons; see :func:`~percep_lightning.functional.prdc`). ``k=5`` is the ``prdc`` / dgm-eval
    default; Kynkäänniemi et al. use ``k=3``. Real images are the ones updated with ``real=True``, so the
    two sides cannot be swapped by argument order.

    Every image's features are kept (``D`` float32 per image), gathered across processes; pass ``indices``
    for values independent of the number of processes.

    Args:
        extractor: the feature network; ``None`` builds :class:`~percep_lightning.backbones.DINOv2`
            (ViT-L/14, dgm-eval's preprocessing) with ``weights``. Any
            :class:`~percep_lightning.backbones.FeatureExtractor` or ``nn.Module`` mapping images to
            ``(N, D)`` is accepted.
        weights: the DINOv2 weights when ``extractor`` is ``None``.
        k: the neighbour that sets each ball's radius.
        quantize, reset_real_features: as :class:`~percep_lightning.metrics.KernelDistance`.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        TypeError: for a ``k`` that is not an integer, or a bad ``extractor``.
        ValueError: for ``k < 1`` or an unknown ``quantize``.

    Shape:
        - ``images``: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        - Output: a :class:`~percep_lightning.functional.prdc.PRDC` named tuple of four ``()`` float64 tensors.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from percep_lightning.metrics import PRDC
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> metric = PRDC(net, k=3)
        >>> metric.update(torch.rand(20, 3, 32, 32), real=True)
        >>> metric.update(torch.rand(20, 3, 32, 32), real=False)
        >>> values = metric.compute()
        >>> values._fields
        ('precision', 'recall', 'density', 'coverage')
    """

    higher_is_better = True
    plot_lower_bound = 0.0

    def __init__(
        self,
        extractor: FeatureExtractor | nn.Module | None = None,
        *,
        weights: WeightsArg = "default",
        k: int = 5,
        quantize: Quantize = "round",
        reset_real_features: bool = True,
        **kwargs: Any,
    ) -> None:
        check_int(k, "k", minimum=1)
        if extractor is None:
            from percep_lightning.backbones.dinov2 import DINOv2

            extractor = DINOv2("vitl14", weights)
        super().__init__(extractor, quantize=quantize, reset_real_features=reset_real_features, **kwargs)
        self.k = int(k)

    def compute(self) -> PRDCValues:
        """Precision, recall, density and coverage of the generated images.

        Raises:
            ValueError: if a side has ``k`` images or fewer, or ``indices`` were given for only some images.
        """
        return prdc(self.ordered_features(real=True), self.ordered_features(real=False), k=self.k)
