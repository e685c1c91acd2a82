"""Feature-space distances of the VGG perceptual and style losses (Johnson et al. 2016, BasicSR convention).

A perceptual loss compares the feature maps of a frozen network on ``preds`` and ``target``; a style
loss compares their Gram matrices. Both are a weighted sum over layers of one of BasicSR's criteria:

* ``"l1"``: mean absolute difference (``torch.nn.L1Loss``);
* ``"l2"``: mean squared difference (``torch.nn.MSELoss``);
* ``"fro"``: Frobenius norm of the difference (``torch.norm(x - y, p="fro")``).

With ``reduction="mean"`` every value equals BasicSR's ``PerceptualLoss`` on the same features. The
per-image values of ``reduction="none"`` have shape ``(N,)``; their mean is the ``"mean"`` value for
``"l1"`` and ``"l2"``. BasicSR's ``"fro"`` takes ONE norm over the whole batch, so for ``"fro"``
``"mean"`` is that batch norm (the root of the sum of the squared per-image norms, which grows with the
batch size as BasicSR's does), not the mean of the per-image norms; ``"sum"`` adds the per-image norms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from percep_lightning.functional._checks import check_choice, check_reduction

__all__ = [
    "CRITERIA",
    "feature_distance",
    "gram_matrix",
    "layer_distance",
    "layer_distances",
    "l1_distance_then_relu",
    "perceptual_distance",
    "style_distance",
]

Criterion = Literal["l1", "l2", "fro"]
CRITERIA: tuple[str, ...] = ("l1", "l2", "fro")
"""The per-layer criteria: mean absolute, mean squared, Frobenius norm."""


def gram_matrix(features: Tensor) -> Tensor:
    """The Gram matrix of each feature map, normalised by its size.

    .. math::
        G = \\frac{F F^\\top}{c\\,h\\,w}, \\quad F \\in \\mathbb{R}^{c \\times hw}

    Computed in float32 (float64 for float64 input) with autocast disabled: in half precision the sums
    of ``h * w`` products overflow.

    Args:
        features: ``(N, C, H, W)`` feature maps.

    Returns:
        ``(N, C, C)`` Gram matrices, float32 or float64.

    Raises:
        ValueError: if ``features`` is not 4-D.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.perceptual import gram_matrix
        >>> gram_matrix(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 3, 3])
        >>> float(gram_matrix(torch.ones(1, 2, 2, 2))[0, 0, 0])
        0.5
    """
    if features.ndim != 4:
        raise ValueError(
            f"Expected `features` to be 4-D (N, C, H, W), but got shape {tuple(features.shape)}."
        )
    n, c, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        x = features.to(_compute_dtype(features))
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            flat = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view in channels-last layout
            gram = torch.bmm(flat.transpose(1, 2), flat)
        else:
            flat = x.reshape(n, c, h * w)
            gram = torch.bmm(flat, flat.transpose(1, 2))
        return gram / (c * h * w)


def feature_distance(
    preds: Tensor,
    target: Tensor,
    criterion: Criterion = "l1",
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """One layer's criterion between two batches of features (or Gram matrices).

    Args:
        preds: ``(N, ...)`` features of the predictions.
        target: the features of the targets, same shape.
        criterion: ``"l1"`` (mean absolute difference), ``"l2"`` (mean squared difference) or ``"fro"``
            (Frobenius norm of the difference).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch; see the module docstring for
            ``"fro"``, whose ``"mean"`` is BasicSR's single norm over the whole batch.

    Returns:
        A scalar, or ``(N,)`` per-image values for ``reduction="none"``, in the dtype of the inputs.

    Raises:
        ValueError: for an unknown ``criterion`` or ``reduction``, or inputs of different shapes.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.perceptual import feature_distance
        >>> x, y = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
        >>> feature_distance(x, y, "l1"), feature_distance(x, y, "fro", reduction="none")
        (tensor(1.), tensor([2., 2.]))
    """
    check_choice(criterion, "criterion", CRITERIA)
    check_reduction(reduction)
    if preds.shape != target.shape:
        raise ValueError(
            "Expected feature maps of the same shape, but got "
            f"{tuple(preds.shape)} and {tuple(target.shape)}."
        )
    return _distance(preds, target, criterion, reduction)


def _distance(preds: Tensor, target: Tensor, criterion: str, reduction: str) -> Tensor:
    """:func:`feature_distance` without the argument checks (the loss modules check once in ``__init__``)."""
    if criterion == "fro" and reduction == "mean":
        return _Distance.apply(preds, target, criterion, False)  # BasicSR: one norm over the whole batch
    per_image = _Distance.apply(preds, target, criterion, True)
    if reduction == "mean":
        return per_image.mean()
    return per_image.sum() if reduction == "sum" else per_image


class _Distance(torch.autograd.Function):
    """Mean absolute / mean squared difference or Frobenius norm per image (or over the batch).

    Autograd through ``(x - y).abs().mean()`` chains four full-size temporaries. Here the forward keeps
    one buffer, the difference (overwritten by its sign for ``"l1"``), and the backward is one product.
    Neither input is saved, so a caller may overwrite them in place afterwards (the VGG loss runs the ReLU
    after a pre-activation layer in place once its distance is taken).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, preds: Tensor, target: Tensor, criterion: str, per_image: bool
    ) -> Tensor:
        diff = preds - target
        dims = tuple(range(1, diff.ndim)) if per_image else None
        count = diff[0].numel() if per_image else diff.numel()
        if criterion == "l1":
            # (.abs().sum() rather than vector_norm(·, 1): the latter's CPU reduction loses ~1e-3 relative
            # precision on large feature maps.)
            value = (diff.abs().sum(dims) if per_image else diff.abs().sum()) / count
        elif criterion == "l2":
            value = (diff.square().sum(dims) if per_image else diff.square().sum()) / count
        else:
            value = torch.linalg.vector_norm(diff, 2, dim=dims)
        if criterion == "l1":
            diff.sign_()  # all the backward needs, in the difference's own buffer
        ctx.criterion, ctx.per_image, ctx.count = criterion, per_image, count
        ctx.save_for_backward(diff, value if criterion == "fro" else None)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        diff, value = ctx.saved_tensors  # for "l1", diff holds the sign of the difference
        if ctx.criterion == "fro":  # d|x| = x / |x|, and 0 where |x| = 0 (as torch.linalg.vector_norm)
            scale = torch.where(value > 0, grad / value, torch.zeros_like(value))
        else:
            scale = grad * (2.0 / ctx.count if ctx.criterion == "l2" else 1.0 / ctx.count)
        if ctx.per_image:
            scale = scale.view(-1, *([1] * (diff.ndim - 1)))
        grad_preds = diff * scale
        need_preds, need_target = ctx.needs_input_grad[:2]
        grad_target = -grad_preds if need_target else None
        return (grad_preds if need_preds else None), grad_target, None, None


def l1_distance_then_relu(
    preds: Tensor, target: Tensor, *, pool: nn.MaxPool2d | None = None
) -> tuple[Tensor, Tensor]:
    """Per-image mean absolute difference of two pre-activation maps, and the ReLU (and pooling) after it.

    The ``"l1"`` criterion of :func:`layer_distance` with ``reduction="none"``, for a frozen trunk that
    hands over a pre-activation, continues with its ReLU (and the max pooling ``pool`` right after it)
    and no longer needs ``target`` (as :class:`~percep_lightning.losses.VGGPerceptualLoss` does). The
    values are those of ``(preds - target).abs().mean((1, 2, 3))`` and the gradients those of that
    expression and of ``pool(torch.relu(preds))``, with less memory traffic:

    * the forward writes the difference into ``target``'s storage, one cache-sized block at a time (the
      whole map off the CPU), sums its absolute value from the cache, and leaves only its sign there,
      which is all the backward needs; no full-size temporary is allocated;
    * the ReLU (and pooling) run in the same autograd node, whose backward adds the scaled sign in place
      into the gradient it has just made for ``preds``: one full-size gradient per layer, where autograd
      would make three (the ReLU's, the distance's and their sum);
    * with ``pool``, the ReLU runs after the pooling, on a quarter of the values (max pooling commutes
      with the ReLU, values and gradients alike), and the backward scatters the pooled gradient back with
      :func:`torch.nn.functional.max_unpool2d`, the adjoint of a pooling whose windows do not overlap.

    Args:
        preds: ``(N, C, H, W)`` float32 or float64 pre-activation features. Without ``pool`` they are
            overwritten by their ReLU, so they must not be a view of another tensor (autograd cannot give
            an in-place change of a view a node with two outputs); the trunks' maps never are.
        target: the other features, same shape, dtype and layout, a constant (not requiring grad): it is
            overwritten.
        pool: the ``nn.MaxPool2d`` that follows the ReLU, if any; its windows must not overlap
            (``kernel_size <= stride`` and ``dilation=1`` in both directions, as VGG's 2x2 poolings).

    Returns:
        ``(values, activated)``: ``(N,)`` values in the dtype of ``preds``, and ``relu(preds)`` (``preds``
        itself) or ``pool(relu(preds))``.

    Raises:
        ValueError: if the maps differ in shape, dtype or layout, are not float32 or float64, ``target``
            requires grad, or the windows of ``pool`` overlap.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.perceptual import l1_distance_then_relu
        >>> x, y = torch.tensor([-1.0, 2.0]).view(1, 2, 1, 1), torch.zeros(1, 2, 1, 1)
        >>> values, activated = l1_distance_then_relu(x, y)
        >>> values, activated.flatten(), y.flatten()
        (tensor([1.5000]), tensor([0., 2.]), tensor([-1.,  1.]))
    """
    if (
        preds.shape != target.shape
        or preds.dtype != target.dtype
        or preds.dtype not in (torch.float32, torch.float64)
        or preds.stride() != target.stride()
    ):
        raise ValueError(
            "Expected float32 or float64 feature maps of one shape, dtype and layout, but got "
            f"{tuple(preds.shape)} {preds.dtype} {preds.stride()} and {tuple(target.shape)} {target.dtype} "
            f"{target.stride()}."
        )
    if target.requires_grad:
        raise ValueError("Expected a `target` that does not require grad: it is overwritten.")
    if pool is not None and _windows_overlap(pool):
        raise ValueError(
            "Expected `pool` to have windows that do not overlap (kernel_size <= stride, dilation 1), but got "
            f"{pool}."
        )
    return _L1ThenReLU.apply(preds, target, pool)


def _windows_overlap(pool: nn.MaxPool2d) -> bool:
    """Whether an input value of ``pool`` can lie in two of its windows (then unpooling is not its adjoint)."""
    k, s, d = (v if isinstance(v, tuple) else (v, v) for v in (pool.kernel_size, pool.stride, pool.dilation))
    return d != (1, 1) or k[0] > s[0] or k[1] > s[1]


_BLOCK = 1 << 19
"""Elements per block of the CPU pass of :func:`l1_distance_then_relu` (2 MiB of float32: cache-sized)."""


def _abs_sums_to_sign(preds: Tensor, target: Tensor) -> Tensor:
    """Per-image ``sum |preds - target|``; ``target`` is left holding the sign of the difference."""
    n = preds.shape[0]
    if preds.is_contiguous():
        p, t = preds.view(n, -1), target.view(n, -1)  # one row per image, in memory order
    elif preds.ndim == 4 and preds.is_contiguous(memory_format=torch.channels_last):
        p, t = preds.permute(0, 2, 3, 1).view(n, -1), target.permute(0, 2, 3, 1).view(n, -1)
    else:  # other strides: one block per image, elementwise in place
        p, t = preds, target
    m = p[0].numel()
    block = _BLOCK if preds.device.type == "cpu" and p.ndim == 2 else m
    scratch = torch.empty(min(block, m), dtype=preds.dtype, device=preds.device)
    sums = []
    for i in range(n):
        parts = []
        for k in range(0, m, block):
            diff = torch.sub(p[i, k : k + block], t[i, k : k + block], out=t[i, k : k + block])
            parts.append(torch.abs(diff, out=scratch[: diff.numel()].view_as(diff)).sum())
            diff.sign_()
        sums.append(parts[0] if len(parts) == 1 else torch.stack(parts).sum())
    return torch.stack(sums)


class _L1ThenReLU(torch.autograd.Function):
    """See :func:`l1_distance_then_relu`. Saves the sign (in ``target``), the ReLU's output and, after a
    pooling, the pooling's indices: the ReLU's gradient is a mask of its output, the pooling's a scatter."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, preds: Tensor, target: Tensor, pool: nn.MaxPool2d | None
    ) -> tuple[Tensor, Tensor]:
        sums = _abs_sums_to_sign(preds, target)
        ctx.count = preds[0].numel()
        ctx.set_materialize_grads(False)
        if pool is None:
            ctx.mark_dirty(preds)
            activated = preds.relu_()
            ctx.save_for_backward(target, activated)
        else:
            # the pooling's own arguments; the unpooling's output size is the input's (ceil mode included)
            ctx.geometry = (pool.kernel_size, pool.stride, pool.padding)
            ctx.size = preds.shape[-2:]
            pooled, indices = F.max_pool2d(
                preds, *ctx.geometry, pool.dilation, pool.ceil_mode, return_indices=True
            )
            activated = pooled.relu_()
            ctx.save_for_backward(target, activated, indices)
        return sums / ctx.count, activated

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad: Tensor | None, grad_activated: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        sign, activated, *pooling = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        scale = None if grad is None else (grad / ctx.count).view(-1, *([1] * (sign.ndim - 1)))
        if grad_activated is None:
            return (None if scale is None else sign * scale), None, None
        # the ReLU's gradient: its output is >= 0, so its sign is the ReLU's derivative (a 0/1 mask)
        grad_preds = torch.sign(activated).mul_(grad_activated)
        if pooling:
            grad_preds = F.max_unpool2d(grad_preds, pooling[0], *ctx.geometry, output_size=ctx.size)
        if scale is not None:
            grad_preds.addcmul_(sign, scale)  # the distance's gradient, in place in a tensor made here
        return grad_preds, None, None


def perceptual_distance(
    preds_features: Mapping[str, Tensor],
    target_features: Mapping[str, Tensor],
    layer_weights: Mapping[str, float],
    *,
    criterion: Criterion = "l1",
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """Weighted sum over layers of the criterion between feature maps (the perceptual term).

    .. math::
        \\mathcal{L} = \\sum_l w_l \\, \\mathrm{crit}\\big(\\phi_l(\\hat y), \\phi_l(y)\\big)

    Half-precision features (from a backbone run under autocast) are compared in float32.

    Args:
        preds_features: ``{layer: (N, C, H, W)}`` features of the predictions.
        target_features: the same layers for the targets (detach them: the target is a constant).
        layer_weights: ``{layer: weight}``; every layer named here must be in both feature dicts.
        criterion: ``"l1"``, ``"l2"`` or ``"fro"`` (see :func:`feature_distance`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-image ``(N,)`` values).

    Returns:
        A scalar, or ``(N,)`` for ``reduction="none"``.

    Raises:
        ValueError: for an unknown ``criterion`` or ``reduction``, a layer missing from the features, or
            feature maps of different shapes.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.perceptual import perceptual_distance
        >>> p = {"a": torch.zeros(1, 2, 4, 4), "b": torch.zeros(1, 4, 2, 2)}
        >>> t = {"a": torch.ones(1, 2, 4, 4), "b": torch.full((1, 4, 2, 2), 2.0)}
        >>> perceptual_distance(p, t, {"a": 0.5, "b": 1.0})
        tensor(2.5000)
    """
    return _weighted_sum(preds_features, target_features, layer_weights, criterion, reduction, gram=False)


def style_distance(
    preds_features: Mapping[str, Tensor],
    target_features: Mapping[str, Tensor],
    layer_weights: Mapping[str, float],
    *,
    criterion: Criterion = "l1",
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """Weighted sum over layers of the criterion between Gram matrices (the style term).

    .. math::
        \\mathcal{L} = \\sum_l w_l \\, \\mathrm{crit}\\big(G(\\phi_l(\\hat y)), G(\\phi_l(y))\\big)

    The Gram matrices (:func:`gram_matrix`) and the criterion are computed in float32 (float64 for
    float64 features) whatever the features' dtype.

    Args:
        preds_features: ``{layer: (N, C, H, W)}`` features of the predictions.
        target_features: the same layers for the targets (detach them: the target is a constant).
        layer_weights: ``{layer: weight}``; every layer named here must be in both feature dicts.
        criterion: ``"l1"``, ``"l2"`` or ``"fro"`` (see :func:`feature_distance`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-image ``(N,)`` values).

    Returns:
        A float32 (or float64) scalar, or ``(N,)`` for ``reduction="none"``.

    Raises:
        ValueError: for an unknown ``criterion`` or ``reduction``, a layer missing from the features, or
            feature maps of different shapes.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.perceptual import style_distance
        >>> p, t = {"a": torch.zeros(1, 2, 4, 4)}, {"a": torch.ones(1, 2, 4, 4)}
        >>> style_distance(p, t, {"a": 1.0}, criterion="l2")  # every Gram entry: 0 vs 16 / (2 * 16)
        tensor(0.2500)
    """
    return _weighted_sum(preds_features, target_features, layer_weights, criterion, reduction, gram=True)


def layer_distances(
    preds_features: Mapping[str, Tensor],
    target_features: Mapping[str, Tensor],
    layers: Iterable[str],
    *,
    criterion: Criterion = "l1",
    reduction: Literal["mean", "sum", "none"] = "mean",
    gram: bool = False,
) -> dict[str, Tensor]:
    """The unweighted criterion of each layer, between features (or their Gram matrices, ``gram=True``).

    The terms of :func:`perceptual_distance` (``gram=False``) and :func:`style_distance` (``gram=True``)
    before weighting; half-precision features are compared in float32.

    Returns:
        ``{layer: value}`` in the order of ``layers``: scalars, or ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: for an unknown ``criterion`` or ``reduction``, a layer missing from the features, or
            feature maps of different shapes.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.perceptual import layer_distances
        >>> p, t = {"a": torch.zeros(1, 2, 4, 4)}, {"a": torch.ones(1, 2, 4, 4)}
        >>> layer_distances(p, t, ["a"], criterion="l2")
        {'a': tensor(1.)}
    """
    check_choice(criterion, "criterion", CRITERIA)
    check_reduction(reduction)
    values = {}
    for name in layers:
        for side, feats in (("preds_features", preds_features), ("target_features", target_features)):
            if name not in feats:
                raise ValueError(f"Layer {name!r} is missing from `{side}` (has {list(feats)}).")
        p, t = preds_features[name], target_features[name]
        if p.shape != t.shape:
            raise ValueError(
                f"Expected the {name!r} features to have the same shape, but got {tuple(p.shape)} and "
                f"{tuple(t.shape)}."
            )
        values[name] = layer_distance(p, t, criterion=criterion, reduction=reduction, gram=gram)
    return values


def layer_distance(
    preds: Tensor,
    target: Tensor,
    *,
    criterion: Criterion = "l1",
    reduction: Literal["mean", "sum", "none"] = "mean",
    gram: bool = False,
) -> Tensor:
    """One layer's term: the criterion between two feature maps, or between their Gram matrices.

    The unchecked step of :func:`layer_distances` (``criterion`` and ``reduction`` are trusted, the maps
    must have one shape), for callers that validate once and take each layer's distance as soon as its
    features exist. Half-precision features are compared in float32, with autocast disabled. Neither
    map is saved for the backward unless ``gram=True``: the caller may overwrite them in place afterwards.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.perceptual import layer_distance
        >>> layer_distance(torch.zeros(1, 2, 4, 4), torch.full((1, 2, 4, 4), 3.0), criterion="l2")
        tensor(9.)
    """
    if gram:
        preds, target = gram_matrix(preds), gram_matrix(target)
    with torch.autocast(preds.device.type, enabled=False):
        dtype = _compute_dtype(preds)
        return _distance(preds.to(dtype), target.to(dtype), criterion, reduction)


def _weighted_sum(
    preds_features: Mapping[str, Tensor],
    target_features: Mapping[str, Tensor],
    layer_weights: Mapping[str, float],
    criterion: str,
    reduction: str,
    gram: bool,
) -> Tensor:
    if not layer_weights:
        raise ValueError("Expected `layer_weights` to name at least one layer, but got none.")
    values = layer_distances(
        preds_features, target_features, layer_weights, criterion=criterion, reduction=reduction, gram=gram
    )
    return sum(values[name] * weight for name, weight in layer_weights.items())  # type: ignore[return-value]


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float64 for float64 input, float32 otherwise (half and bfloat16 are computed in float32)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
