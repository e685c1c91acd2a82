"""prdc equals the `prdc` package's compute_prdc, count for count, and keeps real and fake in their roles."""

from __future__ import annotations

import contextlib
import importlib
import io

import pytest
import torch
from prdc import compute_prdc

from percep_lightning.functional import PRDC, prdc

prdc_module = importlib.import_module("percep_lightning.functional.prdc")


def _features(n: int, seed: int, *, shift: float = 0.0, spread: float = 1.0, dim: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator, dtype=torch.float64) * spread + shift


def _counts(values, n_real: int, n_fake: int, k: int) -> tuple[int, int, int, int]:
    """(precision, recall, density, coverage) as the integer counts they are means of."""
    precision, recall, density, coverage = (float(v) for v in values)
    counts = (precision * n_fake, recall * n_real, density * k * n_fake, coverage * n_real)
    assert all(abs(c - round(c)) < 1e-6 for c in counts)
    return tuple(round(c) for c in counts)  # type: ignore[return-value]


def _package_counts(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[int, int, int, int]:
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        out = compute_prdc(real.double().numpy(), fake.double().numpy(), nearest_k=k)
    values = [out[name] for name in ("precision", "recall", "density", "coverage")]
    return _counts(values, real.shape[0], fake.shape[0], k)


@pytest.mark.parametrize(("n_real", "n_fake", "k"), [(60, 60, 5), (70, 45, 3), (40, 90, 1), (50, 30, 7)])
def test_matches_prdc_package(n_real, n_fake, k):
    real = _features(n_real, 0)
    fake = _features(n_fake, 1, shift=0.6, spread=1.0)
    out = prdc(real, fake, k=k)
    assert isinstance(out, PRDC)
    assert all(v.dtype == torch.float64 and v.shape == () for v in out)
    expected = _package_counts(real, fake, k)
    assert _counts(out, n_real, n_fake, k) == expected
    assert 0 < expected[0] < n_fake and 0 < expected[1] < n_real  # neither trivially 0 nor 1


@pytest.mark.parametrize(("block", "k"), [(16, 5), (4, 5), (7, 2)])
def test_tiles_match_prdc_package(monkeypatch, block, k):
    """Several tiles per set, partial tiles, and tiles with fewer rows or columns than k."""
    monkeypatch.setattr(prdc_module, "_BLOCK", block)
    real = _features(70, 2)
    fake = _features(53, 3, shift=0.3, spread=1.2)
    assert _counts(prdc(real, fake, k=k), 70, 53, k) == _package_counts(real, fake, k)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_ties_and_coincident_samples_on_a_lattice(k):
    """Small integer features: every distance is exact in both implementations, so ties are real ties
    (strict `<`) and coincident samples give radius 0 (a ball that contains nothing)."""
    generator = torch.Generator().manual_seed(15)
    real = torch.randint(0, 3, (60, 3), generator=generator).double()
    fake = torch.randint(0, 3, (50, 3), generator=generator).double()
    assert _counts(prdc(real, fake, k=k), 60, 50, k) == _package_counts(real, fake, k)


@pytest.mark.parametrize("spare", [8, 0])
@pytest.mark.parametrize("shift", [1e-6, 1e-9])
def test_near_ties_are_settled_in_float64(monkeypatch, shift, spare):
    """Lattice points moved by ``shift``: distances, and their order, differ by far less than float32 tiles
    resolve, so the radii and the comparisons rest on the float64 recomputation."""
    monkeypatch.setattr(prdc_module, "_SPARE", spare)
    generator = torch.Generator().manual_seed(16)
    real = torch.randint(0, 3, (60, 8), generator=generator).double()
    fake = torch.randint(0, 3, (50, 8), generator=generator).double()
    real += shift * torch.randn(real.shape, generator=generator, dtype=torch.float64)
    fake += shift * torch.randn(fake.shape, generator=generator, dtype=torch.float64)
    for k in (2, 5):
        assert _counts(prdc(real, fake, k=k), 60, 50, k) == _package_counts(real, fake, k)


@pytest.mark.parametrize(
    "setting",
    [
        # a wide error band: many comparisons, and the radii they need, settled on float64 distances
        {"_SAFETY": 1e4, "_SPARE": 1},  # radii from the k-th's own pair, the kept neighbours, a second pass
        {"_SAFETY": 1e5},  # every comparison and radius from float64 distances
        {"_SAFETY": 1e4, "_SPARE": 0, "_BLOCK": 8, "_GATHER": 100},  # second passes over several tiles
        {"_float32_matmul_is_ieee": lambda device: False},  # float64 tiles
    ],
)
def test_every_path_gives_the_same_counts(monkeypatch, setting):
    real = _features(45, 17, dim=5)
    fake = _features(38, 18, shift=0.5, dim=5)
    for name, value in setting.items():
        monkeypatch.setattr(prdc_module, name, value)
    recomputed = []
    exact = prdc_module._exact
    monkeypatch.setattr(
        prdc_module, "_exact", lambda a, i, b, j: recomputed.append(len(i)) or exact(a, i, b, j)
    )
    for k in (1, 4):
        assert _counts(prdc(real, fake, k=k), 45, 38, k) == _package_counts(real, fake, k)
    assert sum(recomputed) > (0 if "_SAFETY" in setting else -1)


def test_reduced_precision_matmul_gives_float64_tiles():
    """Under bfloat16 float32 products (an opt-in torch setting) the float32 error bound fails: float64 tiles."""
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    if getattr(matmul, "fp32_precision", None) is None:
        pytest.skip("this torch has no per-backend float32 precision setting")
    assert prdc_module._float32_matmul_is_ieee(torch.device("cpu"))
    before = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        assert not prdc_module._float32_matmul_is_ieee(torch.device("cpu"))
        real, fake = _features(40, 20), _features(30, 21, shift=0.5)
        assert _counts(prdc(real, fake, k=3), 40, 30, 3) == _package_counts(real, fake, 3)
    finally:
        matmul.fp32_precision = before


def test_coincident_samples_have_exact_zero_distance():
    """A generator that repeats one real sample: its radii are 0 (balls with nothing inside), so recall is 0,
    and each copy lies in the real sample's own ball, so precision is 1 (not subject to round-off)."""
    real = _features(80, 19, dim=7) * 3.7 + 11.0
    fake = real[3].expand(20, -1).clone()
    out = prdc(real, fake, k=5)
    assert float(out.precision) == 1.0
    assert float(out.recall) == 0.0
    # the real balls that contain real[3]: a direct float64 computation from differences
    distances = (real[:, None] - real[None]).square().sum(-1)
    radii = distances.fill_diagonal_(float("inf")).kthvalue(5, dim=1).values
    containing = int(((real - real[3]).square().sum(-1) < radii).sum())
    assert float(out.coverage) == containing / 80
    assert float(out.density) == containing * 20 / (5 * 20)


def test_float32_features_are_compared_in_float64():
    real = _features(50, 4).float()
    fake = _features(40, 5, shift=0.5).float()
    assert _counts(prdc(real, fake, k=4), 50, 40, 4) == _package_counts(real.double(), fake.double(), 4)


def test_k3_equals_the_non_strict_comparison_on_continuous_features():
    """Kynkäänniemi et al.'s precision and recall: k = 3 with `<=`; ties have measure zero here."""
    real, fake = _features(60, 6), _features(50, 7, shift=0.5)
    distances = torch.cdist(real, fake)
    # the 4th smallest distance of a row includes the 0 to the sample itself
    real_radii = torch.cdist(real, real).kthvalue(4, dim=1).values
    fake_radii = torch.cdist(fake, fake).kthvalue(4, dim=1).values
    precision = (distances <= real_radii[:, None]).any(dim=0).double().mean()
    recall = (distances <= fake_radii[None, :]).any(dim=1).double().mean()
    out = prdc(real, fake, k=3)
    assert (float(out.precision), float(out.recall)) == (float(precision), float(recall))


def test_collapsed_generator_has_high_precision_and_low_recall():
    real = _features(300, 8, dim=4)
    collapsed = real[0] + 0.01 * _features(100, 9, dim=4)  # every fake sample near one real sample
    out = prdc(real, collapsed, k=5)
    assert float(out.precision) == 1.0
    assert float(out.recall) <= 1 / 300
    assert float(out.coverage) < 0.1
    # swapped roles: the real set now plays the generator, so precision and recall trade places
    swapped = prdc(collapsed, real, k=5)
    assert float(swapped.precision) == float(out.recall)
    assert float(swapped.recall) == float(out.precision)


def test_swapping_the_sets_swaps_precision_and_recall():
    real, fake = _features(45, 10), _features(35, 11, shift=0.6)
    out, swapped = prdc(real, fake, k=4), prdc(fake, real, k=4)
    assert (float(swapped.precision), float(swapped.recall)) == (float(out.recall), float(out.precision))


def test_identical_sets_cover_themselves():
    real = _features(40, 12)
    out = prdc(real, real.clone(), k=5)
    # every sample is at distance 0 < radius from itself
    assert (float(out.precision), float(out.recall), float(out.coverage)) == (1.0, 1.0, 1.0)


def test_errors():
    real, fake = _features(10, 13), _features(8, 14)
    with pytest.raises(ValueError, match="Expected `k` to be >= 1, but got 0"):
        prdc(real, fake, k=0)
    with pytest.raises(
        ValueError, match=r"Expected `k` to be smaller than the number of real samples \(10\)"
    ):
        prdc(real, torch.cat([fake, fake]), k=10)
    with pytest.raises(ValueError, match=r"Expected `k` to be smaller than the number of fake samples \(8\)"):
        prdc(real, fake, k=8)
    with pytest.raises(TypeError, match="Expected `k` to be an integer"):
        prdc(real, fake, k=2.0)
    with pytest.raises(TypeError, match="Expected `k` to be an integer"):
        prdc(real, fake, k=True)
    with pytest.raises(TypeError, match="Expected `real_features` to be a torch.Tensor"):
        prdc(real.numpy(), fake)
    with pytest.raises(TypeError, match="Expected `fake_features` to be a floating-point tensor"):
        prdc(real, fake.long())
    with pytest.raises(ValueError, match=r"Expected `real_features` to be 2-D \(N, D\)"):
        prdc(real[None], fake)
    with pytest.raises(ValueError, match="to have the same feature dimension"):
        prdc(real, fake[:, :3])
    with pytest.raises(ValueError, match="Expected `fake_features` to be finite"):
        prdc(real, torch.cat([fake, torch.full((1, 6), float("inf"), dtype=torch.float64)]))
