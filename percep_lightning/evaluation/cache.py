"""The real statistics of a TARGET folder, cached between evaluations in the callback's store format, one
entry per feature network (the FID Inception, DINOv2, CLIP, ...).

An entry is named by :func:`~percep_lightning.metrics.stats_io.stats_key` of what the statistics depend
on: the network's weights (for the FID Inception the SHA-256 of its file,
:func:`~percep_lightning.metrics.stats_io.weights_digest`, and its resize mode; for another network its
``identity``: name, preprocessing and weights digest), and the folder's content (every file's relative name and the SHA-256 of its bytes, so a
changed, added or removed file makes another key). The file is the one
:func:`~percep_lightning.metrics.stats_io.write_cached_stats` writes for the validation callback, with the
pool3 features added (KID needs them, not only ``mu`` and ``sigma``). A second evaluation of the same
TARGET then skips its Inception pass.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from percep_lightning.evaluation.distributed import World, all_gather_objects
from percep_lightning.evaluation.passes import Passes
from percep_lightning.evaluation.plan import Plan
from percep_lightning.functional.fid import feature_statistics, feature_sums
from percep_lightning.metrics.feeding import fix_real_side
from percep_lightning.metrics.stats_io import (
    cached_stats_path,
    read_cached_stats,
    stats_key,
    weights_digest,
    write_cached_stats,
)

__all__ = [
    "CacheWriter",
    "FeatureRecorder",
    "default_cache_dir",
    "file_digests",
    "folder_cache_key",
    "folder_key",
    "read_entry",
    "target_cache",
    "write_entry",
]

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$TORCH_HOME/percep_lightning/real_stats`` (next to the torch hub cache of the weights files)."""
    return Path(torch.hub.get_dir()).parent / "percep_lightning" / "real_stats"


def file_digests(folder: str | os.PathLike[str], names: list[str]) -> list[list[str]]:
    """``[[relative name, SHA-256 of its bytes], ...]`` of a folder's image files, what a cache key names of them."""
    files = []
    for name in names:
        digest = hashlib.sha256()
        with open(Path(folder) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        files.append([name, digest.hexdigest()])
    return files


def folder_key(files: list[list[str]], *, weights: str, resize: str) -> str:
    """The cache key of a folder's statistics on one network.

    Args:
        files: the folder's :func:`file_digests`.
        weights: the digest of the network's weights (for a network other than the FID Inception, its identity).
        resize: the FID Inception's resize mode.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "a.png").write_bytes(b"1")
        >>> k1 = folder_key(file_digests(d, ["a.png"]), weights="w", resize="tensorflow")
        >>> _ = (d / "a.png").write_bytes(b"2")
        >>> k1 == folder_key(file_digests(d, ["a.png"]), weights="w", resize="tensorflow")
        False
    """
    fields = {
        "format": CACHE_FORMAT,
        "source": "image folder",
        "weights": weights,
        "resize": resize,
        "quantize": "round",
        "files": files,
    }
    return stats_key(fields)


def read_entry(directory: Path, key: str, world: World) -> dict[str, Any] | None:
    """The cached entry of ``key`` as process 0 reads it (every process gets the same answer), or ``None``."""
    entry = None
    if world.is_main:
        path = cached_stats_path(directory, key)
        if path.is_file():
            try:
                entry = read_cached_stats(path)
            except (OSError, KeyError, ValueError):
                entry = None  # unreadable: computed again and rewritten
            if entry is not None and "features" not in entry:
                entry = None
    return all_gather_objects(world, entry)[0] if world.size > 1 else entry


def write_entry(directory: Path, key: str, features: Tensor) -> Path:
    """Write the statistics and features of a folder (process 0 only); returns the file."""
    total, outer, n = feature_sums(features.to(torch.float64))
    with warnings.catch_warnings():  # stored, not judged: the metrics warn about few images themselves
        warnings.simplefilter("ignore")
        mu, sigma = feature_statistics(total, outer, n)
    path = cached_stats_path(directory, key)
    write_cached_stats(path, mu, sigma, n, [n], features=features)
    return path


class FeatureRecorder:
    """Keeps the FID Inception features of TARGET seen by a feature pass, to be cached after it."""

    def __init__(self) -> None:
        self._features: list[Tensor] = []
        self._indices: list[Tensor] = []

    def __call__(self, features: Tensor, indices: Tensor) -> None:
        self._features.append(features.detach().to("cpu", torch.float32))
        self._indices.append(indices.detach().to("cpu", torch.long))

    def gathered(self, world: World) -> Tensor:
        """Every process's features, in the folder's order (call it on every process)."""
        width = self._features[0].shape[1] if self._features else 2048
        mine = (
            torch.cat(self._features) if self._features else torch.empty(0, width),
            torch.cat(self._indices) if self._indices else torch.empty(0, dtype=torch.long),
        )
        parts = all_gather_objects(world, mine) if world.size > 1 else [mine]
        features = torch.cat([p[0] for p in parts])
        indices = torch.cat([p[1] for p in parts])
        return features[torch.argsort(indices, stable=True)]


@dataclass
class CacheWriter:
    """Records one network's features of TARGET during its pass and writes the entry after it."""

    directory: Path
    key: str

    def __post_init__(self) -> None:
        self.recorder = FeatureRecorder()

    def save(self, world: World) -> None:
        features = self.recorder.gathered(world)
        if world.is_main:
            try:
                write_entry(self.directory, self.key, features)
            except OSError as err:
                warnings.warn(
                    f"Could not cache the TARGET statistics in {str(self.directory)!r}: {err}", stacklevel=2
                )


def target_cache(
    plan: Plan, passes: Passes, cache_dir: Path | None, settings: dict[str, Any], fixed: set[str]
) -> dict[int, CacheWriter]:
    """Fix the TARGET side of the registry's cacheable metrics (FID, KID, FD-DINOv2, CMMD, PRDC, ...) from the
    cache, one entry per network, when it holds this folder; else record that network's pass for the cache.

    Returns the writers of the entries to record, by ``id`` of their network.
    """
    if cache_dir is None or "target" not in plan.listed or passes.context is None:
        return {}
    users: dict[int, list[str]] = {}
    for name, spec in plan.specs.items():
        metric = passes.metrics.get(name)
        if spec.caches_real and spec.against == "target" and name not in fixed and metric is not None:
            users.setdefault(id(metric.extractor), []).append(name)  # type: ignore[union-attr]
    writers: dict[int, CacheWriter] = {}
    reused: list[bool] = []
    files = file_digests(plan.folders["target"], plan.listed["target"]) if users else []
    for network_id, names in users.items():
        key = folder_cache_key(plan, passes, passes.metrics[names[0]].extractor, files)  # type: ignore[union-attr]
        entry = read_entry(cache_dir, key, passes.world)
        reused.append(entry is not None)
        if entry is None:
            writers[network_id] = CacheWriter(cache_dir, key)
            continue
        world = passes.world
        fixed |= fix_real_side(
            {name: passes.metrics[name] for name in names}, entry["mu"], entry["sigma"], entry["num_samples"],
            entry["features"], rank=world.rank, world_size=world.size,
        )  # fmt: skip
    if reused:
        settings["target_cache"] = (
            "reused" if all(reused) else ("computed" if not any(reused) else "partly reused")
        )
    return writers


def folder_cache_key(plan: Plan, passes: Passes, extractor: Any, files: list[list[str]]) -> str:
    """The cache key of TARGET's features on ``extractor`` (``files``: TARGET's :func:`file_digests`): the FID
    Inception's by its weights file and resize mode (the key earlier versions wrote), any other network by its
    identity (weights digest and preprocessing)."""
    if extractor is passes.context.networks.get("inception"):  # type: ignore[union-attr]
        digest = weights_digest(plan.weights.get("inception"), extractor)
        return folder_key(files, weights=digest, resize=passes.resize)
    return folder_key(files, weights=extractor.identity, resize="its own")
