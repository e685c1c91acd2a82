"""ImageGridCallback: the first validation samples, laid out by key, sent to each kind of logger."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from percep_lightning.callbacks import ImageGridCallback

HEADER = 14  # the height of the title row above the tiles
SIZE, SCALE = 8, 2


class Pairs(Dataset):
    """``{"lr": (3, 4, 4), "hr": (3, 8, 8)}`` with a different constant-ish image per index."""

    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.hr = torch.rand(n, 3, SIZE, SIZE, generator=generator)
        self.lr = self.hr[:, :, ::SCALE, ::SCALE].clone()

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"lr": self.lr[i], "hr": self.hr[i]}


class Upscaler(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Conv2d(3, 3, 1)
        self.forward_calls = 0

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        return self.net(nn.functional.interpolate(lr, scale_factor=SCALE, mode="nearest"))

    def training_step(self, batch, batch_idx):
        return (self(batch["lr"]) - batch["hr"]).abs().mean()

    def validation_step(self, batch, batch_idx):
        return {"preds": self(batch["lr"]).clamp(0, 1), "target": batch["hr"]}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # lr 0: the outputs stay predictable


def _fit(
    tmp_path: Path, callback: ImageGridCallback, logger, max_epochs: int = 1, n_val: int = 5
) -> Upscaler:
    module = Upscaler()
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=max_epochs, limit_train_batches=1, logger=logger,
        callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=1, log_every_n_steps=1,
    )  # fmt: skip
    data = Pairs(n_val)
    trainer.fit(module, DataLoader(data, batch_size=2), DataLoader(data, batch_size=2))
    return module


def _tile(image: np.ndarray, row: int, column: int, padding: int = 2, header: int = HEADER) -> np.ndarray:
    """Tile (row, column) of a grid image as float (3, SIZE, SIZE) in [0, 1]."""
    top = header + padding + row * (SIZE + padding)
    left = padding + column * (SIZE + padding)
    return image[top : top + SIZE, left : left + SIZE].transpose(2, 0, 1).astype(np.float64) / 255


def _assert_tiles(image: Image.Image, module: Upscaler, rows: int) -> None:
    """Every tile equals its source image (one 8-bit step of tolerance for the quantisation)."""
    data = Pairs(5)
    pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (HEADER + 2 + rows * (SIZE + 2), 2 + 3 * (SIZE + 2), 3)
    with torch.no_grad():
        preds = module.net(nn.functional.interpolate(data.lr, scale_factor=SCALE, mode="nearest")).clamp(0, 1)
    lr_big = data.lr.repeat_interleave(SCALE, -2).repeat_interleave(SCALE, -1)  # nearest enlargement
    for row in range(rows):
        for column, expected in enumerate((lr_big, preds, data.hr)):
            np.testing.assert_allclose(
                _tile(pixels, row, column), expected[row].double().numpy(), atol=1 / 255
            )


def test_csv_logger_gets_png_files_of_the_first_samples(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version="")
    grid = ImageGridCallback(keys=["lr", "preds", "target"], num_samples=3, every_n_epochs=2)
    module = _fit(tmp_path, grid, logger, max_epochs=3)
    files = sorted((Path(logger.log_dir) / "grids").glob("*.png"))
    assert [f.name for f in files] == ["epoch_001.png"]  # every 2nd epoch, never the sanity check
    assert grid.last_paths == files
    _assert_tiles(Image.open(files[0]), module, rows=3)  # rows 0-1 from batch 0, row 2 from batch 1


def test_no_logger_writes_into_the_root_dir_and_runs_no_forward(tmp_path):
    grid = ImageGridCallback(keys=("lr", "preds", "target"), num_samples=8)
    module = _fit(tmp_path, grid, logger=False)
    assert grid.last_paths == [tmp_path / "grids" / "epoch_000.png"]
    # 1 training batch + 1 sanity batch + 3 validation batches: the callback itself never calls forward.
    assert module.forward_calls == 1 + 1 + 3
    _assert_tiles(Image.open(grid.last_paths[0]), module, rows=5)  # all 5 samples: fewer than 8


def test_tensorboard_logger_gets_the_image(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    grid = ImageGridCallback(keys=["lr", "preds", "target"], num_samples=2, name="val/samples")
    module = _fit(tmp_path, grid, logger)
    assert grid.last_paths == []  # TensorBoard took the image; no PNG unless dirpath is set
    events = EventAccumulator(logger.log_dir, size_guidance={IMAGES: 0})
    events.Reload()
    (logged,) = events.Images("val/samples")
    assert logged.step == 1  # the global step after the one training batch
    image = Image.open(io.BytesIO(logged.encoded_image_string))
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(grid.last_image))
    _assert_tiles(image, module, rows=2)


def test_dirpath_always_gets_a_png(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version="") if _has_tensorboard() else False
    grid = ImageGridCallback(num_samples=1, dirpath=tmp_path / "mine", titles=[])
    _fit(tmp_path, grid, logger)
    assert grid.last_paths == [tmp_path / "mine" / "epoch_000.png"]
    assert Image.open(grid.last_paths[0]).size == (2 + 2 * (SIZE + 2), 2 + SIZE + 2)  # no title row


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


# Weights & Biases and MLflow are not installed: loggers of their Lightning classes that record the calls
# of the public method the callback uses, without touching the packages.
class RecordingWandbLogger(WandbLogger):
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def log_image(self, key, images, step=None, **kwargs):
        self.calls.append({"key": key, "images": images, "step": step, **kwargs})


class RecordingMlflowClient:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def log_image(self, run_id, image, artifact_file=None, **kwargs):
        self.calls.append((run_id, image, artifact_file))


class RecordingMLFlowLogger(MLFlowLogger):
    def __init__(self) -> None:
        self.client = RecordingMlflowClient()

    @property
    def experiment(self):
        return self.client

    @property
    def run_id(self):
        return "run-7"


def _trainer(loggers, tmp_path, *, rank_zero=True, epoch=0):
    return SimpleNamespace(
        sanity_checking=False, is_global_zero=rank_zero, current_epoch=epoch, global_step=12,
        loggers=loggers, default_root_dir=str(tmp_path),
    )  # fmt: skip


def _one_epoch(grid, trainer, outputs, batch=None):
    grid.on_validation_epoch_start(trainer, None)
    grid.on_validation_batch_end(trainer, None, outputs, batch, 0)
    grid.on_validation_epoch_end(trainer, None)


def test_wandb_and_mlflow_loggers_get_the_image(tmp_path):
    wandb, mlflow = RecordingWandbLogger(), RecordingMLFlowLogger()
    grid = ImageGridCallback(num_samples=2, name="val/grid")
    outputs = {
        "preds": torch.rand(3, 3, 8, 8),
        "target": torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8),
    }
    _one_epoch(grid, _trainer([wandb, mlflow], tmp_path, epoch=4), outputs)
    (call,) = wandb.calls
    assert call["key"] == "val/grid" and call["step"] == 12 and call["images"] == [grid.last_image]
    assert call["caption"] == ["preds | target"]
    assert mlflow.client.calls == [("run-7", grid.last_image, "val/grid/epoch_004.png")]
    assert grid.last_paths == [] and not (tmp_path / "grids").exists()
    # uint8 grey target: shown as grey RGB, 0-255 unchanged
    pixels = np.asarray(grid.last_image)
    np.testing.assert_allclose(_tile(pixels, 1, 1)[0], outputs["target"][1, 0].double().numpy() / 255)
    np.testing.assert_allclose(_tile(pixels, 1, 1)[2], outputs["target"][1, 0].double().numpy() / 255)


def test_value_range_maps_to_black_and_white(tmp_path):
    grid = ImageGridCallback(keys=["x"], num_samples=1, value_range=(-1, 1), titles=[])
    x = torch.tensor([-1.0, 0.5, 1.0, 3.0]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    _one_epoch(grid, _trainer([], tmp_path), {"x": x})
    assert np.asarray(grid.last_image)[2:4, 2:4, 0].tolist() == [[0, 191], [255, 255]]  # 0.75 * 255 = 191.25


def test_only_rank_zero_logs(tmp_path):
    wandb = RecordingWandbLogger()
    grid = ImageGridCallback(num_samples=1)
    outputs = {"preds": torch.rand(1, 3, 4, 4), "target": torch.rand(1, 3, 4, 4)}  # every rank checks keys
    _one_epoch(grid, _trainer([wandb], tmp_path, rank_zero=False), outputs)
    assert wandb.calls == [] and grid.last_image is None and not (tmp_path / "grids").exists()


def test_errors(tmp_path):
    grid = ImageGridCallback(keys=["preds", "lr"])
    trainer = _trainer([], tmp_path)
    grid.on_validation_epoch_start(trainer, None)
    with pytest.raises(
        ValueError,
        match=r"`keys` names 'preds', which is neither in the validation_step output \(got \['pred'\]\) nor in "
        r"the batch \(got \['hr'\]\)",
    ):
        grid.on_validation_batch_end(trainer, None, {"pred": torch.rand(1, 3, 4, 4)}, {"hr": None}, 0)
    with pytest.raises(
        ValueError, match=r"expected 'preds' to be images of shape \(N, 1 or 3, H, W\), but got \(3, 4, 4\)"
    ):
        grid.on_validation_batch_end(trainer, None, {"preds": torch.rand(3, 4, 4)}, None, 0)
    with pytest.raises(TypeError, match=r"Expected `keys` to be a sequence of strings .* but got 'preds'"):
        ImageGridCallback(keys="preds")
    with pytest.raises(ValueError, match=r"Expected `keys` to name at least one image column"):
        ImageGridCallback(keys=[])
    with pytest.raises(
        ValueError, match=r"Expected one title per key \(2: \['preds', 'target'\]\), but got 1"
    ):
        ImageGridCallback(titles=["output"])
    with pytest.raises(ValueError, match=r"Expected `num_samples` to be >= 1, but got 0"):
        ImageGridCallback(num_samples=0)
    with pytest.raises(TypeError, match=r"Expected `every_n_epochs` to be an integer, but got float 1.5"):
        ImageGridCallback(every_n_epochs=1.5)
    with pytest.raises(ValueError, match=r"Expected `value_range` to be \(low, high\) with low < high"):
        ImageGridCallback(value_range=(1, 0))


@pytest.mark.parametrize("sanity_steps", [1, 0])
def test_key_typo_fails_on_the_first_validation_batch(tmp_path, sanity_steps):
    """Not after the first logging epoch: the sanity check (or epoch 0, without one) already raises."""
    grid = ImageGridCallback(keys=["noisy", "preds", "gt"], every_n_epochs=3)
    module = Upscaler()
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=3, limit_train_batches=1, limit_val_batches=1, logger=False,
        callbacks=[grid], enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", num_sanity_val_steps=sanity_steps,
    )  # fmt: skip
    data = Pairs(2)
    with pytest.raises(
        ValueError,
        match=r"`keys` names 'noisy', which is neither in the validation_step output \(got \['preds', "
        r"'target'\]\) nor in the batch \(got \['hr', 'lr'\]\)",
    ):
        trainer.fit(module, DataLoader(data, batch_size=2), DataLoader(data, batch_size=2))
    # raised before any training step (sanity check), or in the validation of epoch 0
    assert trainer.current_epoch == 0 and trainer.global_step == (0 if sanity_steps else 1)
