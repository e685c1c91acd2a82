"""Real photographs cut into x2 super-resolution patches, with no download.

scikit-image ships a handful of photographs inside its wheel. The training photographs and the
validation photographs are disjoint (a validation image is never seen in training); each photograph
is cut on a fixed grid, so the split and the patches are the same on every machine. The low-resolution
input of a patch is its anti-aliased bicubic downscale, quantised to 8 bits like a stored image.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
)
"""The colour photographs bundled with scikit-image (no network needed to load them)."""


def load_photo(name: str, max_side: int | None = None) -> Tensor:
    """Load a bundled scikit-image photograph as a float ``(3, H, W)`` tensor in [0, 1].

    Args:
        name: one of :data:`PHOTOS`.
        max_side: if given, a photograph whose longer side exceeds it is first downscaled
            (anti-aliased bilinear, aspect ratio kept) so that patches hold more than flat texture.

    Raises:
        ValueError: if ``name`` is not a bundled photograph.
    """
    if name not in PHOTOS:
        raise ValueError(f"Unknown photograph {name!r}; expected one of {', '.join(PHOTOS)}.")
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    x = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).float() / 255
    h, w = x.shape[-2:]
    if max_side is not None and max(h, w) > max_side:
        factor = max_side / max(h, w)
        size = (round(h * factor), round(w * factor))
        x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return x.clamp(0, 1)


def grid_patches(image: Tensor, size: int, min_std: float = 0.0) -> Tensor:
    """Cut ``image`` ``(3, H, W)`` into non-overlapping ``size`` x ``size`` patches on a centred grid.

    Patches whose standard deviation is below ``min_std`` (flat sky, the black border of the retina
    photograph) are dropped. Returns ``(N, 3, size, size)``, possibly with ``N = 0``.
    """
    h, w = image.shape[-2:]
    rows, cols = h // size, w // size
    top, left = (h - rows * size) // 2, (w - cols * size) // 2
    patches = [
        image[:, top + i * size : top + (i + 1) * size, left + j * size : left + (j + 1) * size]
        for i in range(rows)
        for j in range(cols)
    ]
    patches = [p for p in patches if p.std() >= min_std]
    return torch.stack(patches) if patches else image.new_zeros(0, 3, size, size)


def downscale(hr: Tensor, scale: int) -> Tensor:
    """Anti-aliased bicubic downscale of ``(N, 3, H, W)`` in [0, 1] by ``scale``, quantised to 8 bits."""
    lr = F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    return quantise(lr)


def quantise(x: Tensor) -> Tensor:
    """Round [0, 1] values to the nearest of 256 levels, as a stored 8-bit image would."""
    return (x.clamp(0, 1) * 255).round() / 255


class SRPatches(Dataset):
    """Pairs ``{"lr": (3, h, w), "hr": (3, h * scale, w * scale)}`` in [0, 1], stored as uint8."""

    def __init__(self, hr: Tensor, scale: int) -> None:
        self.hr = (quantise(hr) * 255).round().to(torch.uint8)
        self.lr = (downscale(hr, scale) * 255).round().to(torch.uint8)

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"lr": self.lr[index].float() / 255, "hr": self.hr[index].float() / 255}


class PhotoPatchesDataModule(L.LightningDataModule):
    """x2 (or x``scale``) super-resolution patches from scikit-image's photographs.

    Args:
        train_photos: photographs cut into training patches.
        val_photos: photographs cut into validation patches; must not overlap ``train_photos``.
        patch_size: side of a high-resolution training patch in pixels (a multiple of ``scale``).
        val_patch_size: side of a high-resolution validation patch in pixels (a multiple of ``scale``).
        scale: the super-resolution factor.
        max_side: photographs larger than this are downscaled first (``None`` keeps full size).
        min_std: patches flatter than this standard deviation are dropped.
        max_val_patches: keep at most this many validation patches, evenly spread (``None``: all).
        batch_size: training batch size.
        val_batch_size: validation batch size.
        num_workers: data loader worker processes.

    Raises:
        ValueError: for overlapping photograph lists or patch sizes that ``scale`` does not divide.
    """

    def __init__(
        self,
        train_photos: Sequence[str] = (
            "astronaut",
            "rocket",
            "hubble_deep_field",
            "immunohistochemistry",
            "retina",
        ),
        val_photos: Sequence[str] = ("chelsea", "coffee"),
        patch_size: int = 96,
        val_patch_size: int = 96,
        scale: int = 2,
        max_side: int | None = 512,
        min_std: float = 0.04,
        max_val_patches: int | None = None,
        batch_size: int = 4,
        val_batch_size: int = 8,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        overlap = sorted(set(train_photos) & set(val_photos))
        if overlap:
            raise ValueError(
                f"Expected disjoint `train_photos` and `val_photos`, but both contain {overlap}."
            )
        for name, size in (("patch_size", patch_size), ("val_patch_size", val_patch_size)):
            if size % scale:
                raise ValueError(f"Expected `{name}` to be a multiple of `scale`={scale}, but got {size}.")
        self.save_hyperparameters()
        self.train_set: SRPatches | None = None
        self.val_set: SRPatches | None = None

    def _patches(self, photos: Sequence[str], size: int) -> Tensor:
        hp = self.hparams
        parts = [grid_patches(load_photo(name, hp.max_side), size, hp.min_std) for name in photos]
        return torch.cat(parts)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.train_set is None:
            self.train_set = SRPatches(self._patches(hp.train_photos, hp.patch_size), hp.scale)
        if self.val_set is None:
            val = self._patches(hp.val_photos, hp.val_patch_size)
            if hp.max_val_patches is not None and len(val) > hp.max_val_patches:
                keep = torch.linspace(0, len(val) - 1, hp.max_val_patches).round().long()
                val = val[keep]
            self.val_set = SRPatches(val, hp.scale)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            batch_size=self.hparams.val_batch_size,
            shuffle=False,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )
