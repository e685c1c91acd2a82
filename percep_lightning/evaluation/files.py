"""Image folders: listing, decoding (in DataLoader workers) and batching of same-sized images.

Accepted files: ``.png``, ``.jpg``/``.jpeg``, ``.webp``, ``.bmp``, ``.tif``/``.tiff`` (any case), 8- or
16-bit. Every image becomes ``(3, H, W)``: 8-bit files as ``uint8`` in [0, 255]; 16-bit files as
``float32`` in [0, 1] (``value / 65535``), so the paired metrics see their full precision and the
Inception metrics round them to 8 bits as they do any float image. Grey images are repeated to three
channels; an alpha channel is dropped, with one warning per folder.

A file that cannot be decoded does not stop a worker: the worker returns the error, and the main process
raises an :class:`EvaluationError` naming the file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from percep_lightning.evaluation.errors import EvaluationError

__all__ = ["IMAGE_EXTENSIONS", "EvaluationError", "ImageFiles", "decode_image", "list_images"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
"""File name endings read as images (compared case-insensitively)."""


def list_images(
    folder: str | os.PathLike[str], *, recursive: bool = False, name: str = "folder"
) -> list[str]:
    """The image files of ``folder`` as sorted relative POSIX paths.

    Args:
        folder: the directory to list.
        recursive: also list sub-directories (relative paths then contain ``/``).
        name: how error messages call the folder (``"PRED_DIR"``, ``"--content"``, ...).

    Returns:
        Relative paths, sorted by their string.

    Raises:
        EvaluationError: if ``folder`` is missing, not a directory, or holds no image file.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for f in ("b.png", "a.JPG", "notes.txt"):
        ...     _ = (d / f).write_bytes(b"")
        >>> list_images(d)
        ['a.JPG', 'b.png']
    """
    root = Path(folder)
    if not root.exists():
        raise EvaluationError(f"{name} {str(root)!r} does not exist.")
    if not root.is_dir():
        raise EvaluationError(f"Expected {name} {str(root)!r} to be a directory of images, but it is a file.")
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = sorted(
        p.relative_to(root).as_posix()
        for p in candidates
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not files:
        where = " (searched recursively)" if recursive else " (add --recursive to search sub-directories)"
        raise EvaluationError(
            f"{name} {str(root)!r} holds no image file ({', '.join(IMAGE_EXTENSIONS)}){where}."
        )
    return files


def decode_image(path: str | os.PathLike[str]) -> tuple[Tensor, bool]:
    """Read one image file as a ``(3, H, W)`` tensor.

    Args:
        path: the image file.

    Returns:
        ``(image, had_alpha)``: ``uint8`` in [0, 255] for 8-bit files, ``float32`` in [0, 1] for 16-bit
        ones; ``had_alpha`` tells whether an alpha channel was dropped.

    Raises:
        OSError, ValueError: if the file cannot be decoded (Pillow's error).

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "grey.png"
        >>> Image.new("L", (4, 2), 7).save(path)
        >>> image, had_alpha = decode_image(path)
        >>> image.shape, image.dtype, int(image.max()), had_alpha
        (torch.Size([3, 2, 4]), torch.uint8, 7, False)
    """
    from PIL import Image

    with Image.open(path) as opened:
        opened.load()
        mode = opened.mode
        had_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode == "P" and "transparency" in opened.info
        )
        if mode.startswith("I;16") or mode == "I":
            array = np.asarray(opened, dtype=np.float32) / 65535.0
            pixels = torch.from_numpy(np.ascontiguousarray(array)).clamp_(0, 1)
        elif mode == "F":
            raise ValueError(f"32-bit float images (mode {mode}) are not supported")
        else:
            if mode not in ("RGB", "L"):
                opened = opened.convert("RGBA" if had_alpha else "RGB")
            pixels = torch.from_numpy(np.array(opened, dtype=np.uint8, copy=True))
    if pixels.ndim == 2:
        pixels = pixels.unsqueeze(-1)
    pixels = pixels[..., :1] if pixels.shape[-1] == 2 else pixels[..., :3]  # LA -> L, RGBA -> RGB
    return pixels.permute(2, 0, 1).expand(3, -1, -1).contiguous(), had_alpha


@dataclass(frozen=True)
class Item:
    """One decoded sample: its position, the images (one per folder) or the error that stopped decoding."""

    index: int
    images: tuple[Tensor, ...] | None
    error: str | None
    alpha: tuple[bool, ...]


class ImageFiles(Dataset):
    """Tuples of image files decoded together: ``files[i]`` lists one path per folder.

    Items are :class:`Item` instances; a decoding error is returned, not raised, so that the main process
    reports it with the file name (see :func:`iter_batches`).

    Args:
        files: one tuple of paths per sample (a single folder: 1-tuples; pairs: 2-tuples).
        indices: the global position of each sample (a shard of the dataset keeps its positions).
    """

    def __init__(self, files: Sequence[tuple[Path, ...]], indices: Sequence[int]) -> None:
        self.files = list(files)
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Item:
        images, alpha = [], []
        for path in self.files[i]:
            try:
                image, had_alpha = decode_image(path)
            except Exception as err:  # noqa: BLE001 (reported with the file name by the main process)
                return Item(self.indices[i], None, f"Could not read image {str(path)!r}: {err}", ())
            images.append(image)
            alpha.append(had_alpha)
        sizes = [tuple(x.shape[-2:]) for x in images]
        if len(set(sizes)) > 1:
            described = " and ".join(
                f"{str(p)!r} ({h}x{w})" for p, (h, w) in zip(self.files[i], sizes, strict=True)
            )
            return Item(self.indices[i], None, f"Paired images differ in size (HxW): {described}.", ())
        return Item(self.indices[i], tuple(images), None, tuple(alpha))


def _collate(items: list[Item]) -> tuple[list[Item], list[Batch]]:
    """The samples' reports, and their images stacked into same-size runs, in the worker that decoded them.

    Stacking in the worker sends each run to the main process as one shared-memory tensor per folder; sent
    image by image, each arrived as its own shared segment to map and copy in the main process (about
    10 ms per batch of sixteen 256x256 pairs). The images leave the reports, which keep the rest.
    """
    if any(item.error is not None for item in items):
        return items, []
    runs = list(_same_size_runs(items))
    return [Item(item.index, None, None, item.alpha) for item in items], runs


@dataclass
class Batch:
    """Same-sized samples stacked: ``images[k]`` is ``(n, 3, H, W)`` for folder ``k``."""

    indices: Tensor
    images: tuple[Tensor, ...]


def iter_batches(
    dataset: ImageFiles,
    *,
    batch_size: int,
    num_workers: int,
    folder_names: Sequence[str],
    progress: bool,
    description: str,
) -> Iterator[Batch]:
    """Decode ``dataset`` in DataLoader workers and yield batches of samples of equal image sizes.

    Consecutive samples are batched ``batch_size`` at a time; a batch holding several image sizes is
    split into runs of one size (folders of one size, the usual case, give full batches).

    Args:
        dataset: the files to decode.
        batch_size: samples decoded and run together.
        num_workers: DataLoader worker processes (0 decodes in the main process).
        folder_names: names of the folders for messages, one per element of the file tuples.
        progress: show a progress bar on stderr.
        description: the progress bar's label.

    Raises:
        EvaluationError: naming the file, for an image that cannot be decoded.
    """
    from tqdm.auto import tqdm

    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    warned = [False] * len(folder_names)
    with tqdm(total=len(dataset), desc=description, unit="img", disable=not progress, leave=False) as bar:
        for items, runs in loader:
            for item in items:
                if item.error is not None:
                    raise EvaluationError(item.error)
                for k, had_alpha in enumerate(item.alpha):
                    if had_alpha and not warned[k]:
                        warned[k] = True
                        warnings.warn(
                            f"{folder_names[k]} holds images with an alpha channel (first: "
                            f"{str(dataset.files[dataset.indices.index(item.index)][k])!r}); it is dropped.",
                            UserWarning,
                            stacklevel=2,
                        )
            yield from runs
            bar.update(len(items))


def _same_size_runs(items: list[Item]) -> Iterator[Batch]:
    start = 0
    for end in range(1, len(items) + 1):
        if end == len(items) or _shapes(items[end]) != _shapes(items[start]):
            run = items[start:end]
            yield Batch(
                torch.tensor([it.index for it in run], dtype=torch.long),
                tuple(
                    _stack([it.images[k] for it in run])  # type: ignore[index]
                    for k in range(len(run[0].images))  # type: ignore[arg-type]
                ),
            )
            start = end


def _shapes(item: Item) -> tuple[tuple[int, ...], ...]:
    return tuple((tuple(x.shape), x.dtype) for x in item.images)  # type: ignore[union-attr]


def _stack(images: list[Tensor]) -> Tensor:
    return torch.stack(images)
