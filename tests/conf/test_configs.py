"""The Hydra app of examples/train.py: every group option and every README command line composes.

The command lines are read from the docs themselves (every ``python examples/train.py ...`` line of
README.md), so the docs cannot drift from the configs. A ``-m`` sweep is
expanded into its jobs. Only cheap parts are built here; tests/test_example.py runs the app.
"""

from __future__ import annotations

import itertools
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
PRESETS = ROOT / "percep_lightning" / "conf"  # loss/ and callbacks/image_metrics, installed with the package
DOCS = (ROOT / "README.md",)
OWN_GROUPS = (
    "model",
    "data",
    "trainer",
    "logger",
)  # groups written for the example (loss/ and callbacks/image_metrics come from the package)

sys.path.insert(0, str(ROOT / "examples"))  # the configs name the example's classes as sr_module.X, sr_data.X


def _options(group: str) -> list[str]:
    """The options of a group: the example's own files and the package's presets (the search path)."""
    return sorted({p.stem for root in (CONF, PRESETS) for p in (root / group).glob("*.yaml")})


def _compose(overrides: list[str], tmp_path: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    return cfg


def _doc_commands() -> list[str]:
    """Every ``python examples/train.py ...`` command line of the docs (continuation lines joined)."""
    commands = []
    for doc in DOCS:
        if not doc.is_file():
            continue
        for line in doc.read_text().replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ").split(" #")[0].strip()
            for command in re.split(r"&&|;", line):  # `pip install ... && python examples/train.py`
                tokens = command.split()
                while tokens and "=" in tokens[0]:  # leading environment variables
                    tokens.pop(0)
                if tokens[:2] in (["python", "examples/train.py"], ["python3", "examples/train.py"]):
                    commands.append(command.strip())
    return commands


def _jobs(command: str) -> Iterator[list[str]]:
    """The override lists of the job(s) a command line runs (a ``-m`` sweep expands to several)."""
    args = shlex.split(command)
    args = args[args.index("examples/train.py") + 1 :]
    # Overrides only: not the flags (-m, --cfg job).
    overrides = [a for a in args if a.startswith("~") or ("=" in a and not a.startswith("-"))]
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_delete():
            choices.append([key])
        elif override.is_sweep_override():
            choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            choices.append([f"{key}={override.get_value_element_as_str()}"])
    yield from (list(job) for job in itertools.product(*choices))


DOC_JOBS = [job for command in _doc_commands() for job in _jobs(command)]


def test_docs_show_commands() -> None:
    commands = _doc_commands()
    assert any(c.split()[-1] == "examples/train.py" for c in commands), "the plain first command"
    assert any(" -m " in f" {c} " for c in commands), "a multirun sweep"
    assert len(DOC_JOBS) >= 5


@pytest.mark.parametrize("overrides", DOC_JOBS, ids=" ".join)
def test_doc_command_composes(overrides: list[str], tmp_path: Path) -> None:
    cfg = _compose(overrides, tmp_path)
    _check(cfg)


@pytest.mark.parametrize(
    "override",
    [f"{group}={option}" for group in (*OWN_GROUPS, "loss", "callbacks") for option in _options(group)],
)
def test_every_group_option_composes(override: str, tmp_path: Path) -> None:
    if override == "callbacks=image_metrics":  # a single callback, not a mapping of them: still accepted
        cfg = _compose([override], tmp_path)
        assert "_target_" in cfg.callbacks
        return
    cfg = _compose([override], tmp_path)
    _check(cfg)


def _check(cfg: DictConfig) -> None:
    assert "_target_" in cfg.loss
    assert cfg.data.scale == cfg.model.net.scale
    assert cfg.pretrained in ("auto", True, False)
    for name in ("csv", "tensorboard"):
        if name in (cfg.logger or {}):
            assert cfg.logger[name].save_dir == cfg.output_dir
    assert cfg.trainer.default_root_dir == cfg.output_dir
    terms = [str(t.get("_target_", "")) for t in cfg.loss.get("terms", {}).values()] + [cfg.loss._target_]
    if any(t.endswith("MSSSIMLoss") for t in terms):  # MS-SSIM's 5 scales need more than 160 px per side
        assert cfg.data.patch_size > 160
    if cfg.callbacks and "image_metrics" in cfg.callbacks:
        assert cfg.callbacks.image_metrics._target_.endswith("ImageMetricsCallback")
    net = instantiate(cfg.model.net)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 8, 8))
    assert out.shape == (1, 3, 8 * cfg.data.scale, 8 * cfg.data.scale)


def test_restoration_trains_on_large_patches(tmp_path: Path) -> None:
    """conf/data/for_loss/<loss>.yaml is applied with its loss, and the command line still wins."""
    assert _compose(["loss=restoration"], tmp_path).data.patch_size > 160
    assert _compose([], tmp_path).data.patch_size == 96
    assert _compose(["loss=restoration", "data.patch_size=176"], tmp_path).data.patch_size == 176


def test_every_value_is_commented() -> None:
    """House rule for the example's own config files: each value line carries a comment."""
    files = [CONF / "config.yaml", *(p for g in OWN_GROUPS for p in (CONF / g).rglob("*.yaml"))]
    files += [p for p in (CONF / "callbacks").glob("*.yaml") if p.name != "image_metrics.yaml"]
    for path in files:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", "- ")) or stripped.endswith(":"):
                continue  # comments, defaults-list entries, parents of nested blocks
            key = stripped.split(":")[0]
            if key == "_target_" or "#" in line or (i and lines[i - 1].strip().startswith("#")):
                continue
            pytest.fail(f"{path.relative_to(ROOT)}:{i + 1} has no comment: {stripped}")


def test_every_callback_instantiates(tmp_path: Path) -> None:
    """callbacks=default: the packaged image_metrics preset, the checkpoint and the image grid."""
    import lightning.pytorch as pl

    from percep_lightning.callbacks import ImageGridCallback, ImageMetricsCallback

    cfg = _compose(["callbacks.image_metrics.weights=null"], tmp_path)
    callbacks = {name: instantiate(node) for name, node in cfg.callbacks.items()}
    assert isinstance(callbacks["image_metrics"], ImageMetricsCallback)
    assert isinstance(callbacks["image_grid"], ImageGridCallback)
    assert callbacks["image_grid"].keys == ("lr", "preds", "target")
    assert all(isinstance(c, pl.Callback) for c in callbacks.values())
    assert callbacks["image_metrics"].metric_names == ("fid", "is", "cfsd", "psnr", "ssim")


def test_the_image_metrics_preset_spells_out_the_registry(tmp_path: Path) -> None:
    """The packaged preset lists every option of the registry with its default, every role and every network,
    so that each can be overridden without ``+`` (and cannot drift from the registry)."""
    from percep_lightning.callbacks.arguments import DEFAULT_KEYS
    from percep_lightning.metrics.registry import METRICS, NETWORKS, SHARED_OPTIONS

    node = _compose([], tmp_path).callbacks.image_metrics
    options = OmegaConf.to_container(node.options)
    assert {key: options.pop(key) for key in SHARED_OPTIONS} == dict(SHARED_OPTIONS)
    assert options == {name: dict(spec.defaults) for name, spec in METRICS.items() if spec.defaults}
    assert OmegaConf.to_container(node["keys"]) == dict(DEFAULT_KEYS)
    assert set(node.weights) == set(NETWORKS) and set(node.weights.values()) == {"default"}
    assert node.real_stats is True


def test_image_metrics_overrides_reach_the_callback(tmp_path: Path) -> None:
    from percep_lightning.callbacks import ImageMetricsCallback

    overrides = [
        "callbacks.image_metrics.metrics=[psnr,lpips]",
        "callbacks.image_metrics.options.psnr.crop_border=4",
        "callbacks.image_metrics.options.lpips.net=squeeze",
        "callbacks.image_metrics.keys.target=hr",
        "callbacks.image_metrics.weights.squeezenet1_1=null",
        "callbacks.image_metrics.real_stats=false",
    ]
    node = _compose(overrides, tmp_path).callbacks.image_metrics
    assert node.real_stats is False and node.weights.squeezenet1_1 is None
    callback = instantiate(node)
    assert isinstance(callback, ImageMetricsCallback)
    assert callback.metric_names == ("psnr", "lpips") and callback.keys["target"] == "hr"
    with pytest.raises(Exception, match=r"`options\['psnr'\]\['crop_border'\]` to be >= 0"):
        instantiate(
            _compose(
                ["callbacks.image_metrics.options.psnr.crop_border=-1"], tmp_path
            ).callbacks.image_metrics
        )
