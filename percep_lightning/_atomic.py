"""Atomic file writes that follow the umask: a temporary file beside the target, then ``os.replace``.

:func:`tempfile.mkstemp` creates its file with mode 0600 whatever the umask, and ``os.replace`` keeps that
mode, so outputs written through it (JSON and CSV records, ``.npz`` statistics, downloaded weights) end up
readable by their owner only. :func:`create_temp` makes the temporary file with mode 0666 and lets the
operating system apply the umask, as ``open(path, "w")`` would.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_open", "create_temp"]

_ATTEMPTS = 100


def create_temp(folder: str | os.PathLike[str], prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    """Create a new, empty file ``folder/<prefix><random><suffix>`` and open it for writing.

    Like :func:`tempfile.mkstemp`, but the file mode is ``0666`` minus the process umask.

    Args:
        folder: the folder of the file (the same as the final file's, so that ``os.replace`` is atomic).
        prefix: the start of the file name.
        suffix: the end of the file name.

    Returns:
        ``(fd, path)``: the open file descriptor (write only) and the file's path.

    Raises:
        FileExistsError: if no unused name was found (100 tries).
        OSError: if the folder is missing or not writable.

    Example:
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     fd, path = create_temp(folder, ".out.")
        ...     os.close(fd)
        ...     os.path.basename(path).startswith(".out.")
        True
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(_ATTEMPTS):
        path = os.path.join(os.fspath(folder), f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(
        f"Could not create a temporary file in {os.fspath(folder)!r}: every name was taken."
    )


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: object) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success, rename it over ``path``.

    An exception inside the block removes the temporary file and leaves ``path`` untouched. The new file
    follows the umask (see :func:`create_temp`).

    Args:
        path: the file to write.
        mode: ``"wb"`` or ``"w"`` (text; ``kwargs`` such as ``encoding`` and ``newline`` go to ``open``).
        **kwargs: passed to :func:`os.fdopen`.

    Raises:
        ValueError: for a mode other than ``"w"`` or ``"wb"``.
        OSError: if the folder of ``path`` is missing or not writable, or ``path`` is a folder.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     with atomic_open(Path(folder) / "out.txt", "w", encoding="utf-8") as f:
        ...         _ = f.write("done")
        ...     (Path(folder) / "out.txt").read_text()
        'done'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"Expected `mode` to be 'w' or 'wb', but got {mode!r}.")
    target = Path(path).expanduser()
    fd, tmp = create_temp(target.resolve().parent, f".{target.name}.")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:  # type: ignore[call-overload]
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
