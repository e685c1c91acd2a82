"""The presets as a user gets them: a built wheel, installed (not editable), used by their own Hydra app.

The wheel is built from the package sources, installed into a temporary target directory, and a
Hydra app in another temporary directory (outside the repository) composes a five-line config that
names ``loss: sr_perceptual`` and ``callbacks: image_metrics``: no ``hydra.searchpath`` line, the
search-path plugin of the installed wheel supplies both. The app runs with ``python -S`` and the target
directory first on ``PYTHONPATH``, so the repository's own (editable) copy is out of reach.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

USER_CONFIG = """\
defaults:
  - loss: sr_perceptual
  - callbacks: image_metrics
  - _self_
seed: 0
"""

USER_APP = """\
import json
import hydra
import torch
from hydra.utils import instantiate

@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg):
    import hydra_plugins.percep_lightning_searchpath as plugin
    import percep_lightning

    torch.manual_seed(cfg.seed)
    loss = instantiate(cfg.loss)
    callback = instantiate(cfg.callbacks)
    preds, target = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    value = loss(preds, target)
    print(json.dumps({
        "package": percep_lightning.__file__,
        "plugin": plugin.__path__[0],
        "loss": type(loss).__name__,
        "weights": loss.weights,
        "terms": sorted(loss.terms),
        "value": float(value),
        "callback": type(callback).__name__,
        "metrics": list(callback.metrics) if hasattr(callback, "metrics") else None,
    }))

main()
"""


def _build_isolation() -> list[str]:
    """Build with the environment's setuptools when recent enough (offline, fast), else in isolation."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if major >= 68 else []


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A target directory holding the package installed from its wheel."""
    base = tmp_path_factory.mktemp("installed")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("percep_lightning", "hydra_plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels, target = base / "wheels", base / "target"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", *_build_isolation(), "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
        cwd=base,
        timeout=300,
    )
    (wheel,) = wheels.glob("percep_lightning-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        cwd=base,
        timeout=300,
    )
    return target


def _run_app(installed: Path, app_dir: Path, *overrides: str, **extra_env: str) -> dict:
    (app_dir / "conf").mkdir(parents=True)
    (app_dir / "conf" / "config.yaml").write_text(USER_CONFIG)
    (app_dir / "app.py").write_text(USER_APP)
    # -S: no site-packages .pth files, so no editable install of the repository; the dependencies come
    # from the environment's site-packages, after the installed wheel.
    path = os.pathsep.join([str(installed), *site.getsitepackages()])
    env = {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "1", **extra_env}
    result = subprocess.run(
        [sys.executable, "-S", "app.py", f"hydra.run.dir={app_dir / 'run'}", *overrides],
        capture_output=True,
        text=True,
        cwd=app_dir,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_installed_wheel_serves_the_presets_to_a_users_app(installed: Path, tmp_path: Path) -> None:
    assert USER_CONFIG.count("\n") == 5
    out = _run_app(
        installed,
        tmp_path / "app",
        "loss.weights.perceptual=0.5",  # a term weight
        "loss.terms.perceptual.weights=null",  # the backbone file of a term: random weights here
        "callbacks.weights=null",
    )
    assert Path(out["package"]).is_relative_to(installed), out["package"]
    assert Path(out["plugin"]).is_relative_to(installed), out["plugin"]
    assert out["loss"] == "CompositeLoss" and out["terms"] == ["perceptual", "pixel"]
    assert out["weights"] == {"pixel": 1.0, "perceptual": 0.5}
    assert out["value"] > 0
    assert out["callback"] == "ImageMetricsCallback"


@pytest.mark.slow
def test_installed_zero_weight_term_needs_no_backbone(installed: Path, tmp_path: Path) -> None:
    """``weights: default`` of a weight-0 term is never resolved: no VGG file, no download attempt."""
    out = _run_app(
        installed,
        tmp_path / "app",
        "loss.weights.perceptual=0",
        "callbacks.weights=null",
        https_proxy="http://127.0.0.1:9",  # any download attempt fails at once, even with network
        HTTPS_PROXY="http://127.0.0.1:9",
    )
    assert out["terms"] == ["pixel"] and out["weights"]["perceptual"] == 0.0
