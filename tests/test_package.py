"""Package-level promises: public names resolve, importing never touches the network."""

from __future__ import annotations

import subprocess
import sys

import pytest

import percep_lightning


@pytest.mark.parametrize("module", ["functional", "losses", "metrics", "callbacks", "backbones"])
def test_every_public_name_resolves(module):
    mod = getattr(percep_lightning, module)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{module}.{name}"


def test_import_never_downloads(tmp_path):
    code = (
        "import urllib.request\n"
        "def refuse(*a, **k): raise AssertionError('network used at import time')\n"
        "urllib.request.urlopen = refuse\n"
        "import percep_lightning\n"
        "for sub in ('functional', 'losses', 'metrics', 'callbacks', 'backbones'):\n"
        "    mod = getattr(percep_lightning, sub)\n"
        "    [getattr(mod, name) for name in mod.__all__]\n"
        "print('ok')\n"
    )
    env = {"TORCH_HOME": str(tmp_path), "HOME": str(tmp_path), "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_version():
    assert percep_lightning.__version__ == "0.1.0"


def test_wheel_ships_py_typed_and_the_licence():
    """``py.typed`` (PEP 561) is package data and the top-level BSD-3-Clause LICENSE a licence file."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["license"] == "BSD-3-Clause"
    assert project["project"]["license-files"] == ["LICENSE"]
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["percep_lightning"]
    assert (root / "percep_lightning" / "py.typed").is_file()
    licence = (root / "LICENSE").read_text()
    assert licence.startswith("BSD 3-Clause License") and "percep_lightning contributors" in licence
    assert "Neither the name of the copyright holder" in licence
