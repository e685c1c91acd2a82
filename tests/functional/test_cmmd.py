"""cmmd equals the reference estimator (google-research cmmd/distance.py `mmd`) written out in float64 numpy."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from percep_lightning.functional import cmmd

cmmd_module = importlib.import_module("percep_lightning.functional.cmmd")


def _reference_mmd(x: torch.Tensor, y: torch.Tensor, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """The reference formula on full matrices: squared norms from the Gram diagonals, -2ab + |a|^2 + |b|^2,
    an RBF kernel with gamma = 1 / (2 sigma^2), means over every entry (diagonals included)."""
    x, y = x.double().numpy(), y.double().numpy()
    x_sq, y_sq = np.diag(x @ x.T), np.diag(y @ y.T)
    gamma = 1 / (2 * sigma**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])))
    return float(scale * (k_xx + k_yy - 2 * k_xy))


def _embeddings(n: int, seed: int, shift: float = 0.0, dim: int = 24) -> torch.Tensor:
    """L2-normalised vectors, as CLIP image embeddings are."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    x[:, 0] += shift
    return torch.nn.functional.normalize(x, dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "m"), [(40, 40), (57, 31)])
def test_matches_reference(n, m, dtype):
    x, y = _embeddings(n, 0).to(dtype), _embeddings(m, 1, shift=0.7).to(dtype)
    value = cmmd(x, y)
    expected = _reference_mmd(x, y)  # on the same (float32) values, upcast
    assert value.dtype == torch.float64 and value.shape == ()
    assert expected > 1e-2  # the sets differ: not a trivial zero
    assert float(value) == pytest.approx(expected, rel=1e-6)


def test_sigma_and_scale():
    x, y = _embeddings(30, 2), _embeddings(20, 3, shift=1.0)
    value = cmmd(x, y, sigma=0.8, scale=1.0)
    assert float(value) == pytest.approx(_reference_mmd(x, y, sigma=0.8, scale=1.0), rel=1e-6)


@pytest.mark.parametrize("block", [7, 16])
def test_tiles_equal_the_reference(monkeypatch, block):
    x, y = _embeddings(50, 4), _embeddings(33, 5, shift=0.5)  # 50 and 33 rows: full and partial tiles
    whole = cmmd(x, y)
    monkeypatch.setattr(cmmd_module, "_BLOCK", block)
    tiled = cmmd(x, y)
    assert float(tiled) == pytest.approx(float(whole), rel=1e-10)
    assert float(tiled) == pytest.approx(_reference_mmd(x, y), rel=1e-6)


def test_single_rows():
    x, y = _embeddings(1, 6), _embeddings(3, 7)
    assert float(cmmd(x, y)) == pytest.approx(_reference_mmd(x, y), rel=1e-6)


def test_identical_sets_give_zero():
    x = _embeddings(64, 8)
    assert abs(float(cmmd(x, x))) < 1e-10
    assert abs(float(cmmd(x, x.flip(0)))) < 1e-10  # the order of the samples does not matter


def test_symmetric_and_shift_invariant():
    x, y = _embeddings(40, 9), _embeddings(25, 10, shift=0.5)
    value = float(cmmd(x, y))
    assert float(cmmd(y, x)) == pytest.approx(value, rel=1e-9)
    shift = torch.linspace(-3, 3, x.shape[1], dtype=torch.float64)
    assert float(cmmd(x + shift, y + shift)) == pytest.approx(value, rel=1e-9)


def test_errors():
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="Expected `x` to be a torch.Tensor"):
        cmmd(x.numpy(), x)
    with pytest.raises(TypeError, match="Expected `y` to be a floating-point tensor"):
        cmmd(x, torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"Expected `x` to be 2-D \(N, D\)"):
        cmmd(x[0], x)
    with pytest.raises(ValueError, match="Expected `y` to have at least 1 row,"):
        cmmd(x, x[:0])
    with pytest.raises(ValueError, match="Expected `x` and `y` to have the same feature dimension"):
        cmmd(x, torch.randn(4, 5))
    with pytest.raises(ValueError, match="Expected `y` to be finite"):
        cmmd(x, torch.tensor([[0.0, float("nan"), 1.0]]))
    for sigma in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="Expected `sigma` to be finite and > 0"):
            cmmd(x, x, sigma=sigma)
    with pytest.raises(TypeError, match="Expected `sigma` to be a real number"):
        cmmd(x, x, sigma=True)
    with pytest.raises(TypeError, match="Expected `scale` to be a real number"):
        cmmd(x, x, scale="1000")
    with pytest.raises(ValueError, match="Expected `scale` to be finite"):
        cmmd(x, x, scale=float("nan"))
