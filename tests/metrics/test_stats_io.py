"""percep_lightning.metrics save_stats / load_stats: the pytorch-fid ``.npz`` statistics files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from percep_lightning.functional.fid import feature_statistics, feature_sums
from percep_lightning.metrics import load_stats, save_stats


def _features(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64)


def test_save_load_round_trip(tmp_path):
    mu, sigma = feature_statistics(*feature_sums(_features(40, 8, seed=7)))
    path = tmp_path / "stats.npz"
    save_stats(path, mu, sigma)
    save_stats(str(path), mu, 2 * sigma)  # overwrite in place
    loaded_mu, loaded_sigma = load_stats(path)
    assert torch.equal(loaded_mu, mu) and torch.equal(loaded_sigma, 2 * sigma)
    assert os.listdir(tmp_path) == ["stats.npz"]  # no temporary file left behind
    with np.load(path) as archive:  # what pytorch-fid reads
        assert sorted(archive.files) == ["mu", "sigma"]


def test_load_pytorch_fid_file(tmp_path):
    path = tmp_path / "ref.npz"
    mu, sigma = np.arange(3, dtype=np.float32), np.diag([1.0, 2.0, 3.0])
    np.savez(path, mu=mu, sigma=sigma)
    loaded_mu, loaded_sigma = load_stats(path)
    assert loaded_mu.dtype == torch.float64
    np.testing.assert_array_equal(loaded_mu.numpy(), mu)
    np.testing.assert_array_equal(loaded_sigma.numpy(), sigma)


def test_load_save_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_stats(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", mean=np.zeros(2), sigma=np.eye(2))
    with pytest.raises(ValueError, match=r"lacks \['mu'\]"):
        load_stats(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(2), sigma=np.eye(3))
    with pytest.raises(ValueError, match="`sigma` to have shape"):
        load_stats(tmp_path / "shape.npz")
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(ValueError, match="text.npz"):
        load_stats(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_stats(tmp_path / "no" / "dir.npz", torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="`mu` to be 1-D"):
        save_stats(tmp_path / "x.npz", torch.zeros(1, 2), torch.eye(2))


def test_cache_entries_carry_their_format_and_newer_ones_are_refused(tmp_path):
    from percep_lightning.metrics.stats_io import ENTRY_FORMAT, read_cached_stats, write_cached_stats

    path = tmp_path / "entry.npz"
    write_cached_stats(path, torch.zeros(2), torch.eye(2), 5, [5, 1, 1], features=torch.zeros(5, 2))
    with np.load(path) as archive:
        assert int(archive["format"]) == ENTRY_FORMAT
        arrays = {key: archive[key] for key in archive.files if key != "format"}
    assert read_cached_stats(path)["num_samples"] == 5
    np.savez(tmp_path / "old.npz", **arrays)  # as earlier versions wrote them: no format array
    assert read_cached_stats(tmp_path / "old.npz")["features"].shape == (5, 2)
    np.savez(tmp_path / "newer.npz", **arrays, format=np.int64(ENTRY_FORMAT + 1))
    with pytest.raises(ValueError, match=r"format 2, written by a newer percep_lightning"):
        read_cached_stats(tmp_path / "newer.npz")
