"""CFSD (Content Feature Structural Distance, StyleID) as a torchmetrics ``Metric``: a sum and a count."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from percep_lightning.backbones.torchvision_trunks import TorchvisionFeatures
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional._images import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize
from percep_lightning.functional.cfsd import DEFAULT_CHUNK_SIZE, cfsd, warn_random_backbone
from percep_lightning.functional.inputs import check_int
from percep_lightning.metrics._images import exact_float32, to_float
from percep_lightning.metrics.paired import PerImageMean

LAYER = "relu3_1"


class CFSD(PerImageMean):
    r"""Content Feature Structural Distance between stylized images and their content images (StyleID).

    .. math::
        \mathrm{CFSD} = \frac{1}{N} \sum_{n=1}^{N} \sum_{i=1}^{hw} \mathrm{KL}\big(P^{(n)}_i \,\Vert\, Q^{(n)}_i\big)

    where, for pair :math:`n`, :math:`P_i` and :math:`Q_i` are the row-wise softmaxes of the patch
    similarity matrices :math:`F F^\top` of the content and the stylized image, :math:`F` being the
    ``(h w, c)`` VGG19 relu3_1 features of the ImageNet-normalised image divided by ``c``. This follows
    StyleID's evaluation code exactly (``evaluation/image_metrics.py``), including the sum over all rows;
    see :func:`percep_lightning.functional.cfsd.cfsd`, which computes it ``chunk_size`` rows at a time so
    memory stays bounded at 512x512 and above.

    The state is a float64 sum of the per-pair values and a pair count, both reduced with ``sum`` across
    processes. Images are used at their native resolution (no resize); pairs must match in size, batches
    may differ.

    Args:
        weights: the VGG19 weights: ``"default"`` (torchvision's ``vgg19-dcbb9e9d.pth``), a path to a file
            in that format, a state dict, or ``None`` (random, for tests: CFSD is then ~1e-9 for any images,
            with a warning). Ignored when ``backbone`` is given.
        chunk_size: rows of the similarity matrices computed at once (memory ``O(chunk_size * h * w)``).
        backbone: an existing ``TorchvisionFeatures("vgg19", [..., "relu3_1", ...])`` to share.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        TypeError: if ``chunk_size`` is not an integer.
        ValueError: if ``chunk_size < 1``, or ``backbone`` lacks VGG19 relu3_1.

    Shape:
        - ``preds``, ``content``: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
        - Output: ``()``, float64.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import CFSD
        >>> metric = CFSD(weights=None)
        >>> content = torch.rand(2, 3, 32, 32)
        >>> metric.update(content, content)
        >>> metric.compute()
        tensor(0., dtype=torch.float64)
    """

    higher_is_better = False
    plot_lower_bound = 0.0
    _frozen_keep_float32 = True
    _second = "content"

    def __init__(
        self,
        weights: WeightsArg = "default",
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        backbone: TorchvisionFeatures | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_int(chunk_size, "chunk_size", minimum=1)
        if backbone is None:
            backbone = TorchvisionFeatures("vgg19", [LAYER], weights=weights)
            if weights is None:
                warn_random_backbone()
        elif not (
            isinstance(backbone, TorchvisionFeatures)
            and backbone.arch == "vgg19"
            and LAYER in backbone.layer_names
        ):
            raise ValueError(f"Expected `backbone` to be a TorchvisionFeatures of vgg19 returning {LAYER!r}.")
        self._hold("vgg", backbone)
        self.chunk_size = chunk_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def backbone(self) -> TorchvisionFeatures:
        """The frozen VGG19 trunk."""
        return self._held("vgg")  # type: ignore[return-value]

    def per_image(self, preds: Tensor, content: Tensor) -> Tensor:
        """Each (stylized, content) pair's CFSD, ``(N,)`` float32 (``update`` adds them up in float64).

        Args:
            preds: the stylized images, ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
            content: the content images, same shape.

        Raises:
            TypeError: for a wrong dtype.
            ValueError: for different or wrong shapes, images smaller than 4x4 (relu3_1 follows two 2x2
                poolings), NaN/Inf, or float values outside [0, 1].
        """
        preds_f = to_float(preds, "preds")
        content_f = to_float(content, "content")
        if preds_f.shape != content_f.shape:
            raise ValueError(
                f"Expected `preds` and `content` to have the same shape, but got {tuple(preds.shape)} and "
                f"{tuple(content.shape)}."
            )
        if preds_f.shape[0] == 0:
            return preds_f.new_zeros(0)
        backbone = self.backbone
        backbone.check_size(preds_f, ("preds", "content"))
        device = self.mean.device
        with exact_float32(device):
            pair = torch.cat([preds_f, content_f]).to(device)
            pixels = imagenet_normalize(pair, (0.0, 1.0), self.mean, self.std, torch.float32)
            features = backbone(pixels)[LAYER].float()
            n = preds_f.shape[0]
            return cfsd(features[:n], features[n:], chunk_size=self.chunk_size, reduction="none")
