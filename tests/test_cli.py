"""The ``percep-lightning`` command line: --version, a --help that imports no torch, plain-text help."""

from __future__ import annotations

import subprocess
import sys

import pytest

import percep_lightning
from percep_lightning import cli

HEAVY = ("torch", "torchvision", "lightning", "torchmetrics", "numpy", "hydra")


def _run(*argv: str) -> subprocess.CompletedProcess:
    """``percep-lightning ARGV`` in a fresh interpreter, reporting the heavy modules it imported."""
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: print('IMPORTED', [m for m in {HEAVY!r} if m in sys.modules]))\n"
        "from percep_lightning.cli import main\n"
        f"sys.exit(main({list(argv)!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "argv", [("--help",), ("weights", "--help"), ("weights", "download", "--help"), ("--version",)]
)
def test_help_and_version_import_no_torch(argv):
    result = _run(*argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "IMPORTED []"


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"percep-lightning {percep_lightning.__version__}"


@pytest.mark.parametrize("argv", [(), ("weights",), ("weights", "list"), ("weights", "download")])
def test_help_is_plain_text(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: percep-lightning" in text
    for markup in ("``", ":mod:", ":class:", ":func:"):
        assert markup not in text, text
    if not argv:
        assert "weights download vgg19 inception_fid" in text  # the examples are shown


def test_missing_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err
