"""Folders of real photographs written as image files for the evaluation tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def save_images(folder: Path, images: torch.Tensor, names: Sequence[str] | None = None) -> list[Path]:
    """Write ``(n, 3, H, W)`` uint8 images to ``folder`` (created), as ``000.png``, ... or ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i:03d}.png" for i in range(images.shape[0])]
    paths = []
    for image, name in zip(images, names, strict=True):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def photo_folders(tmp_path: Path, photos: Callable[..., torch.Tensor]) -> Callable[..., tuple[Path, Path]]:
    """``photo_folders(n, size)`` -> ``(pred_dir, target_dir)``: photographs and degraded copies, same names."""

    def make(n: int, size: int) -> tuple[Path, Path]:
        target = photos(n, size, dtype=torch.uint8)
        noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0)) * 12
        pred = (target.float() + noise).round().clamp(0, 255).to(torch.uint8)
        pred_dir, target_dir = tmp_path / "pred", tmp_path / "target"
        save_images(pred_dir, pred)
        save_images(target_dir, target)
        return pred_dir, target_dir

    return make
