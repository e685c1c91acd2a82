"""FID statistics files: the pytorch-fid ``.npz`` format (arrays ``mu`` and ``sigma``).

Reference statistics computed once (by pytorch-fid's ``--save-stats``, torch-fidelity, or
:meth:`~percep_lightning.metrics.FrechetInceptionDistance.real_statistics`) are saved and loaded here and
fixed in a metric with :meth:`~percep_lightning.metrics.FrechetInceptionDistance.set_real_statistics`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np
import torch
from torch import Tensor

from percep_lightning.functional.fid import _check_statistics

__all__ = ["load_stats", "save_stats"]


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
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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
