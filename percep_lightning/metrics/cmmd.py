"""CMMD (Jayasumana et al. CVPR 2024): the maximum mean discrepancy between CLIP embeddings of real and
generated images, as a torchmetrics ``Metric``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from percep_lightning.backbones.extractor import FeatureExtractor
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional.cmmd import cmmd
from percep_lightning.functional.inputs import Quantize, check_real
from percep_lightning.metrics.feature_set import FeatureSetMetric

__all__ = ["CMMD"]


class CMMD(FeatureSetMetric):
    r"""CMMD between real and generated images: the MMD of their CLIP embeddings (Jayasumana et al. 2024).

    .. math::
        \mathrm{CMMD} = s\,\big(\overline{K_{rr}} + \overline{K_{ff}} - 2\,\overline{K_{rf}}\big),\qquad
        K(a, b) = \exp\!\big(-\lVert a - b\rVert^2 / (2\sigma^2)\big)

    with every mean over all pairs, the diagonal included, :math:`\sigma = 10` and :math:`s = 1000`, on the
    L2-normalised CLIP ViT-L/14 (336 px) image embeddings; see :func:`~percep_lightning.functional.cmmd`.
    With the default extractor it equals the reference code (google-research ``cmmd``) on the same images.
    CMMD assumes no normal distribution and is stable at small sample sizes, unlike FID.

    Every image's embedding is kept (768 float32 per image), gathered across processes; pass ``indices``
    for a value independent of the number of processes (see
    :class:`~percep_lightning.metrics.feature_set.FeatureSetMetric`).

    Args:
        extractor: the embedding network; ``None`` builds
            :class:`~percep_lightning.backbones.CLIPImageEncoder` with ``weights``. Any
            :class:`~percep_lightning.backbones.FeatureExtractor` or ``nn.Module`` mapping images to
            ``(N, D)`` is accepted (then the value is the MMD in that feature space).
        weights: the CLIP weights when ``extractor`` is ``None`` (``"default"``, a path, a state dict or
            ``None`` for random weights).
        sigma: the RBF kernel's bandwidth.
        scale: the factor of the MMD.
        quantize, reset_real_features: as :class:`~percep_lightning.metrics.KernelDistance`.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        TypeError: for a ``sigma`` or ``scale`` that is not a real number, or a bad ``extractor``.
        ValueError: for a non-positive ``sigma`` or ``scale``, or an unknown ``quantize``.

    Shape:
        - ``images``: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        - Output: ``()``, float64.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from percep_lightning.metrics import CMMD
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> metric = CMMD(net)
        >>> metric.update(torch.rand(6, 3, 32, 32), real=True)
        >>> metric.update(torch.rand(6, 3, 32, 32) * 0.5, real=False)
        >>> metric.compute().dtype
        torch.float64
    """

    higher_is_better = False
    plot_lower_bound = 0.0

    def __init__(
        self,
        extractor: FeatureExtractor | nn.Module | None = None,
        *,
        weights: WeightsArg = "default",
        sigma: float = 10.0,
        scale: float = 1000.0,
        quantize: Quantize = "round",
        reset_real_features: bool = True,
        **kwargs: Any,
    ) -> None:
        sigma = check_real(sigma, "sigma", positive=True)
        scale = check_real(scale, "scale", positive=True)
        if extractor is None:
            from percep_lightning.backbones.clip import CLIPImageEncoder

            extractor = CLIPImageEncoder(weights)
        super().__init__(extractor, quantize=quantize, reset_real_features=reset_real_features, **kwargs)
        self.sigma = sigma
        self.scale = scale

    def compute(self) -> Tensor:
        """CMMD between the real and the generated embeddings.

        Raises:
            ValueError: if a side has no image, or ``indices`` were given for only some images.
        """
        real, fake = self.ordered_features(real=True), self.ordered_features(real=False)
        for features, which in ((real, "real (reference)"), (fake, "generated")):
            if features.shape[0] == 0:
                raise ValueError(f"CMMD needs at least 1 {which} image, but got none.")
        return cmmd(real, fake, sigma=self.sigma, scale=self.scale)
