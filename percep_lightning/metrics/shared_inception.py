"""One FID-Inception forward feeding several metrics through their public precomputed-input updates.

FID, Inception Score (and any metric on the same network's pool3 features or unbiased logits) each run
the Inception on their own when given images. When they score the same images, :class:`SharedInception`
runs the network once and hands the outputs to each metric's public ``update_features`` (pool3
consumers) or ``update_logits`` (logits consumers).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torchmetrics import Metric

from percep_lightning.backbones.inception import FIDInceptionV3, InceptionFeatures
from percep_lightning.functional.inputs import Quantize
from percep_lightning.metrics import feeding
from percep_lightning.metrics._images import check_quantize, inception_forward
from percep_lightning.metrics.feeding import Outputs

__all__ = ["SharedInception"]


class SharedInception:
    """Run the FID Inception once per batch and feed every consumer metric.

    A consumer is any metric with a public ``update_features(features, real)`` (fed the ``(N, 2048)``
    pool3 features, e.g. :class:`~percep_lightning.metrics.FrechetInceptionDistance`) or
    ``update_logits(logits, indices=None)`` (fed the ``(N, 1008)`` unbiased logits of generated images,
    e.g. :class:`~percep_lightning.metrics.InceptionScore`).

    Args:
        backbone: the frozen :class:`~percep_lightning.backbones.FIDInceptionV3` the consumers were built
            with (their ``backbone``).
        quantize: how float images become ``uint8`` (``"round"`` or ``"truncate"``, as the metrics).

    Raises:
        TypeError: if ``backbone`` is not an ``FIDInceptionV3``.
        ValueError: for an unknown ``quantize``.

    Example:
        >>> import torch
        >>> from percep_lightning.metrics import FrechetInceptionDistance, InceptionScore, SharedInception
        >>> fid = FrechetInceptionDistance(weights=None)
        >>> inception_score = InceptionScore(backbone=fid.backbone, splits=2)
        >>> shared = SharedInception(fid.backbone)
        >>> fake = torch.rand(4, 3, 64, 64)
        >>> outputs = shared.update(fake, real=False, metrics=[fid, inception_score])  # also returns the features
        >>> _ = shared.update(torch.rand(4, 3, 64, 64), real=True, metrics=[fid])
        >>> int(fid.real_num_samples), int(fid.fake_num_samples)
        (4, 4)
    """

    def __init__(self, backbone: FIDInceptionV3, *, quantize: Quantize = "round") -> None:
        if not isinstance(backbone, FIDInceptionV3):
            raise TypeError(
                f"Expected `backbone` to be an FIDInceptionV3, but got {type(backbone).__name__}."
            )
        check_quantize(quantize)
        self.backbone = backbone
        self.quantize = quantize

    def forward(self, images: Tensor, name: str = "images") -> InceptionFeatures:
        """Validate and quantise ``images``, then run the Inception once (plain float32, no autograd).

        Args:
            images: ``(N, 3 or 1, H, W)``, ``uint8`` in [0, 255] or float in [0, 1].
            name: the argument name used in error messages.

        Returns:
            The pool3 features ``(N, 2048)`` and unbiased logits ``(N, 1008)``.
        """
        return inception_forward(self.backbone, images, name, self.quantize)

    @staticmethod
    def feed(
        features: InceptionFeatures, *, real: bool, metrics: Sequence[Metric], indices: Tensor | None = None
    ) -> None:
        """Hand one forward's outputs to each consumer's public update.

        Args:
            features: the output of :meth:`forward`.
            real: whether the images are real (reference) images; logits consumers take generated ones only.
            metrics: the consumers.
            indices: optional ``(N,)`` dataset positions for logits consumers.

        Raises:
            TypeError: for a metric with neither ``update_features`` nor ``update_logits``.
            ValueError: when real images are given to a logits consumer.
        """
        for metric in metrics:
            if not (hasattr(metric, "update_features") or hasattr(metric, "update_logits")):
                raise TypeError(
                    f"Expected every metric in `metrics` to have `update_features` or `update_logits`, but "
                    f"{type(metric).__name__} has neither."
                )
        outputs = Outputs(features.pool3, features.logits_unbiased)
        feeding.feed(metrics, outputs, real=real, indices=indices)

    def update(
        self,
        images: Tensor,
        *,
        real: bool,
        metrics: Sequence[Metric],
        indices: Tensor | None = None,
        name: str = "images",
    ) -> InceptionFeatures:
        """One forward of ``images``, fed to every metric in ``metrics`` (see :meth:`feed`).

        Returns:
            The Inception outputs, for callers that need them too.
        """
        features = self.forward(images, name)
        self.feed(features, real=real, metrics=metrics, indices=indices)
        return features
