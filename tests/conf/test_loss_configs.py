"""Every packaged loss preset (percep_lightning/conf/loss) composes and instantiates; term weights override.

The presets reach Hydra through the package's search-path plugin: composed here through the example
app's config (conf/config.yaml) and through a user's own config directory that holds nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from percep_lightning.backbones import WEIGHTS
from percep_lightning.backbones import weights as w
from percep_lightning.losses.composite import CompositeLoss

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"  # the example app's own configs
PRESETS = ROOT / "percep_lightning" / "conf"  # the presets installed with the package
LOSS_CONFIGS = sorted(p.stem for p in (PRESETS / "loss").glob("*.yaml"))
_LPIPS_ARCH = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


def _compose_loss(name: str, overrides: tuple[str, ...] = (), conf: Path = CONF) -> DictConfig:
    """The preset ``loss/<name>`` as the ``loss`` node, through ``conf``'s config.yaml when it exists.

    Without a primary config the group file is composed on its own (Hydra then puts it in the ``loss``
    package as well).
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
    if target == "DISTSLoss":
        return "vgg16"
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


@pytest.fixture
def unreachable(monkeypatch):
    """Point every official URL at a closed local port: a download fails at once."""
    for name, spec in list(WEIGHTS.items()):
        url = "http://127.0.0.1:9/" + spec.filename
        monkeypatch.setitem(
            WEIGHTS, name, w.WeightsSpec(spec.name, spec.filename, url, spec.sha256_prefix, spec.description)
        )


def test_every_value_is_commented():
    """Each value of a loss preset carries a comment, on its line or on the line of its parent mapping."""
    for path in sorted((PRESETS / "loss").glob("*.yaml")):
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
                pytest.fail(f"percep_lightning/conf/loss/{path.name}:{i + 1} has no comment: {stripped}")


@pytest.mark.parametrize("name", ["sr_perceptual", "style_transfer"])
def test_term_weight_override(name, torchvision_weights):
    cfg = _compose_loss(name, ("weights.perceptual=0.1",))
    assert cfg.weights.perceptual == 0.1
    loss = instantiate(_with_test_weights(cfg, torchvision_weights))
    assert loss.weights["perceptual"] == 0.1


def test_presets_compose_from_a_users_own_config_dir(tmp_path):
    """A user's config dir without any loss file: the plugin supplies the presets."""
    (tmp_path / "config.yaml").write_text("defaults:\n  - loss: sr_perceptual\n  - _self_\n")
    for name in LOSS_CONFIGS:
        assert _compose_loss(name, conf=tmp_path) == _compose_loss(name)
    assert (
        _compose_loss("sr_perceptual", ("weights.perceptual=0.1",), conf=tmp_path).weights.perceptual == 0.1
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = compose("config", overrides=["+callbacks=image_metrics"])
    assert cfg.callbacks._target_ == "percep_lightning.callbacks.ImageMetricsCallback"


def test_a_users_own_preset_wins(tmp_path):
    """The app's own directory comes first on the search path: its loss/pixel.yaml replaces ours."""
    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "pixel.yaml").write_text("_target_: torch.nn.L1Loss\n")
    (tmp_path / "config.yaml").write_text("defaults:\n  - loss: pixel\n  - _self_\n")
    assert _compose_loss("pixel", conf=tmp_path) == {"_target_": "torch.nn.L1Loss"}


def test_the_example_has_no_copy_of_the_presets():
    assert not (CONF / "loss").exists()
    assert not (CONF / "callbacks" / "image_metrics.yaml").exists()


@pytest.mark.parametrize("name", LOSS_CONFIGS)
def test_every_preset_is_a_composite_loss_that_builds_its_terms(name):
    cfg = _compose_loss(name)
    assert cfg._target_ == "percep_lightning.losses.CompositeLoss"
    assert cfg._recursive_ is False, "CompositeLoss builds the terms, so that weight-0 terms are never built"
    assert set(cfg.weights) == set(cfg.terms) and len(cfg.terms) >= 1


@pytest.mark.parametrize(
    ("name", "term"),
    [
        ("sr_perceptual", "perceptual"),
        ("perceptual", "perceptual"),
        ("lpips", "lpips"),
        ("cfsd", "cfsd"),
        ("dists", "dists"),
        ("l1_dists", "dists"),
    ],
)
def test_zero_weight_backbone_term_is_never_built_offline(name, term, unreachable):
    """Offline with an empty cache, ``weights: default`` of a weight-0 term is never resolved."""
    others = [t for t in _compose_loss(name).terms if t != term]
    if not others:  # a one-term preset: add a cheap term, or nothing would be left to compute
        overrides = (f"weights.{term}=0", "+terms.pixel._target_=percep_lightning.losses.PixelLoss")
    else:
        overrides = (f"weights.{term}=0",)
    loss = instantiate(_compose_loss(name, overrides))
    assert term not in loss.terms
    value = loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert torch.isfinite(value) and term not in loss.parts
    loss.weights[term] = 1.0  # raised again: the term is built at the next forward, and needs its weights
    with pytest.raises(Exception, match=r"are not in the cache and could not be downloaded"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


def test_backbone_file_is_set_on_the_term(torchvision_weights):
    path = torchvision_weights("alexnet")
    loss = instantiate(_compose_loss("lpips", (f"terms.lpips.weights={path}", "weights.lpips=0.5")))
    assert loss.weights == {"lpips": 0.5}
    assert torch.isfinite(loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)))


def test_a_loss_weight_given_as_backbone_weights_names_the_argument():
    with pytest.raises(
        Exception, match=r"Expected `weights` of the alexnet backbone .* but got a mapping of"
    ):
        instantiate(_compose_loss("lpips", ("+terms.lpips.weights.lpips=0.5",)))


def test_dists_presets_are_collected_and_build_dists_on_vgg16(torchvision_weights):
    assert {"dists", "l1_dists"} <= set(LOSS_CONFIGS)
    loss = instantiate(
        _with_test_weights(_compose_loss("l1_dists", ("weights.dists=0.5",)), torchvision_weights)
    )
    assert type(loss.terms["dists"]).__name__ == "DISTSLoss" and loss.weights == {"pixel": 1.0, "dists": 0.5}


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
