"""Per-pixel L1 / L2 / Charbonnier loss as an ``nn.Module``."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from percep_lightning.functional._checks import check_choice, check_positive, check_reduction
from percep_lightning.functional.pixel import PIXEL_LOSS_KINDS, pixel_loss

__all__ = ["PixelLoss"]


class PixelLoss(nn.Module):
    """Mean per-pixel distance: L1, L2 or Charbonnier (see :func:`~percep_lightning.functional.pixel.pixel_loss`).

    .. math::
        \\ell_1 = |x - y|, \\qquad \\ell_2 = (x - y)^2, \\qquad
        \\ell_\\text{charbonnier} = \\sqrt{(x - y)^2 + \\varepsilon^2}

    averaged over the channels and pixels of each image, then reduced over the batch.

    Args:
        kind: ``"l1"``, ``"l2"`` or ``"charbonnier"``.
        eps: the Charbonnier smoothing constant in pixel units (``eps=1e-6`` reproduces BasicSR's
            ``CharbonnierLoss``); ignored by the other kinds.
        reduction: ``"mean"`` or ``"sum"`` of the per-image values, or ``"none"`` for one value per image.
        validate_args: check the input tensors on every call (type, shape, finite values).

    Raises:
        ValueError: if ``kind`` or ``reduction`` is unknown or ``eps <= 0`` (at construction); on bad
            inputs, as :func:`~percep_lightning.functional.pixel.pixel_loss` (when called).

    Shape:
        - ``preds``, ``target``: ``(N, C, H, W)``
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``

    Example:
        >>> import torch
        >>> from percep_lightning.losses.pixel import PixelLoss
        >>> loss = PixelLoss("charbonnier", eps=1e-3)
        >>> target = torch.zeros(2, 3, 4, 4)
        >>> loss(target + 0.5, target)
        tensor(0.5000)
    """

    def __init__(
        self,
        kind: Literal["l1", "l2", "charbonnier"] = "l1",
        eps: float = 1e-3,
        reduction: Literal["mean", "sum", "none"] = "mean",
        *,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        check_choice(kind, "kind", PIXEL_LOSS_KINDS)
        check_positive(eps, "eps")
        check_reduction(reduction)
        self.kind = kind
        self.eps = float(eps)
        self.reduction = reduction
        self.validate_args = validate_args

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        """Compute the loss of ``preds`` against ``target``."""
        return pixel_loss(
            preds,
            target,
            kind=self.kind,
            eps=self.eps,
            reduction=self.reduction,
            validate_args=self.validate_args,
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, eps={self.eps}, reduction={self.reduction!r}"
