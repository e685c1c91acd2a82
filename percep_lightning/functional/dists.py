"""DISTS, Deep Image Structure and Texture Similarity (Ding et al., TPAMI 2020), from feature maps.

For each stage ``k`` (the image itself, then VGG16's relu1_2 ... relu5_3 with L2 pooling) and channel
``c``, with spatial means :math:`\\mu`, biased variances :math:`\\sigma^2` and covariance
:math:`\\sigma_{xy}`:

.. math::
    S_1 = \\frac{2 \\mu_x \\mu_y + c_1}{\\mu_x^2 + \\mu_y^2 + c_1}, \\quad
    S_2 = \\frac{2 \\sigma_{xy} + c_2}{\\sigma_x^2 + \\sigma_y^2 + c_2}, \\quad
    \\mathrm{DISTS} = 1 - \\sum_k \\sum_c (\\alpha_{kc} S_1 + \\beta_{kc} S_2)

with :math:`c_1 = c_2 = 10^{-6}` and the learned weights normalised so that
:math:`\\sum \\alpha + \\sum \\beta = 1` (the official ``DISTS_pytorch`` code).

Float32 accuracy. Since the weights sum to 1, the distance is the weighted sum of the dissimilarities

.. math::
    1 - S_1 = \\frac{(\\mu_x - \\mu_y)^2}{\\mu_x^2 + \\mu_y^2 + c_1}, \\quad
    1 - S_2 = \\frac{E[((x - \\mu_x) - (y - \\mu_y))^2]}{\\sigma_x^2 + \\sigma_y^2 + c_2},

which is how it is computed here: each term is small where the images are close, so no digits are lost
in ``1 - sum`` (the reference's float32 value of a distance of 0.001 keeps only about four digits), and
the spread of the difference replaces ``E[xy] - mu_x mu_y``, so none are lost to cancellation either.

Everything is computed in float32 (float64 for float64 maps) with autocast disabled. When only the
first maps require grad (a loss: the target is a constant), each stage is one autograd node whose
backward is written out (two passes over the map instead of the dozen element-wise steps of the
formula's autograd graph).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["DISTS_C1", "DISTS_C2", "dists_distance", "dists_stage_dissimilarity"]

DISTS_C1 = 1e-6
"""The structure (mean) term's constant."""
DISTS_C2 = 1e-6
"""The texture (variance) term's constant."""


def dists_distance(
    preds_features: Sequence[Tensor],
    target_features: Sequence[Tensor],
    alpha: Sequence[Tensor],
    beta: Sequence[Tensor],
    *,
    c1: float = DISTS_C1,
    c2: float = DISTS_C2,
    disposable_target: bool = False,
) -> Tensor:
    """The DISTS distance of image pairs given their stage maps and the normalised weights.

    Computed as :math:`\\sum_k \\sum_c \\alpha_{kc} (1 - S_1) + \\beta_{kc} (1 - S_2)`, which equals the
    reference's :math:`1 - \\sum (\\alpha S_1 + \\beta S_2)` for weights that sum to 1, as DISTS' do.

    Args:
        preds_features: one ``(N, C_k, H_k, W_k)`` map per stage for the first images (for DISTS: the
            image in [0, 1], then relu1_2 ... relu5_3 of
            :class:`~percep_lightning.backbones.l2pool_vgg.L2PoolVGG16`).
        target_features: the same stages for the second images (same shapes).
        alpha: the structure weights of each stage, ``C_k`` values (any shape).
        beta: the texture weights of each stage, ``C_k`` values; with ``alpha``, summing to 1.
        c1: the structure constant.
        c2: the texture constant.
        disposable_target: the caller has no further use for ``target_features`` (maps made for this
            call): they may be centred in place instead of copied.

    Returns:
        ``(N,)``: one distance per pair; float32 (float64 for float64 maps).

    Raises:
        ValueError: if the four sequences differ in length or are empty, a pair of maps differs in shape
            or is not 4-D, or a weight does not match its stage's channels.

    Example:
        >>> x = [torch.rand(2, 3, 8, 8), torch.rand(2, 4, 4, 4)]
        >>> w = [torch.full((3,), 1 / 14), torch.full((4,), 1 / 14)]
        >>> dists_distance(x, x, w, w)
        tensor([0., 0.])
        >>> dists_distance(x, [torch.rand_like(f) for f in x], w, w).shape
        torch.Size([2])
    """
    counts = (len(preds_features), len(target_features), len(alpha), len(beta))
    if len(set(counts)) != 1 or not preds_features:
        raise ValueError(
            "Expected as many `preds_features`, `target_features`, `alpha` and `beta` (at least one), but "
            f"got {', '.join(map(str, counts))}."
        )
    total: Tensor | None = None
    for x, y, a, b in zip(preds_features, target_features, alpha, beta, strict=True):
        stage = dists_stage_dissimilarity(x, y, a, b, c1=c1, c2=c2, disposable_target=disposable_target)
        total = stage if total is None else total + stage
    return total


def dists_stage_dissimilarity(
    preds: Tensor,
    target: Tensor,
    alpha: Tensor,
    beta: Tensor,
    *,
    c1: float = DISTS_C1,
    c2: float = DISTS_C2,
    disposable_target: bool = False,
) -> Tensor:
    """One stage's weighted dissimilarity, :math:`\\sum_c \\alpha_c (1 - S_1) + \\beta_c (1 - S_2)`, per image.

    Gradients flow to ``preds`` through a written-out backward; when ``target`` requires grad as well,
    the formula runs with ordinary autograd instead, so both get theirs.

    Args:
        preds: ``(N, C, H, W)`` maps.
        target: ``(N, C, H, W)`` maps.
        alpha: ``C`` structure weights.
        beta: ``C`` texture weights.
        c1: the structure constant.
        c2: the texture constant.
        disposable_target: ``target`` may be centred in place (see :func:`dists_distance`).

    Returns:
        ``(N,)``, float32 (float64 if a map is float64).

    Raises:
        ValueError: on maps of different shapes or not 4-D, or weights of the wrong size.

    Example:
        >>> x = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)  # mean 2, variance 1
        >>> y = torch.tensor([3.0, 1.0]).view(1, 1, 1, 2)  # mean 2, variance 1, covariance -1
        >>> dists_stage_dissimilarity(x, y, torch.ones(1), torch.ones(1), c1=0.0, c2=0.0)  # 0 + 4 / 2
        tensor([2.])
    """
    if preds.shape != target.shape or preds.ndim != 4:
        raise ValueError(
            "Expected 4-D feature maps of the same shape, but got "
            f"{tuple(preds.shape)} and {tuple(target.shape)}."
        )
    channels = preds.shape[1]
    if alpha.numel() != channels or beta.numel() != channels:
        raise ValueError(
            f"Expected one `alpha` and one `beta` weight per channel ({channels}), but got "
            f"{alpha.numel()} and {beta.numel()}."
        )
    dtype = torch.promote_types(torch.promote_types(preds.dtype, target.dtype), torch.float32)
    with torch.autocast(preds.device.type, enabled=False):
        x, y = preds.to(dtype), target.to(dtype)
        a, b = alpha.to(x.device, dtype).reshape(-1), beta.to(x.device, dtype).reshape(-1)
        if y.requires_grad and torch.is_grad_enabled():
            return _graph(x, y, a, b, c1, c2)
        disposable = y is not target or (disposable_target and not target.requires_grad)  # a copy is ours
        return _Dissimilarity.apply(x, y.detach(), a, b, c1, c2, disposable)


def _graph(x: Tensor, y: Tensor, alpha: Tensor, beta: Tensor, c1: float, c2: float) -> Tensor:
    """The stage's dissimilarity with ordinary autograd (used when ``target`` requires grad too)."""
    mean_x, mean_y = x.mean((2, 3)), y.mean((2, 3))
    centred_x, centred_y = x - mean_x[..., None, None], y - mean_y[..., None, None]
    var_x, var_y = centred_x.square().mean((2, 3)), centred_y.square().mean((2, 3))
    spread = (centred_x - centred_y).square().mean((2, 3))
    structure = (mean_x - mean_y).square() / (mean_x.square() + mean_y.square() + c1)
    texture = spread / (var_x + var_y + c2)
    return (structure * alpha + texture * beta).sum(1)


class _Dissimilarity(torch.autograd.Function):
    """A stage's dissimilarity with a written-out backward to ``x`` (``y`` is a constant).

    With ``u = 1 - S1``, ``t = 1 - S2``, ``d = (x - mu_x) - (y - mu_y)`` and ``A = H W``, the gradient of
    ``alpha u + beta t`` is ``2 alpha ((mu_x - mu_y) - u mu_x) / (A den1) + 2 beta (d - t (x - mu_x)) / (A den2)``:
    ``d`` is saved from the forward, so that no difference of nearly equal products is formed.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        y: Tensor,
        alpha: Tensor,
        beta: Tensor,
        c1: float,
        c2: float,
        disposable: bool,
    ) -> Tensor:
        mean_x, mean_y = x.mean((2, 3)), y.mean((2, 3))
        centred_y = y.sub_(mean_y[..., None, None]) if disposable else y - mean_y[..., None, None]
        spread = x - mean_x[..., None, None]  # centred x, then the centred difference
        var_x = spread.square().mean((2, 3))
        var_y = centred_y.square().mean((2, 3))
        spread.sub_(centred_y)
        den1 = mean_x.square() + mean_y.square() + c1
        den2 = var_x + var_y + c2
        structure = (mean_x - mean_y).square() / den1
        texture = spread.square().mean((2, 3)) / den2
        if ctx.needs_input_grad[0]:
            area = x.shape[2] * x.shape[3]
            coef_d = beta * (2 / area) / den2
            coef_x = -coef_d * texture
            constant = alpha * (2 / area) * ((mean_x - mean_y) - structure * mean_x) / den1 - coef_x * mean_x
            ctx.save_for_backward(x, spread, coef_d, coef_x, constant)
        return (structure * alpha + texture * beta).sum(1)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, spread, coef_d, coef_x, constant = ctx.saved_tensors  # type: ignore[attr-defined]
        g = grad[:, None]
        grad_x = torch.addcmul((constant * g)[..., None, None], x, (coef_x * g)[..., None, None])
        grad_x.addcmul_(spread, (coef_d * g)[..., None, None])
        return grad_x, None, None, None, None, None, None
