"""FID statistics files: the pytorch-fid ``.npz`` format (arrays ``mu`` and ``sigma``), and their cache.

Reference statistics computed once (by pytorch-fid's ``--save-stats``, torch-fidelity, or
:meth:`~percep_lightning.metrics.FrechetInceptionDistance.real_statistics`) are saved and loaded here and
fixed in a metric with :meth:`~percep_lightning.metrics.FrechetInceptionDistance.set_real_statistics`.

The real-statistics cache of the validation callback and of ``percep-lightning evaluate`` lives here too:
an entry is named by a key, the hash of everything the statistics depend on (:func:`stats_key`, with
:func:`weights_digest` of the Inception weights), and stored as a pytorch-fid ``.npz`` that also carries
the image count, a checksum of the images and optionally the features themselves
(:func:`write_cached_stats`, :func:`read_cached_stats`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from percep_lightning._atomic import create_temp
from percep_lightning.backbones.extractor import module_digest
from percep_lightning.functional.fid import _check_statistics

__all__ = [
    "CACHE_FILE_PREFIX",
    "cached_stats_path",
    "load_stats",
    "read_cached_stats",
    "save_stats",
    "stats_key",
    "weights_digest",
    "write_cached_stats",
]

CACHE_FILE_PREFIX = "fid_real_stats-"
"""File names of cached statistics: this prefix, then the first 24 hex digits of the key."""
ENTRY_FORMAT = 1
"""The version of a cache entry's arrays, stored in it as ``format`` (entries without it are version 1)."""


def save_stats(path: str | os.PathLike[str], mu: Tensor, sigma: Tensor) -> None:
    """Write ``mu`` and ``sigma`` to ``path`` in the pytorch-fid ``.npz`` format (keys ``mu``, ``sigma``).

    The file is written atomically: to a temporary file in the same folder, then renamed over ``path``,
    so a reader never sees a half-written file. The name is used as given (no ``.npz`` is appended).

    Args:
        path: destination file; its folder must exist.
        mu: mean, ``(D,)``.
        sigma: covariance, ``(D, D)``.

    Raises:
        TypeError: if ``mu`` or ``sigma`` is not a floating-point tensor.
        ValueError: on wrong or mismatched shapes or NaN/Inf values.
        FileNotFoundError: if the folder of ``path`` does not exist.

    Example:
        >>> import os, tempfile, torch
        >>> from percep_lightning.metrics import load_stats, save_stats
        >>> path = os.path.join(tempfile.mkdtemp(), "stats.npz")
        >>> save_stats(path, torch.zeros(2), torch.eye(2))
        >>> load_stats(path)
        (tensor([0., 0.], dtype=torch.float64), tensor([[1., 0.],
                [0., 1.]], dtype=torch.float64))
    """
    _check_statistics(mu, sigma, "mu", "sigma")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot write FID statistics to {path!r}: folder {folder!r} does not exist.")
    mu_np = mu.detach().to("cpu", torch.float64).numpy()
    sigma_np = sigma.detach().to("cpu", torch.float64).numpy()
    fd, tmp_path = create_temp(folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mu=mu_np, sigma=sigma_np)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)
        raise


def load_stats(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """Read ``(mu, sigma)`` from a pytorch-fid ``.npz`` file (keys ``mu`` and ``sigma``).

    Args:
        path: a file written by :func:`save_stats`, pytorch-fid (``--save-stats``) or ``numpy.savez``.

    Returns:
        ``(mu, sigma)`` as float64 CPU tensors, shapes ``(D,)`` and ``(D, D)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not an ``.npz`` archive, lacks ``mu`` or ``sigma``, or holds arrays of
            wrong or mismatched shapes or NaN/Inf values.

    Example:
        >>> import os, tempfile, numpy, torch
        >>> from percep_lightning.metrics import load_stats
        >>> path = os.path.join(tempfile.mkdtemp(), "ref.npz")
        >>> numpy.savez(path, mu=numpy.ones(2), sigma=numpy.eye(2))
        >>> mu, sigma = load_stats(path)
        >>> mu.shape, sigma.shape
        (torch.Size([2]), torch.Size([2, 2]))
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FID statistics file {path!r} does not exist.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"Expected {path!r} to be an .npz file with arrays 'mu' and 'sigma': {err}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"Expected {path!r} to be an .npz archive with arrays 'mu' and 'sigma', but got a .npy file."
        )
    with archive:
        missing = [key for key in ("mu", "sigma") if key not in archive.files]
        if missing:
            raise ValueError(
                f"Expected {path!r} to hold arrays 'mu' and 'sigma', but it lacks {missing}; it has {archive.files}."
            )
        mu = torch.from_numpy(np.asarray(archive["mu"], dtype=np.float64))
        sigma = torch.from_numpy(np.asarray(archive["sigma"], dtype=np.float64))
    _check_statistics(mu, sigma, "mu", "sigma")
    return mu, sigma


# ---------------------------------------------------------------------- the real-statistics cache


def stats_key(fields: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of ``fields`` as sorted JSON: the name of a cache entry.

    Example:
        >>> a = stats_key({"weights": "w", "resize": "tensorflow"})
        >>> len(a), a == stats_key({"resize": "tensorflow", "weights": "w"})
        (64, True)
    """
    return hashlib.sha256(json.dumps(dict(fields), sort_keys=True, default=str).encode()).hexdigest()


def cached_stats_path(directory: str | os.PathLike[str], key: str) -> Path:
    """The file of the entry ``key`` in ``directory``."""
    return Path(directory) / f"{CACHE_FILE_PREFIX}{key[:24]}.npz"


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_digest(weights: Any, module: nn.Module) -> str:
    """SHA-256 of the weights ``module`` was built from, computed once per file (or per module).

    A weights file is identified by its path, size and modification time, so a process hashes it once
    however many callbacks or runs load it; other weights (``"default"``, a state dict, random) are
    hashed from the module's tensors once per module.
    """
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        stat = os.stat(weights)
        file_key = (os.path.realpath(weights), stat.st_size, stat.st_mtime_ns)
        if file_key not in _FILE_DIGESTS:
            digest = hashlib.sha256()
            with open(weights, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
            _FILE_DIGESTS[file_key] = digest.hexdigest()
        return _FILE_DIGESTS[file_key]
    return module_digest(module)


def read_cached_stats(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a cache entry written by :func:`write_cached_stats`.

    Returns:
        ``{"mu", "sigma", "num_samples", "fingerprint"}``, plus ``"features"`` (``(n, D)`` float32) when
        the entry holds them.

    Raises:
        OSError, KeyError, ValueError: for a missing, unreadable or incomplete file, or one of a newer
            entry format than :data:`ENTRY_FORMAT`.
    """
    mu, sigma = load_stats(path)
    with np.load(path, allow_pickle=False) as archive:
        version = int(archive["format"]) if "format" in archive.files else 1
        if version > ENTRY_FORMAT:
            raise ValueError(
                f"{os.fspath(path)!r} is a statistics entry of format {version}, written by a newer percep_lightning; "
                f"this version reads format {ENTRY_FORMAT} and computes the statistics again."
            )
        entry: dict[str, Any] = {
            "mu": mu,
            "sigma": sigma,
            "num_samples": int(archive["num_samples"]),
            "fingerprint": [int(v) for v in archive["fingerprint"]],
        }
        if "features" in archive.files:
            entry["features"] = torch.from_numpy(np.asarray(archive["features"], dtype=np.float32))
    return entry


def write_cached_stats(
    path: str | os.PathLike[str],
    mu: Tensor,
    sigma: Tensor,
    num_samples: int,
    fingerprint: list[int],
    features: Tensor | None = None,
) -> None:
    """Write a cache entry atomically: the pytorch-fid ``.npz`` (``mu``, ``sigma``) plus the count, a checksum
    of the images and optionally their ``(n, D)`` features (for metrics such as KID that need them).

    The folder is created if needed. A reader never sees a half-written file.

    Raises:
        OSError: if the file cannot be written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        arrays = {
            "mu": mu.detach().to("cpu", torch.float64).numpy(),
            "sigma": sigma.detach().to("cpu", torch.float64).numpy(),
            "num_samples": np.int64(num_samples),
            "fingerprint": np.asarray(fingerprint, dtype=np.int64),
            "format": np.int64(ENTRY_FORMAT),
        }
        if features is not None:
            arrays["features"] = features.detach().to("cpu", torch.float32).numpy()
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)
