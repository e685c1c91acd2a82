"""examples/train.py end to end through Hydra's compose API, and its ``pretrained`` switch.

The end-to-end run is tiny (one epoch, two training batches, random backbones) but goes through the
same ``run(cfg)`` as ``python examples/train.py``: metrics logged, grid and plot written, and the
checkpoint holds the network but none of the loss's or the metrics' pretrained backbones.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _load_train_module():
    spec = importlib.util.spec_from_file_location("percep_example_train", ROOT / "examples" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


train = _load_train_module()

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "data.train_photos=[astronaut]",
    "data.val_photos=[chelsea]",
    "data.patch_size=48",
    "data.val_patch_size=48",
    "data.max_val_patches=4",
    "data.batch_size=2",
    "data.val_batch_size=2",
    "model.net.num_blocks=1",
    "callbacks.image_metrics.options.is.splits=2",
    "callbacks.image_grid.num_samples=2",
]


def _compose(overrides: list[str], output_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"output_dir={output_dir}"])


@pytest.mark.slow
def test_example_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _compose([*TINY, "pretrained=false"], tmp_path)
    result = train.run(cfg)

    # Metrics logged: the image metrics, the PSNR and every loss part.
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        columns = set(next(csv.reader(f)))
    # all from the callback, PSNR and SSIM included
    assert {"val/fid", "val/is", "val/is_std", "val/cfsd", "val/psnr", "val/ssim"} <= columns
    parts = {c for c in columns if c.startswith("train/loss/")}
    assert len(parts) >= 2, columns
    history = result["history"]
    assert set(history) == {0}
    for name in ("val/fid", "val/is", "val/cfsd", "val/psnr"):
        assert torch.isfinite(torch.tensor(history[0][name])), name

    # What the user sees: the table, one grid per validation epoch, the plot.
    out = capsys.readouterr()
    assert "val/fid" in out.out and "epoch" in out.out
    assert out.err.count("RANDOMLY INITIALISED BACKBONES") == 1
    assert (tmp_path / "grids" / "epoch_000.png").stat().st_size > 0
    assert (tmp_path / "metrics.png").stat().st_size > 0
    assert result["plot"] == tmp_path / "metrics.png"

    # The checkpoint: the network, and no backbone of the loss (VGG) or of the metrics (Inception, VGG).
    checkpoints = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 1
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=False)["state_dict"]
    net_keys = {f"net.{k}" for k in result["model"].net.state_dict()}
    assert net_keys <= set(state)
    others = {k: v for k, v in state.items() if k not in net_keys}
    assert sum(v.numel() for v in others.values()) < 10_000, sorted(others)
    backbone_markers = ("features.", "Conv2d_", "Mixed_", "backbone", "inception", "vgg")
    assert not [k for k in state if any(m in k for m in backbone_markers)]


def _fields(cfg: DictConfig) -> dict[str, object]:
    return {field.name: field.value for field in train.backbone_fields(cfg)}


def test_backbone_fields_skip_term_weights(tmp_path: Path) -> None:
    cfg = _compose([], tmp_path)
    fields = _fields(cfg)
    assert "ImageMetricsCallback.weights.inception" in fields
    assert "ImageMetricsCallback.weights.vgg19" in fields
    assert not any(name.startswith("CompositeLoss.") for name in fields)  # term weights are not backbones


def test_backbone_fields_skip_terms_of_weight_zero(tmp_path: Path) -> None:
    """``loss.weights.perceptual=0``: the VGG of that term is never built, so never fetched."""
    assert "VGGPerceptualLoss.weights" in _fields(_compose([], tmp_path))
    fields = _fields(_compose(["loss.weights.perceptual=0"], tmp_path))
    assert "VGGPerceptualLoss.weights" not in fields and "ImageMetricsCallback.weights.inception" in fields


def test_pretrained_auto_offline_falls_back_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import percep_lightning.backbones as backbones

    def offline(name: str, **kwargs: object) -> Path:
        raise backbones.WeightsUnavailableError(f"{name} unavailable")

    monkeypatch.setattr(backbones, "fetch", offline)
    cfg = _compose(["pretrained=auto"], tmp_path)
    assert train.resolve_pretrained(cfg) is False
    assert all(value is None for value in _fields(cfg).values())
    err = capsys.readouterr().err
    assert err.count("RANDOMLY INITIALISED BACKBONES") == 1
    assert "percep-lightning weights download" in err and "inception_fid" in err


def test_pretrained_auto_with_cached_weights_keeps_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import percep_lightning.backbones as backbones

    asked: list[str] = []
    monkeypatch.setattr(backbones, "fetch", lambda name, **kwargs: asked.append(name) or tmp_path / name)
    cfg = _compose(["pretrained=auto"], tmp_path)
    assert train.resolve_pretrained(cfg) is True
    assert set(_fields(cfg).values()) == {"default"}
    assert {"inception_fid", "vgg19"} <= set(asked)
    assert "RANDOMLY" not in capsys.readouterr().err


def test_pretrained_auto_fetches_only_what_the_callback_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callback's networks follow its metrics and options: LPIPS on SqueezeNet needs that trunk alone."""
    import percep_lightning.backbones as backbones

    asked: list[str] = []
    monkeypatch.setattr(backbones, "fetch", lambda name, **kwargs: asked.append(name) or tmp_path / name)
    overrides = [
        "callbacks.image_metrics.metrics=[psnr,lpips]",
        "callbacks.image_metrics.options.lpips.net=squeeze",
        "loss.weights.perceptual=0",  # no VGG for the loss either
    ]
    cfg = _compose(["pretrained=auto", *overrides], tmp_path)
    assert train.resolve_pretrained(cfg) is True
    assert asked == ["squeezenet1_1"]


def test_pretrained_true_and_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import percep_lightning.backbones as backbones

    monkeypatch.setattr(backbones, "fetch", lambda name, **kwargs: pytest.fail("no fetch for true/false"))
    cfg = _compose(["pretrained=false"], tmp_path)
    train.resolve_pretrained(cfg)
    assert set(_fields(cfg).values()) == {None}
    cfg = _compose(["pretrained=true", "callbacks.image_metrics.weights=null"], tmp_path)
    assert train.resolve_pretrained(cfg) is True
    assert set(_fields(cfg).values()) == {"default"}


def test_pretrained_rejects_unknown_values(tmp_path: Path) -> None:
    cfg = _compose(["pretrained=maybe"], tmp_path)
    with pytest.raises(ValueError, match="`pretrained` to be one of auto, true, false"):
        train.resolve_pretrained(cfg)
