"""Inception Score (Salimans et al. 2016) from classifier logits, computed the way torch-fidelity does."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from percep_lightning.functional.inputs import check_bool, check_int

__all__ = ["inception_score"]


def inception_score(
    logits: Tensor, *, splits: int = 10, shuffle: bool = True, seed: int = 2020
) -> tuple[Tensor, Tensor]:
    """Inception Score of a set of images from their class logits: mean and spread over splits.

    .. math::
        \\mathrm{IS}_k = \\exp\\Big(\\frac{1}{|S_k|} \\sum_{x \\in S_k}
            \\mathrm{KL}\\big(p(y \\mid x) \\,\\Vert\\, \\bar p_k(y)\\big)\\Big),
        \\qquad \\bar p_k(y) = \\frac{1}{|S_k|} \\sum_{x \\in S_k} p(y \\mid x)

    As in torch-fidelity's ``metric_isc``: the rows are shuffled with
    ``numpy.random.RandomState(seed).permutation(N)`` (when ``shuffle``), probabilities are a float64
    softmax, split ``k`` holds rows ``k*N//splits`` to ``(k+1)*N//splits - 1``, and the result is the mean
    and the population standard deviation (``ddof=0``) of ``IS_k`` over the splits. A probability that
    underflows to zero contributes zero to the KL divergence (torch-fidelity would return NaN there).

    For the standard metric pass the 1008-way logits of the TensorFlow Inception network without the fc
    bias (torch-fidelity's ``logits_unbiased``), 10 splits and seed 2020.

    Args:
        logits: unnormalised class scores, ``(N, C)``.
        splits: number of splits, ``1 <= splits <= N``.
        shuffle: shuffle the rows before splitting.
        seed: seed of the NumPy ``RandomState`` used for the shuffle.

    Returns:
        ``(mean, std)``: 0-dim float64 tensors on the device of ``logits`` (on the CPU for MPS input, as
        MPS has no float64).

    Raises:
        TypeError: if ``logits`` is not a floating-point tensor, ``splits`` or ``seed`` is not an integer,
            or ``shuffle`` is not a bool.
        ValueError: if ``logits`` is not 2-D or holds NaN/Inf, ``splits < 1``, ``N < splits``, or ``seed``
            is outside ``[0, 2**32 - 1]``.

    Shape:
        - ``logits``: ``(N, C)``
        - Output: ``()`` and ``()``

    Example:
        >>> import torch
        >>> from percep_lightning.functional.inception_score import inception_score
        >>> logits = 100.0 * torch.eye(4).repeat(4, 1)  # 16 confident images, 4 of each class
        >>> mean, std = inception_score(logits, splits=2, shuffle=False)
        >>> round(mean.item(), 6), round(std.item(), 6)
        (4.0, 0.0)
    """
    _check_arguments(logits, splits, shuffle, seed)
    n = logits.shape[0]
    if shuffle:
        order = np.random.RandomState(seed).permutation(n)
        logits = logits[torch.from_numpy(order).to(logits.device)]
    if logits.device.type == "mps":
        logits = logits.cpu()
    logits = logits.to(torch.float64)

    prob = logits.softmax(dim=1)
    log_prob = logits.log_softmax(dim=1)
    scores = []
    for k in range(splits):
        rows = slice(k * n // splits, (k + 1) * n // splits)
        p, log_p = prob[rows], log_prob[rows]
        log_marginal = p.mean(dim=0, keepdim=True).log()
        kl = torch.where(p > 0, p * (log_p - log_marginal), torch.zeros_like(p)).sum(dim=1)
        scores.append(kl.mean().exp())
    scores_t = torch.stack(scores)
    return scores_t.mean(), scores_t.std(correction=0)


def _check_arguments(logits: Tensor, splits: int, shuffle: bool, seed: int) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"Expected `logits` to be a torch.Tensor, but got {type(logits).__name__}.")
    if not logits.is_floating_point():
        raise TypeError(f"Expected `logits` to be a floating-point tensor, but got dtype {logits.dtype}.")
    if logits.ndim != 2:
        raise ValueError(f"Expected `logits` to be 2-D (N, C), but got shape {tuple(logits.shape)}.")
    check_int(splits, "splits", minimum=1)
    check_int(seed, "seed")
    check_bool(shuffle, "shuffle")
    if not 0 <= seed < 2**32:
        raise ValueError(
            f"Expected `seed` to be in [0, 2**32 - 1] (a NumPy RandomState seed), but got {seed}."
        )
    if logits.shape[0] < splits:
        raise ValueError(
            f"Inception Score needs at least `splits` images (one per split): `splits` is {splits}, but "
            f"`logits` has {logits.shape[0]} rows (shape {tuple(logits.shape)})."
        )
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("Expected `logits` to be finite, but it contains NaN or Inf values.")
