"""The real-image statistics of a validation set (FID's mean and covariance, KID's per-image features),
computed once and reused across epochs and resumes.

An entry is identified by a key, a hash of everything the statistics depend on (:func:`real_stats_key`):
the Inception weights, resize and quantisation, the dataset (type, length and a digest of a few samples),
``max_samples``, the batch limit and where the real images come from. The store keeps the entry of the
last key in memory and on disk as a pytorch-fid ``.npz`` (``mu``, ``sigma``, plus the image count, a
checksum of the images and, when KID is computed, the ``(N, 2048)`` pool3 ``features`` in dataset order),
so checkpoints carry only the key and the file name:

* with an explicit folder, the file is written as soon as the statistics exist and read back by key in
  any later run (a cache shared by runs);
* otherwise the file goes to the run's folder when a checkpoint is saved, and a resumed run reads the
  file its checkpoint names (recomputing, with one info line, when the file is gone).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor

from percep_lightning.callbacks.sample_plan import is_map_style
from percep_lightning.metrics.stats_io import (
    CACHE_FILE_PREFIX,
    cached_stats_path,
    read_cached_stats,
    stats_key,
    weights_digest,
    write_cached_stats,
)

__all__ = ["RealStats", "RealStatsStore", "real_stats_key", "weights_digest"]

log = logging.getLogger(__name__)

STATE_FORMAT = 2
FILE_PREFIX = CACHE_FILE_PREFIX


@dataclass
class RealStats:
    """Real-image statistics and what identifies them.

    Attributes:
        key: the hash of what they depend on (:func:`real_stats_key`).
        mu: ``(2048,)`` float64 mean.
        sigma: ``(2048, 2048)`` float64 covariance.
        num_samples: the number of images.
        fingerprint: ``[count, sum, sum of squares]`` of the uint8 images, to notice changed images.
        features: ``(N, 2048)`` float32 pool3 features in dataset order (what KID needs), or ``None`` when
            only FID's statistics were kept.
    """

    key: str
    mu: Tensor
    sigma: Tensor
    num_samples: int
    fingerprint: list[int] = field(default_factory=list)
    features: Tensor | None = None


class RealStatsStore:
    """Memory and disk home of the :class:`RealStats` of one callback.

    Args:
        directory: a folder shared by runs (read by key, written at once); ``None`` to write into the
            run's folder (:meth:`set_run_directory`) only when a checkpoint is saved.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.run_directory: Path | None = None
        self.entry: RealStats | None = None
        self._written: Path | None = None
        self._resume: dict[str, Any] | None = None

    def set_run_directory(self, path: str | os.PathLike[str]) -> None:
        """Where the statistics go at checkpoint time when no shared folder was given."""
        self.run_directory = Path(path)

    def path_for(self, key: str) -> Path | None:
        """The file of ``key``: in the shared folder, else in the run folder (``None`` when neither is set)."""
        folder = self.directory if self.directory is not None else self.run_directory
        return None if folder is None else cached_stats_path(folder, key)

    def lookup(self, key: str, trainer: Trainer) -> RealStats | None:
        """The statistics of ``key`` from memory, the shared folder or the resumed checkpoint's file.

        Call it on every process: rank zero reads the file and broadcasts what it found.
        """
        if self.entry is not None and self.entry.key == key:
            return self.entry
        found = None
        if trainer.is_global_zero:
            found = self._read(key)
        found = trainer.strategy.broadcast(found, src=0)
        if found is not None:
            self.entry = RealStats(key=key, **found)
        return self.entry if found is not None else None

    def remember(self, stats: RealStats, trainer: Trainer) -> None:
        """Keep ``stats`` (and write them to the shared folder at once). Call it on every process."""
        self.entry = stats
        self._resume = None
        self._written = None
        if self.directory is not None:
            if trainer.is_global_zero:
                self._write(stats)
            trainer.strategy.barrier("ImageMetricsCallback.real_stats")

    def forget(self) -> None:
        """Drop the entry in memory (files stay)."""
        self.entry = None
        self._written = None

    def persist(self, is_global_zero: bool) -> None:
        """Make sure the entry is on disk (at checkpoint time): rank zero writes it once."""
        if self.entry is None or not is_global_zero:
            return
        path = self.path_for(self.entry.key)
        if path is not None and self._written != path:
            self._write(self.entry)

    def state_dict(self) -> dict[str, Any]:
        """The key and file of the entry (a few hundred bytes; the statistics stay on disk)."""
        entry = self.entry
        if entry is None:
            return {"format": STATE_FORMAT, "key": None}
        path = self.path_for(entry.key)
        return {
            "format": STATE_FORMAT,
            "key": entry.key,
            "file": None if path is None else str(path.absolute()),
            "num_samples": entry.num_samples,
            "fingerprint": list(entry.fingerprint),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Remember which file to read when the same key comes back (other formats are ignored)."""
        if state.get("format") == STATE_FORMAT and state.get("key") is not None:
            self._resume = dict(state)

    # ------------------------------------------------------------------ files

    def _read(self, key: str) -> dict[str, Any] | None:
        shared = self.path_for(key) if self.directory is not None else None
        if shared is not None and shared.is_file():
            return _read_file(shared)
        resume = self._resume
        if resume is None or resume.get("key") != key or resume.get("file") is None:
            return None
        self._resume = None
        path = Path(resume["file"])
        stats = _read_file(path) if path.is_file() else None
        if stats is None:
            log.info(
                "ImageMetricsCallback: the real statistics file %s named in the checkpoint is missing or unreadable; "
                "recomputing the real statistics this epoch.",
                path,
            )
        return stats

    def _write(self, stats: RealStats) -> None:
        path = self.path_for(stats.key)
        if path is None:
            return
        if _write_file(path, stats):
            self._written = path


def _read_file(path: Path) -> dict[str, Any] | None:
    try:
        entry = read_cached_stats(path)
    except (OSError, KeyError, ValueError) as err:
        rank_zero_warn(f"ImageMetricsCallback ignored the unreadable real statistics file {path}: {err}")
        return None
    features = entry.get("features")
    expected = (entry["num_samples"], entry["mu"].shape[0])
    if features is not None and tuple(features.shape) != expected:
        rank_zero_warn(
            f"ImageMetricsCallback ignored the real features in {path}: expected shape {expected}, "
            f"but got {tuple(features.shape)}."
        )
        features = None
    entry["features"] = features
    return entry


def _write_file(path: Path, stats: RealStats) -> bool:
    """Write the pytorch-fid ``.npz`` (``mu``, ``sigma``, plus the count, checksum and features) atomically."""
    try:
        write_cached_stats(
            path, stats.mu, stats.sigma, stats.num_samples, stats.fingerprint, features=stats.features
        )
    except OSError as err:
        rank_zero_warn(f"ImageMetricsCallback could not write the real statistics to {path}: {err}")
        return False
    return True


# ---------------------------------------------------------------------- the key


def real_stats_key(
    *, weights: str, dataset: Any, options: Mapping[str, Any], format_version: int = STATE_FORMAT
) -> str:
    """A hash of everything real statistics depend on.

    Args:
        weights: the digest of the Inception weights (:func:`weights_digest`).
        dataset: the evaluation dataset (identified by type, length and a digest of a few samples).
        options: the other settings (resize, quantize, max_samples, batch limit, source of the images).

    Example:
        >>> a = real_stats_key(weights="w", dataset=[1, 2, 3], options={"resize": "tensorflow"})
        >>> b = real_stats_key(weights="w", dataset=[1, 2, 4], options={"resize": "tensorflow"})
        >>> len(a), a == b
        (64, False)
    """
    fields = {"format": format_version, "weights": weights, "dataset": dataset_identity(dataset), **options}
    return stats_key(fields)


def dataset_identity(dataset: Any, probes: int = 3) -> dict[str, Any]:
    """Type, length and a digest of a few samples of a map-style dataset (what real statistics depend on)."""
    identity: dict[str, Any] = {"type": qualname(type(dataset))}
    if not is_map_style(dataset):
        return identity
    length = len(dataset)
    identity["len"] = length
    digest = hashlib.sha256()
    try:
        for index in sorted({0, length // 2, length - 1} if length else set())[:probes]:
            _digest_sample(digest, dataset[index])
    except Exception as err:  # noqa: BLE001 (a dataset that cannot be probed is identified by type and length)
        log.debug("ImageMetricsCallback could not probe the evaluation dataset: %s", err)
        identity["probe"] = None
        return identity
    identity["probe"] = digest.hexdigest()
    return identity


def qualname(obj: Any) -> str:
    """``module.QualifiedName`` of a function or class."""
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _digest_sample(digest: Any, sample: Any) -> None:
    if isinstance(sample, Tensor):
        digest.update(str((sample.dtype, tuple(sample.shape))).encode())
        digest.update(sample.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(sample, np.ndarray):
        digest.update(str((sample.dtype, sample.shape)).encode())
        digest.update(np.ascontiguousarray(sample).tobytes())
    elif isinstance(sample, Mapping):
        for key in sorted(sample, key=str):
            digest.update(str(key).encode())
            _digest_sample(digest, sample[key])
    elif isinstance(sample, (list, tuple)):
        for item in sample:
            _digest_sample(digest, item)
    elif hasattr(sample, "tobytes"):  # PIL images
        digest.update(sample.tobytes())
    else:
        digest.update(repr(sample).encode())
