"""Every conf/loss/*.yaml composes with Hydra and instantiates; term weights are overridable."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from percep_lightning.losses.composite import CompositeLoss

CONF = Path(__file__).resolve().parents[2] / "conf"
LOSS_CONFIGS = sorted(p.stem for p in (CONF / "loss").glob("*.yaml"))
_LPIPS_ARCH = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


def _compose_loss(name: str, overrides: tuple[str, ...] = (), conf: Path = CONF) -> DictConfig:
    """conf/loss/<name>.yaml as the ``loss`` node, through conf/config.yaml when it exists.

    Without the app's primary config the group file is composed on its own (Hydra then puts it in the
    ``loss`` package as well).
    """
    prefixed = [f"+loss.{o[1:]}" if o.startswith("+") else f"loss.{o}" for o in overrides]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        if (conf / "config.yaml").is_file():
            return compose("config", overrides=[f"loss={name}", *prefixed]).loss
        return compose(f"loss/{name}", overrides=prefixed).loss


def _backbone_nodes(node) -> Iterator[DictConfig]:
    """Nodes that build a pretrained backbone: a ``_target_`` and a string or null ``weights``."""
    if isinstance(node, DictConfig):
        if "_target_" in node and "weights" in node and not OmegaConf.is_config(node.weights):
            yield node
        for key in node:
            yield from _backbone_nodes(node[key])


def _arch(node: DictConfig) -> str:
    target = node._target_.rsplit(".", 1)[-1]
    if target == "VGGPerceptualLoss":
        return node.get("arch", "vgg19")
    if target == "LPIPSLoss":
        return _LPIPS_ARCH[node.get("net", "alex")]
    assert target == "CFSDLoss", target
    return "vgg19"


def _with_test_weights(cfg: DictConfig, torchvision_weights) -> DictConfig:
    nodes = list(_backbone_nodes(cfg))
    for node in nodes:
        assert node.weights == "default", "conf/loss files use the official weights"
        node.weights = str(torchvision_weights(_arch(node)))
    return cfg


@pytest.mark.parametrize("name", LOSS_CONFIGS)
def test_loss_config_instantiates(name, torchvision_weights):
    cfg = _with_test_weights(_compose_loss(name), torchvision_weights)
    assert cfg._target_.startswith("percep_lightning.losses.")
    loss = instantiate(cfg)
    assert isinstance(loss, nn.Module)
    assert type(loss).__name__ == cfg._target_.rsplit(".", 1)[-1]
    size = 176 if name in ("ms_ssim", "restoration") else 32  # MS-SSIM's 5 scales need > 160 px
    preds, target = torch.rand(1, 3, size, size), torch.rand(1, 3, size, size)
    extra = {keyword: torch.rand(1, 3, size, size) for keyword in cfg.get("targets", {}).values()}
    value = loss(preds, target, **extra)
    assert value.ndim == 0 and torch.isfinite(value)
    if isinstance(loss, CompositeLoss):
        assert set(loss.parts) == set(cfg.terms)
        assert all(isinstance(t, nn.Module) for t in loss.terms.values())
        assert set(loss.weights) == set(cfg.weights)


def test_every_value_is_commented():
    """Each value of conf/loss carries a comment, on its line or on the line of its parent mapping."""
    for path in sorted((CONF / "loss").glob("*.yaml")):
        parents: list[tuple[int, bool]] = []  # (indentation, commented) of the enclosing mappings
        for i, line in enumerate(path.read_text().splitlines()):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            indent = len(line) - len(line.lstrip())
            while parents and parents[-1][0] >= indent:
                parents.pop()
            commented = "#" in line or stripped.startswith("_target_") or any(c for _, c in parents)
            if stripped.split("#")[0].rstrip().endswith(":"):
                parents.append((indent, "#" in line))
                continue
            if not commented:
                pytest.fail(f"conf/loss/{path.name}:{i + 1} has no comment: {stripped}")


@pytest.mark.parametrize("name", ["sr_perceptual", "style_transfer"])
def test_term_weight_override(name, torchvision_weights):
    cfg = _compose_loss(name, ("weights.perceptual=0.1",))
    assert cfg.weights.perceptual == 0.1
    loss = instantiate(_with_test_weights(cfg, torchvision_weights))
    assert loss.weights["perceptual"] == 0.1


def test_loss_files_compose_without_the_app_config(tmp_path):
    shutil.copytree(CONF / "loss", tmp_path / "loss")
    for name in LOSS_CONFIGS:
        assert _compose_loss(name, conf=tmp_path) == _compose_loss(name)
    assert (
        _compose_loss("sr_perceptual", ("weights.perceptual=0.1",), conf=tmp_path).weights.perceptual == 0.1
    )


def test_restoration_weights_follow_zhao_et_al():
    cfg = _compose_loss("restoration", ("weights.ssim=0.5",))
    assert cfg.weights.ssim == 0.5 and cfg.weights.pixel == 0.16
    assert _compose_loss("restoration").weights.ssim == 0.84


def test_unknown_weight_name_fails_at_instantiation(torchvision_weights):
    cfg = _with_test_weights(
        _compose_loss("sr_perceptual", ("+weights.percpetual=0.1",)), torchvision_weights
    )
    with pytest.raises(Exception, match=r"not terms of this loss; the terms are: pixel, perceptual"):
        instantiate(cfg)
