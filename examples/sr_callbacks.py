"""A callback that saves a (low-res input | output | ground truth) grid every validation epoch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid


class SRGridCallback(L.Callback):
    """Save validation samples as rows of (low-res input | output | ground truth).

    The samples are spread over the validation batches (the first samples of each batch), so that a
    grid shows several validation photographs, and they are the same ones every epoch.

    The grid is written to ``dirpath/epoch_XXX.png`` and, when a :class:`TensorBoardLogger` is
    attached, sent to it as the image ``val/grid``. The low-res input is enlarged with nearest
    neighbours so that its pixels stay visible.

    Args:
        dirpath: where the PNG files go (the example passes a folder of the Hydra run dir).
        num_samples: rows of the grid.
        input_key: key of the low-res input in the validation batch.
        preds_key: key of the output in the dict returned by ``validation_step``.
        target_key: key of the ground truth in that dict.

    Raises:
        ValueError: if ``num_samples`` is not positive.
    """

    COLUMNS = ("low-res input", "output", "ground truth")

    def __init__(
        self,
        dirpath: str | Path,
        num_samples: int = 4,
        input_key: str = "lr",
        preds_key: str = "preds",
        target_key: str = "target",
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"Expected `num_samples` to be a positive integer, but got {num_samples}.")
        self.dirpath = Path(dirpath)
        self.num_samples = num_samples
        self.input_key, self.preds_key, self.target_key = input_key, preds_key, target_key
        self._rows: list[Tensor] = []
        self.last_path: Path | None = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        missing = self.num_samples - len(self._rows)
        if missing <= 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        num_batches = trainer.num_val_batches[dataloader_idx] if trainer.num_val_batches else 1
        take = min(missing, math.ceil(self.num_samples / max(1, int(num_batches))))
        preds = outputs[self.preds_key][:take].detach().float().cpu()
        target = outputs[self.target_key][:take].detach().float().cpu()
        low = batch[self.input_key][:take].detach().float().cpu()
        low = F.interpolate(low, size=target.shape[-2:], mode="nearest")
        for row in zip(low, preds, target, strict=True):
            self._rows.append(torch.stack(row).clamp(0, 1))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._rows or trainer.sanity_checking or not trainer.is_global_zero:
            return
        grid = make_grid(torch.cat(self._rows), nrow=3, padding=2, pad_value=1.0)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        self.last_path = self.dirpath / f"epoch_{trainer.current_epoch:03d}.png"
        _with_header(grid, self.COLUMNS).save(self.last_path)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/grid", grid, global_step=trainer.global_step)
        self._rows = []


def _with_header(grid: Tensor, titles: tuple[str, ...], height: int = 14) -> Image.Image:
    """The grid as a PIL image with one title per column above it."""
    body = to_pil_image(grid.clamp(0, 1))
    image = Image.new("RGB", (body.width, body.height + height), "white")
    image.paste(body, (0, height))
    draw = ImageDraw.Draw(image)
    column = body.width / len(titles)
    for i, title in enumerate(titles):
        width = draw.textlength(title)
        draw.text((i * column + (column - width) / 2, 1), title, fill="black")
    return image
