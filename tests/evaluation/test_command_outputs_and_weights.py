"""`evaluate` / `stats`: output paths checked before any work, every missing weights file in one error,
the table kept when a file cannot be written, files that follow the umask, the workers default."""

from __future__ import annotations

import os
import re
import stat
import urllib.request

import pytest
import torch
from conftest import save_images

from percep_lightning.backbones import WEIGHTS
from percep_lightning.backbones import weights as w
from percep_lightning.cli import build_parser, main
from percep_lightning.evaluation import command, report


@pytest.fixture
def folders(tmp_path):
    """``pred``, ``gt``, ``content`` and ``style`` folders of three 16x16 images each."""
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for name in ("pred", "gt", "content", "style"):
        save_images(tmp_path / name, x)
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything downloads a file or builds a network from a weights argument."""

    def refuse(*args, **kwargs):
        raise AssertionError("a weights file or a network was asked for")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(w, "resolve_state_dict", refuse)
    monkeypatch.setattr(w, "fetch", refuse)


@pytest.fixture
def unreachable(monkeypatch):
    """Point every official URL at a closed local port: downloads fail at once."""
    for name, spec in list(WEIGHTS.items()):
        monkeypatch.setitem(
            WEIGHTS,
            name,
            w.WeightsSpec(
                spec.name,
                spec.filename,
                "http://127.0.0.1:9/" + spec.filename,
                spec.sha256_prefix,
                spec.description,
            ),
        )


def _evaluate(capsys, *args) -> tuple[int, str, str]:
    status = main(["evaluate", *map(str, args), "--no-progress", "--num-workers", "0", "--device", "cpu"])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(
    ("flag", "path", "message"),
    [
        (
            "--json",
            "nodir/out.json",
            r"Cannot write --json '.*nodir/out.json': folder '.*nodir' does not exist",
        ),
        ("--json", "gt", r"Cannot write --json '.*gt': it is a folder"),
        ("--per-image", "nodir/pairs.csv", r"Cannot write --per-image '.*nodir/pairs.csv': folder"),
        ("--per-image", "gt", r"Cannot write --per-image '.*gt': it is a folder"),
    ],
)
def test_bad_output_path_exits_2_before_any_work(folders, capsys, no_network, flag, path, message):
    """Empty weights cache, no network: the output path is named before any weights file is looked for."""
    status, out, err = _evaluate(
        capsys, folders / "pred", folders / "gt", "--preset", "lpips", flag, folders / path
    )
    assert status == 2
    assert __import__("re").search(message, err), err
    assert out == "" and "weights" not in err


def test_same_file_for_json_and_per_image(folders, capsys, no_network):
    out = folders / "out"
    status, _, err = _evaluate(
        capsys, folders / "pred", folders / "gt", "--metrics", "psnr", "--json", out, "--per-image", out
    )
    assert status == 2 and "--json and --per-image name the same file" in err


def test_stats_output_is_checked_before_any_work(folders, capsys, no_network):
    for path, message in ((folders / "gt", "it is a folder"), (folders / "no" / "s.npz", "does not exist")):
        status = main(["stats", str(folders / "gt"), "-o", str(path), "--no-progress"])
        assert status == 2
        assert f"Cannot write -o {str(path)!r}: " in (err := capsys.readouterr().err) and message in err


def test_a_failed_write_still_prints_the_table(folders, capsys, monkeypatch):
    def full_disk(report, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(report, "write_json", full_disk)
    status, out, err = _evaluate(
        capsys, folders / "pred", folders / "gt", "--metrics", "psnr", "--json", folders / "o.json"
    )
    assert status == 2
    assert out.splitlines()[0].split() == ["metric", "value", "±", "n", "better"]
    assert out.splitlines()[1].split()[0] == "psnr"
    assert "The values are above, but writing an output file failed" in err and "No space left" in err


def test_output_files_follow_the_umask(folders, capsys):
    previous = os.umask(0o027)
    try:
        out_json, out_csv = folders / "o.json", folders / "o.csv"
        status, _, _ = _evaluate(
            capsys,
            folders / "pred",
            folders / "gt",
            "--metrics",
            "psnr",
            "--json",
            out_json,
            "--per-image",
            out_csv,
        )
    finally:
        os.umask(previous)
    assert status == 0
    for path in (out_json, out_csv):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path  # 0666 & ~027, not mkstemp's 0600
    assert not [p for p in folders.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_styleid_offline_names_every_missing_file_at_once(folders, capsys, unreachable, tmp_path):
    status, out, err = _evaluate(
        capsys,
        folders / "pred",
        "--content",
        folders / "content",
        "--style",
        folders / "style",
        "--preset",
        "styleid",
    )
    assert status == 2 and out == ""
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    for name in ("art_inception", "alexnet", "vgg19"):
        spec = WEIGHTS[name]
        assert f"  {name}: expected at {cache / spec.filename}" in err
        assert spec.url in err
    assert "3 weights files needed by this run are unavailable" in err
    assert "`percep-lightning weights download art_inception alexnet vgg19`" in err
    assert "`--weights art_inception=PATH alexnet=PATH vgg19=PATH`" in err and "NAME=random" in err
    assert "weights=..." not in err and "`percep-lightning weights list`" in err
    # a file given as random or as a local copy is not asked for; a missing local copy is named
    status, _, err = _evaluate(
        capsys, folders / "pred", "--content", folders / "content", "--style", folders / "style", "--preset", "styleid",
        "--weights", "alexnet=random", f"vgg19={tmp_path / 'no.pth'}",
    )  # fmt: skip
    assert status == 2
    assert "2 weights files" in err and "  art_inception: expected at" in err
    assert f"  vgg19: no file at {str(tmp_path / 'no.pth')!r}" in err and "alexnet" not in err


def test_stats_offline_says_weights_flag(folders, capsys, unreachable):
    status = main(
        ["stats", str(folders / "gt"), "-o", str(folders / "s.npz"), "--no-progress", "--num-workers", "0"]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "inception_fid: expected at" in err and "`--weights inception_fid=PATH`" in err
    assert "weights=..." not in err


def test_help_documents_random_weights_and_styleid_art_fid_inf(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "NAME=random builds that network with random weights" in text
    assert "art_fid_inf" in text and "equals this FID (and artfid)" in text and "8 points" in text
    with pytest.raises(SystemExit):
        main(["stats", "--help"])
    assert "inception=random" in " ".join(capsys.readouterr().out.split())


def test_num_workers_default_is_at_most_the_usable_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert command.default_num_workers() == 2
    for argv in (["evaluate", "p", "t"], ["stats", "d", "-o", "s.npz"]):
        assert build_parser().parse_args(argv).num_workers == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert command.default_num_workers() == 4


def test_option_flag_sets_a_metrics_options(tmp_path, photos, capsys):
    """``--option METRIC.KEY=VALUE`` reaches the registry as ``options={METRIC: {KEY: VALUE}}``."""
    import json

    from percep_lightning.evaluation import evaluate

    images = photos(3, 32, dtype=torch.uint8)
    save_images(tmp_path / "pred", images.flip(-1))
    save_images(tmp_path / "gt", images)
    out = tmp_path / "out.json"
    status, _, _ = _evaluate(
        capsys, tmp_path / "pred", tmp_path / "gt", "--metrics", "psnr", "--option", "psnr.crop_border=4",
        "psnr.channel=y", "--json", out,
    )  # fmt: skip
    assert status == 0
    expected = evaluate(
        tmp_path / "pred", tmp_path / "gt", metrics="psnr", options={"psnr": {"crop_border": 4, "channel": "y"}},
        progress=False, num_workers=0,
    )  # fmt: skip
    default = evaluate(tmp_path / "pred", tmp_path / "gt", metrics="psnr", progress=False, num_workers=0)
    got = json.loads(out.read_text())
    value = got["values"]["psnr"]
    assert value == pytest.approx(expected["psnr"], rel=1e-12)
    assert value != pytest.approx(default["psnr"], rel=1e-6)


@pytest.mark.parametrize(
    ("metric", "entry", "message"),
    [
        (
            "psnr",
            "prdc.k",
            r"Expected --option entries as METRIC.KEY=VALUE \(e.g. prdc.k=3\), but got 'prdc.k'",
        ),
        ("psnr", "k=3", r"Expected --option entries as METRIC.KEY=VALUE"),
        ("psnr", "psnr.window=3", r"Metric 'psnr' takes no option window; its options: crop_border, channel"),
        (
            "prdc",
            "prdc.features=resnet",
            r"`options\['prdc'\]\['features'\]` to be one of \('dinov2', 'inception', 'clip'\)",
        ),
    ],
)
def test_bad_option_entries_exit_2(folders, capsys, no_network, metric, entry, message):
    status, _, err = _evaluate(
        capsys, folders / "pred", folders / "gt", "--metrics", metric, "--option", entry
    )
    assert status == 2
    assert re.search(message, err), err
