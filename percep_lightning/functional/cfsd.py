"""Content Feature Structural Distance (CFSD; StyleID, Chung et al., CVPR 2024), in bounded memory.

For a ``(b, c, h, w)`` feature map (VGG19 relu3_1 in the reference), the reference code
(jiwoogit/StyleID ``evaluation/image_metrics.py``, class ``PatchSimi``) transposes it to
``(b, w, h, c)``, reshapes it to :math:`F \\in \\mathbb{R}^{b \\times hw \\times c}`, divides by
:math:`c` and forms the patch-similarity matrix :math:`M = F F^\\top`. With :math:`P` the row-wise
softmax of the content image's :math:`M` and :math:`Q` that of the stylized image's,

.. math::
    \\mathrm{CFSD} = \\sum_{i=1}^{hw} \\mathrm{KL}(P_i \\,\\|\\, Q_i)
    = \\sum_{i, j} P_{ij} \\,(\\log P_{ij} - \\log Q_{ij})

per image pair: summed over ALL ``h * w`` rows, as the reference's
``F.kl_div(..., reduction="batchmean")`` on ``(b, (hw)^2)`` tensors does (the paper's formula has a
``1 / hw`` that the code, and therefore every published number, does not apply).

Memory: the matrices have ``(hw)^2`` entries (a 512x512 image gives a 16384x16384 relu3_1 matrix, 1 GiB
in float32). Rows are independent, so both the value and its gradient are computed ``chunk_size`` rows
at a time: memory is ``O(chunk_size * h * w)`` per image, never ``(hw)^2``. The gradient comes from a
custom autograd function whose backward recomputes each chunk instead of storing it: with
:math:`G = Q - P` (the gradient of the chunk's rows of :math:`M_\\text{stylized}`, times the incoming
gradient) and :math:`M = F F^\\top`, :math:`\\partial F = G F + G^\\top F`, accumulated chunk by chunk.
The content features are a constant: no gradient flows to them.

Precision: rows of ``P`` and ``Q`` are close to uniform (the entries of ``M`` are ``~0.01-0.1`` with
pretrained VGG19), so each row's divergence is tiny (``~1e-5``) while ``log P`` and ``log Q`` are
``~ -log(h w)``. The reference subtracts the two in float32, which leaves up to ~1e-4 relative error on
the sum (and garbage when ``M`` is smaller still). Here ``log P - log Q = d - (lse_P - lse_Q)`` with
``d = M_content - M_stylized`` and the log-sum-exp difference computed as a ``log1p`` of a weighted
``expm1(d)`` sum, which stays accurate to ~1e-6 relative in float32 (rows too far apart for ``expm1`` fall
back to the direct formula, where precision is not an issue). Everything runs in float32 (float64 for
float64 features) with autocast disabled.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from percep_lightning.functional._checks import check_reduction, reduce
from percep_lightning.functional.inputs import check_int

__all__ = ["DEFAULT_CHUNK_SIZE", "cfsd", "patch_features", "warn_random_backbone"]

DEFAULT_CHUNK_SIZE = 1024
"""Rows of the similarity matrix per chunk: ``1024 * h * w`` floats per buffer (64 MiB at 512x512 input,
about 5 such buffers at the peak)."""


def cfsd(
    preds_features: Tensor,
    content_features: Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """The CFSD between stylized images and their content images, from their feature maps.

    Differentiable with respect to ``preds_features`` (in bounded memory, see the module docstring);
    ``content_features`` is treated as a constant.

    Args:
        preds_features: ``(b, c, h, w)`` features of the stylized images (VGG19 relu3_1 of the
            ImageNet-normalised image, for values comparable with StyleID's).
        content_features: the same features of the content images.
        chunk_size: rows of the ``(hw, hw)`` similarity matrices computed at once; the result does not
            depend on it (up to float rounding).
        reduction: ``"mean"`` over the pairs (the reference's dataset value), ``"sum"``, or ``"none"``
            for one value per pair, ``(b,)``.

    Returns:
        A scalar or ``(b,)``, float32 (float64 for float64 features).

    Raises:
        TypeError: if the features are not floating-point tensors or ``chunk_size`` is not an integer.
        ValueError: if the features are not 4-D, differ in shape, hold NaN/Inf, or ``chunk_size < 1``, or
            for an unknown ``reduction``.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.cfsd import cfsd
        >>> content = torch.rand(2, 8, 6, 5)
        >>> cfsd(content, content, reduction="none").abs().max() < 1e-6
        tensor(True)
        >>> stylized = torch.rand(2, 8, 6, 5, requires_grad=True)
        >>> value = cfsd(stylized, content, chunk_size=7)
        >>> value.backward()
        >>> stylized.grad.shape
        torch.Size([2, 8, 6, 5])
    """
    _check_args(preds_features, content_features, chunk_size, reduction)
    dtype = torch.float64 if preds_features.dtype == torch.float64 else torch.float32
    with torch.autocast(preds_features.device.type, enabled=False):
        preds = patch_features(preds_features.to(dtype))
        content = patch_features(content_features.detach().to(dtype))
        if torch.is_grad_enabled() and preds.requires_grad:
            values = _CFSD.apply(preds, content, chunk_size)
        else:
            with torch.no_grad():
                values = _cfsd_values(preds, content, chunk_size)
    return reduce(values, reduction)


_warned_random = False


def warn_random_backbone() -> None:
    """Warn once per process (on rank zero) that CFSD from a randomly initialised VGG19 carries no signal.

    A random relu3_1 has small activations, so ``M = F F^T`` is ~1e-4 and every row of ``P`` and ``Q``
    is uniform to within that: CFSD is ~1e-9 to 1e-8 for any pair of images, whether they are the same
    photograph, unrelated ones or noise, and it shows no trend over training. The CFSD loss and metric
    call this when they build their VGG19 with ``weights=None``.
    """
    global _warned_random
    if _warned_random:
        return
    _warned_random = True
    from torchmetrics.utilities import rank_zero_warn

    rank_zero_warn(
        "CFSD with a randomly initialised VGG19 (weights=None) is ~1e-9 for any pair of images and shows "
        "no trend: use the official VGG19 weights (weights='default' or the path of vgg19-dcbb9e9d.pth) "
        "for a meaningful value.",
        UserWarning,
    )


def patch_features(features: Tensor) -> Tensor:
    """The reference's patch vectors: ``(b, c, h, w) -> (b, w, h, c) -> (b, h * w, c)``, divided by ``c``.

    Example:
        >>> import torch
        >>> from percep_lightning.functional.cfsd import patch_features
        >>> patches = patch_features(torch.ones(1, 4, 2, 3))
        >>> patches.shape, float(patches[0, 0, 0])
        (torch.Size([1, 6, 4]), 0.25)
    """
    b, c, h, w = features.shape
    return features.permute(0, 3, 2, 1).reshape(b, h * w, c) / c


def _check_args(preds: Tensor, content: Tensor, chunk_size: int, reduction: str) -> None:
    for name, x in (("preds_features", preds), ("content_features", content)):
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"Expected `{name}` to be a floating-point tensor, but got {_describe(x)}.")
    if preds.shape != content.shape:
        raise ValueError(
            "Expected `preds_features` and `content_features` to have the same shape, but got "
            f"{tuple(preds.shape)} and {tuple(content.shape)}."
        )
    if preds.ndim != 4:
        raise ValueError(f"Expected 4-D feature maps (b, c, h, w), but got shape {tuple(preds.shape)}.")
    check_int(chunk_size, "chunk_size", minimum=1)
    check_reduction(reduction)
    for name, x in (("preds_features", preds), ("content_features", content)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"Expected `{name}` to be finite, but it contains NaN or Inf values.")


def _describe(x: object) -> str:
    return f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


def _row_chunks(n: int, chunk_size: int) -> list[slice]:
    return [slice(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def _chunk(preds: Tensor, content: Tensor, rows: slice) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The chunk's rows of both similarity matrices, as ``(q, p, t, log1p_r)`` (see :func:`_kl_rows`).

    ``d = M_content - M_stylized`` and ``log P - log Q = d - (lse(M_content) - lse(M_stylized))``. The
    log-sum-exp difference is computed as ``s + log1p(sum_j q_j expm1(d_j - s))`` with ``s`` the
    ``q``-weighted mean of ``d`` (Jensen: the sum is >= 0, no cancellation near -1). The two
    log-sum-exps themselves are about ``log(h * w)``, so subtracting them in float32 would leave an
    error of ~1e-6 per row, as large as the typical per-row divergence of near-uniform rows.
    """
    m_content = torch.mm(content[rows], content.T)
    m_preds = torch.mm(preds[rows], preds.T)
    p = m_content.softmax(-1)
    q = m_preds.softmax(-1)
    t = m_content.sub_(m_preds)  # d, in place
    del m_preds
    t.sub_(torch.linalg.vecdot(q, t).unsqueeze(-1))  # d - s
    log1p_r = torch.linalg.vecdot(q, torch.expm1(t)).log1p_()
    return q, p, t, log1p_r


def _kl_rows(preds: Tensor, content: Tensor, rows: slice) -> Tensor:
    """``KL(P_i || Q_i)`` for the chunk's rows ``i``: ``sum_j p_j (d_j - s) - log1p(r)``."""
    q, p, t, log1p_r = _chunk(preds, content, rows)
    kl = torch.linalg.vecdot(p, t) - log1p_r
    if not bool(torch.isfinite(kl).all()):  # expm1 overflowed: rows too far apart to need the care
        log_p = torch.mm(content[rows], content.T).log_softmax(-1)
        log_q = torch.mm(preds[rows], preds.T).log_softmax(-1)
        kl = torch.linalg.vecdot(log_p.exp(), log_p - log_q)
    return kl


def _grad_rows(preds: Tensor, content: Tensor, rows: slice) -> Tensor:
    """``d CFSD / d M_stylized`` on the chunk's rows: ``Q - P = -q * expm1(d - s - log1p(r))``."""
    q, p, t, log1p_r = _chunk(preds, content, rows)
    grad = torch.expm1(t.sub_(log1p_r.unsqueeze(-1))).mul_(q).neg_()
    if not bool(torch.isfinite(grad).all()):
        grad = q.sub_(p)
    return grad


def _cfsd_values(preds: Tensor, content: Tensor, chunk_size: int) -> Tensor:
    """Per-image CFSD of ``(b, n, c)`` patch features, ``chunk_size`` rows of ``M`` at a time."""
    values = torch.zeros(preds.shape[0], dtype=torch.float64, device=preds.device)
    for i in range(preds.shape[0]):
        for rows in _row_chunks(preds.shape[1], chunk_size):
            values[i] += _kl_rows(preds[i], content[i], rows).sum(dtype=torch.float64)
    return values.to(preds.dtype)


class _CFSD(torch.autograd.Function):
    """Per-image CFSD with a backward that recomputes each chunk of rows (bounded memory)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, preds: Tensor, content: Tensor, chunk_size: int
    ) -> Tensor:
        ctx.save_for_backward(preds, content)
        ctx.chunk_size = chunk_size
        return _cfsd_values(preds, content, chunk_size)

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, None, None]:
        preds, content = ctx.saved_tensors
        grad = grad.to(preds.dtype)
        grad_preds = torch.zeros_like(preds)
        # The backward may run inside the caller's autocast region: keep every product in the features' dtype.
        with torch.autocast(device_type=preds.device.type, enabled=False):
            _accumulate_grad(preds, content, grad, grad_preds, ctx.chunk_size)
        return grad_preds, None, None


def _accumulate_grad(
    preds: Tensor, content: Tensor, grad: Tensor, grad_preds: Tensor, chunk_size: int
) -> None:
    """Add the gradient of the per-image CFSD values w.r.t. ``preds`` features into ``grad_preds``."""
    for i in range(preds.shape[0]):
        p_feat, out = preds[i], grad_preds[i]
        for rows in _row_chunks(p_feat.shape[0], chunk_size=chunk_size):
            g = _grad_rows(p_feat, content[i], rows).mul_(grad[i])
            # M = F F^T: the rows' gradient is G F, and every row gets G^T F_rows.
            out[rows] += torch.mm(g, p_feat)
            out.addmm_(g.T, p_feat[rows])
