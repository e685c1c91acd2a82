"""A tiny image-to-image LightningModule and its data, importable by spawned DDP processes.

The generated images depend only on the inputs (the trainable parameter does not enter them), so every
run, on any number of processes, validates on exactly the same images.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _distributed import leave_group_at_exit
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset

from percep_lightning.callbacks.image_metrics import ImageMetricsCallback

SIZE = 32


def make_image(index: int, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """A smooth deterministic float image in [0, 1], (3, size, size)."""
    generator = torch.Generator().manual_seed(1000 * seed + index)
    coarse = torch.rand(1, 3, 6, 6, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0].clamp(0, 1)


class PairDataset(Dataset):
    """``(input, target)`` pairs; the input is a darker, noisier copy of the target."""

    def __init__(self, n: int, seed: int = 0, size: int = SIZE) -> None:
        self.n, self.seed, self.size = n, seed, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        target = make_image(index, self.seed, self.size)
        noise = make_image(index + 7919, self.seed + 1, self.size)
        return (0.7 * target + 0.3 * noise).clamp(0, 1), target


class TinyModule(LightningModule):
    """Training touches one scalar; validation returns ``{"preds", "target", "content"}``."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A fixed image transform: blur and brighten (independent of the trained parameter).
        return (F.avg_pool2d(x, 3, stride=1, padding=1) * 1.1).clamp(0, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return ((self.scale * x - y) ** 2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"preds": self(x), "target": y, "content": x}

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self.validation_step(batch, batch_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class StyleModule(TinyModule):
    """Also returns ``"style"`` images (the mirrored targets), for ArtFID."""

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        out = super().validation_step(batch, batch_idx)
        out["style"] = out["target"].flip(-1)
        return out


class Recorder(Callback):
    """Records the logged ``val/`` values per epoch; with ``path``, writes them as JSON (one file per rank)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.values: dict[int, dict[str, float]] = {}
        self.real_forwarded: dict[
            int, int
        ] = {}  # real images run through a feature network so far, per epoch

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            leave_group_at_exit()  # Lightning never destroys the group it makes (see tests/_distributed.py)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        found = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.values[trainer.current_epoch] = found
        for callback in trainer.callbacks:
            if isinstance(callback, ImageMetricsCallback):
                self.real_forwarded[trainer.current_epoch] = callback.real_images_forwarded
        if self.path is not None:
            target = Path(self.path) / f"rank{trainer.global_rank}.json"
            record = {"values": self.values, "real_forwarded": self.real_forwarded}
            target.write_text(json.dumps(record))


def loaders(n_val: int, batch_size: int = 2) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(PairDataset(2, seed=5), batch_size=2)
    val = DataLoader(PairDataset(n_val), batch_size=batch_size, shuffle=False)
    return train, val


def validation_outputs(
    n_val: int, batch_size: int = 2, module: type[TinyModule] = TinyModule
) -> dict[str, torch.Tensor]:
    """Every ``validation_step`` output of :func:`fit`'s validation set, concatenated in dataset order."""
    model = module()
    with torch.no_grad():
        outputs = [model.validation_step(batch, i) for i, batch in enumerate(loaders(n_val, batch_size)[1])]
    return {key: torch.cat([out[key] for out in outputs]) for key in outputs[0]}


def fit(
    callback_kwargs: dict[str, Any],
    root: str,
    *,
    n_val: int = 7,
    batch_size: int = 2,
    max_epochs: int = 1,
    devices: int = 1,
    strategy: str = "auto",
    record_to: str | None = None,
    module: type[TinyModule] = TinyModule,
) -> Recorder:
    """Fit ``module`` (:class:`TinyModule`) with an :class:`ImageMetricsCallback`; returns the recorder."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*FI?D statistics from .* samples.*")
    recorder = Recorder(record_to)
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_epochs=max_epochs,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[ImageMetricsCallback(**callback_kwargs), recorder],
    )
    train, val = loaders(n_val, batch_size)
    trainer.fit(module(), train_dataloaders=train, val_dataloaders=val)
    return recorder
