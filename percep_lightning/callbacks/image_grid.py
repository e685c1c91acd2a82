"""A callback that logs a grid of validation samples (e.g. input | preds | target) to the attached logger."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from percep_lightning.functional.inputs import check_int

__all__ = ["ImageGridCallback"]


class ImageGridCallback(pl.Callback):
    """Log a grid of the first validation samples, one row per sample and one column per key.

    Every ``every_n_epochs`` validation epochs (``(epoch + 1) % every_n_epochs == 0``, never during the
    sanity check), the first ``num_samples`` samples of the validation set are laid out as rows of
    ``keys`` (e.g. ``input | preds | target``) under a header of column titles, and the image is sent
    to every attached logger that takes images:

    * TensorBoard: ``SummaryWriter.add_image(name, image, global_step)``;
    * Weights & Biases: ``WandbLogger.log_image(key=name, images=[image], step=global_step)``;
    * MLflow: ``MlflowClient.log_image(run_id, image, artifact_file="<name>/epoch_XXX.png")``;
    * CSV, or no logger at all: a PNG file ``grids/epoch_XXX.png`` in the logger's directory (or in the
      trainer's ``default_root_dir``).

    The images are read from what ``validation_step`` returns (a dict), falling back to the batch (a
    dict) for a key the outputs lack, such as the low-resolution input of super-resolution: the
    callback runs no forward pass of its own. Columns of a smaller size are enlarged to the largest one
    with nearest-neighbour interpolation, so that the pixels of a low-resolution input stay visible.
    Only the global rank zero collects and logs (under DDP these are the first samples of its shard).

    Args:
        keys: the columns, each a key of the ``validation_step`` output or of the batch. The images are
            ``(N, C, H, W)`` with C 1 or 3, uint8 in [0, 255] or float in ``value_range``.
        num_samples: rows of the grid (fewer when the validation set is smaller).
        every_n_epochs: log on every n-th validation epoch only.
        titles: column titles drawn above the grid (default: the keys); empty strings and ``[]`` for none.
        name: the tag (TensorBoard), key (W&B) or artifact folder (MLflow) of the image.
        dirpath: write every grid as a PNG here as well, whatever the loggers (``None``: PNG files only
            for a CSV logger or no logger, as described above).
        value_range: the ``(low, high)`` range of float images, mapped to black and white (values
            outside are clamped).
        dataloader_idx: which validation dataloader feeds the grid when there are several.
        padding: pixels between tiles.

    Attributes:
        last_image: the last grid logged (a PIL image), ``None`` before the first.
        last_paths: the PNG files written for the last grid.

    Raises:
        TypeError: if ``keys`` or ``titles`` is a single string instead of a sequence of them, or an
            integer argument is not an integer.
        ValueError: if ``keys`` is empty, ``num_samples``, ``every_n_epochs``, ``dataloader_idx`` or
            ``padding`` is out of range, ``titles`` does not have one title per key, or ``value_range`` is not increasing;
            at the first validation batch of a fit (the sanity check's, when there is one), whether or
            not that epoch logs, if a key is in neither the outputs nor the batch (the message lists
            both), or an image is not ``(N, 1 or 3, H, W)``.

    Example:
        >>> from percep_lightning.callbacks import ImageGridCallback
        >>> grid = ImageGridCallback(keys=["lr", "preds", "target"], num_samples=4, every_n_epochs=2)
        >>> grid.titles
        ('lr', 'preds', 'target')
    """

    def __init__(
        self,
        keys: Sequence[str] = ("preds", "target"),
        num_samples: int = 8,
        every_n_epochs: int = 1,
        *,
        titles: Sequence[str] | None = None,
        name: str = "val/grid",
        dirpath: str | os.PathLike | None = None,
        value_range: Sequence[float] = (0.0, 1.0),
        dataloader_idx: int = 0,
        padding: int = 2,
    ) -> None:
        self.keys = _str_sequence(keys, "keys")
        if not self.keys:
            raise ValueError("Expected `keys` to name at least one image column, but got an empty sequence.")
        self.titles = self.keys if titles is None else _str_sequence(titles, "titles")
        if self.titles and len(self.titles) != len(self.keys):
            raise ValueError(
                f"Expected one title per key ({len(self.keys)}: {list(self.keys)}), but got "
                f"{len(self.titles)} titles: {list(self.titles)}."
            )
        self.num_samples = check_int(num_samples, "num_samples", minimum=1)
        self.every_n_epochs = check_int(every_n_epochs, "every_n_epochs", minimum=1)
        self.padding = check_int(padding, "padding", minimum=0)
        self.dataloader_idx = check_int(dataloader_idx, "dataloader_idx", minimum=0)
        if not isinstance(name, str) or not name:
            raise ValueError(f"Expected `name` to be a non-empty string, but got {name!r}.")
        self.name = name
        self.dirpath = Path(dirpath) if dirpath is not None else None
        low, high = (float(v) for v in value_range)
        if not low < high:
            raise ValueError(
                f"Expected `value_range` to be (low, high) with low < high, but got {value_range}."
            )
        self.value_range = (low, high)
        self.last_image: Image.Image | None = None
        self.last_paths: list[Path] = []
        self._rows: list[list[Tensor]] = []
        self._active = False
        self._keys_checked = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._keys_checked = False  # check `keys` again on the first batch of every fit or validate

    def _should_log(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return False
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []
        self._active = self._should_log(trainer)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != self.dataloader_idx:
            return
        if not self._keys_checked:  # on every rank, so that a typo stops all processes at once
            for key in self.keys:
                self._images(key, outputs, batch)
            self._keys_checked = True
        missing = self.num_samples - len(self._rows)
        if not self._active or missing <= 0:
            return
        columns = [self._column(key, outputs, batch)[:missing] for key in self.keys]
        count = min(len(c) for c in columns)
        self._rows.extend([c[i] for c in columns] for i in range(count))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active or not self._rows:
            return
        self._active = False
        image = self._render(self._rows)
        self._rows = []
        self.last_image = image
        self.last_paths = []
        epoch = trainer.current_epoch
        took_image = False
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.name, pil_to_tensor(image), global_step=trainer.global_step)
            elif isinstance(logger, WandbLogger):
                logger.log_image(
                    key=self.name, images=[image], step=trainer.global_step, caption=[" | ".join(self.titles)]
                )
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_image(
                    logger.run_id, image, artifact_file=f"{self.name}/epoch_{epoch:03d}.png"
                )
            elif isinstance(logger, CSVLogger) and self.dirpath is None:
                self._save(image, Path(logger.log_dir) / "grids", epoch)
            else:
                continue
            took_image = True
        if self.dirpath is not None:
            self._save(image, self.dirpath, epoch)
        elif not took_image:
            self._save(image, Path(trainer.default_root_dir) / "grids", epoch)

    def _column(self, key: str, outputs: Any, batch: Any) -> Tensor:
        """The images of ``key`` from the outputs (else the batch) as float (N, 3, H, W) in [0, 1] on CPU."""
        images = self._images(key, outputs, batch)[: self.num_samples].detach().cpu()
        if images.dtype == torch.uint8:
            images = images.float() / 255
        else:
            low, high = self.value_range
            images = (images.float() - low) / (high - low)
        return images.clamp(0, 1).expand(-1, 3, -1, -1)

    @staticmethod
    def _images(key: str, outputs: Any, batch: Any) -> Tensor:
        """The ``(N, 1 or 3, H, W)`` images of ``key`` from the outputs, else the batch; a ValueError if absent."""
        if isinstance(outputs, Mapping) and key in outputs:
            images = outputs[key]
        elif isinstance(batch, Mapping) and key in batch:
            images = batch[key]
        else:
            out_keys = sorted(map(str, outputs)) if isinstance(outputs, Mapping) else type(outputs).__name__
            batch_keys = sorted(map(str, batch)) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(
                f"ImageGridCallback: `keys` names {key!r}, which is neither in the validation_step output "
                f"(got {out_keys}) nor in the batch (got {batch_keys}). Return a dict holding it from "
                "validation_step, or change `keys`."
            )
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"ImageGridCallback: expected {key!r} to be images of shape (N, 1 or 3, H, W), but got {shape}."
            )
        return images

    def _render(self, rows: list[list[Tensor]]) -> Image.Image:
        """The rows as one RGB image: tiles enlarged to the largest size, titles above the columns."""
        height = max(t.shape[-2] for row in rows for t in row)
        width = max(t.shape[-1] for row in rows for t in row)
        tiles = [
            F.interpolate(t[None], size=(height, width), mode="nearest")[0]
            if t.shape[-2:] != (height, width)
            else t
            for row in rows
            for t in row
        ]
        pad, columns = self.padding, len(self.keys)
        grid = torch.ones(3, pad + len(rows) * (height + pad), pad + columns * (width + pad))
        for i, tile in enumerate(tiles):
            top, left = pad + (i // columns) * (height + pad), pad + (i % columns) * (width + pad)
            grid[:, top : top + height, left : left + width] = tile
        body = Image.fromarray((grid * 255).round().byte().permute(1, 2, 0).numpy())
        if not any(self.titles):
            return body
        header = 14
        image = Image.new("RGB", (body.width, body.height + header), "white")
        image.paste(body, (0, header))
        draw = ImageDraw.Draw(image)
        column = body.width / len(self.titles)
        for i, title in enumerate(self.titles):
            while len(title) > 1 and draw.textlength(title) > column - 2:  # cut what its column cannot hold
                title = title[:-2] + "."
            draw.text((i * column + (column - draw.textlength(title)) / 2, 1), title, fill="black")
        return image

    def _save(self, image: Image.Image, directory: Path, epoch: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"epoch_{epoch:03d}.png"
        image.save(path)
        self.last_paths.append(path)


def _str_sequence(value: Any, argument: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(
            f"Expected `{argument}` to be a sequence of strings such as ['preds', 'target'], but got {value!r}."
        )
    return tuple(str(v) for v in value)
