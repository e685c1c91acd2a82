"""Tests for percep_lightning.functional.inception_score: parity with torch-fidelity's metric_isc."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fidelity.metric_isc import isc_features_to_metric

from percep_lightning.functional.inception_score import inception_score


def _logits(n: int, c: int = 50, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, c, generator=g)


def _fidelity(logits: torch.Tensor, splits: int, shuffle: bool, seed: int) -> tuple[float, float]:
    out = isc_features_to_metric(logits, splits=splits, shuffle=shuffle, rng_seed=seed)
    return out["inception_score_mean"], out["inception_score_std"]


@pytest.mark.parametrize(
    "n, splits, shuffle, seed",
    [
        (103, 10, True, 2020),
        (103, 10, False, 2020),
        (64, 7, True, 1),
        (37, 1, True, 2020),
        (12, 12, False, 0),
    ],
)
def test_matches_torch_fidelity(n, splits, shuffle, seed):
    logits = _logits(n, seed=n + splits)
    mean, std = inception_score(logits, splits=splits, shuffle=shuffle, seed=seed)
    assert mean.dtype == std.dtype == torch.float64 and mean.ndim == std.ndim == 0
    ref_mean, ref_std = _fidelity(logits, splits, shuffle, seed)
    assert mean.item() == pytest.approx(ref_mean, rel=1e-10, abs=1e-12)
    assert std.item() == pytest.approx(ref_std, rel=1e-10, abs=1e-12)
    if splits > 1:
        assert std.item() > 0  # the comparison above is not between two zeros


def test_shuffle_and_seed_change_the_splits():
    logits = _logits(103)
    plain = inception_score(logits, shuffle=False)
    shuffled = inception_score(logits, shuffle=True, seed=2020)
    other = inception_score(logits, shuffle=True, seed=7)
    assert plain[1].item() != pytest.approx(shuffled[1].item(), rel=1e-6)
    assert shuffled[1].item() != pytest.approx(other[1].item(), rel=1e-6)
    # The per-split marginals differ, but each split's score uses only its own rows: one split ignores order.
    assert inception_score(logits, splits=1, shuffle=True)[0].item() == pytest.approx(
        inception_score(logits, splits=1, shuffle=False)[0].item(), rel=1e-12
    )


def test_known_values():
    # Confident, evenly spread predictions over C classes give IS = C; identical predictions give 1.
    confident = 100.0 * torch.eye(5).repeat(6, 1)
    mean, std = inception_score(confident, splits=3, shuffle=False)
    assert mean.item() == pytest.approx(5.0, rel=1e-12) and std.item() == pytest.approx(0.0, abs=1e-12)
    same = torch.randn(1, 8).repeat(20, 1)
    assert inception_score(same, splits=4)[0].item() == pytest.approx(1.0, abs=1e-12)


def test_underflowing_probabilities_stay_finite():
    logits = torch.zeros(10, 3, dtype=torch.float64)
    logits[:, 0] = 2000.0  # classes 1 and 2 underflow to probability 0 in every row
    mean, std = inception_score(logits, splits=2)
    assert mean.item() == pytest.approx(1.0) and std.item() == pytest.approx(0.0)


def test_errors():
    logits = _logits(20)
    with pytest.raises(ValueError, match=r"at least `splits` images.*`splits` is 10.*9 rows"):
        inception_score(logits[:9])
    with pytest.raises(ValueError, match="`splits` to be >= 1, but got 0"):
        inception_score(logits, splits=0)
    with pytest.raises(TypeError, match="`splits` to be an integer.*float"):
        inception_score(logits, splits=2.0)
    with pytest.raises(ValueError, match=r"`logits` to be 2-D.*\(20, 50, 1\)"):
        inception_score(logits[..., None])
    with pytest.raises(ValueError, match="`logits` to be finite"):
        inception_score(torch.cat([logits, torch.full((1, 50), float("nan"))]))
    with pytest.raises(TypeError, match="`logits` to be a floating-point.*int64"):
        inception_score(torch.ones(20, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="`logits` to be a torch.Tensor.*ndarray"):
        inception_score(np.zeros((20, 5)))
    with pytest.raises(TypeError, match="`shuffle` to be a bool"):
        inception_score(logits, shuffle=1)
    with pytest.raises(ValueError, match="`seed` to be in"):
        inception_score(logits, seed=-1)
    with pytest.raises(TypeError, match="positional"):
        inception_score(logits, 10)
