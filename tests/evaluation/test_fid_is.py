"""FID and IS over folders equal torch-fidelity's `calculate_metrics` on the same PNG files and weights file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import save_images

from percep_lightning.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:FID statistics from .* samples:UserWarning")


@pytest.fixture
def gan_folders(tmp_path, photos):
    """5 photographs as TARGET, 5 blurred, brightened other photographs as PRED_DIR (64x64 PNG)."""
    target = photos(5, 64, dtype=torch.uint8)
    others = photos(10, 64)[5:]
    fake = torch.nn.functional.avg_pool2d(others, 3, stride=1, padding=1).mul(0.9).add(0.05)
    save_images(tmp_path / "target", target)
    save_images(tmp_path / "pred", (fake * 255 + 0.5).floor().to(torch.uint8))
    return tmp_path / "pred", tmp_path / "target"


@pytest.mark.slow
def test_gan_preset_equals_torch_fidelity_and_npz_target(tmp_path, gan_folders, inception_weights, capsys):
    from torch_fidelity import calculate_metrics

    pred, target = gan_folders
    expected = calculate_metrics(
        input1=str(pred), input2=str(target), fid=True, isc=True, kid=True, cache=False, verbose=False,
        cuda=False, feature_extractor_weights_path=str(inception_weights), batch_size=4, isc_splits=2,
        kid_subsets=7, kid_subset_size=4,
    )  # fmt: skip
    weights = f"inception={inception_weights}"
    out = tmp_path / "gan.json"
    common = [
        "--weights",
        weights,
        "--num-workers",
        "1",
        "--batch-size",
        "3",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert (
        main(
            [
                "evaluate",
                str(pred),
                str(target),
                "--preset",
                "gan",
                "--is-splits",
                "2",
                "--kid-subsets",
                "7",
                "--kid-subset-size",
                "4",
                "--json",
                str(out),
                *common,
            ]
        )
        == 0
    )
    values = json.loads(out.read_text())["values"]
    assert values["fid"] == pytest.approx(expected["frechet_inception_distance"], rel=1e-4)
    assert values["is"] == pytest.approx(expected["inception_score_mean"], rel=1e-4)
    assert values["is_std"] == pytest.approx(expected["inception_score_std"], rel=1e-4, abs=1e-7)
    assert values["kid"] == pytest.approx(expected["kernel_inception_distance_mean"], rel=1e-4)
    assert values["kid_std"] == pytest.approx(expected["kernel_inception_distance_std"], rel=1e-4)
    assert values["fid"] > 1.0 and values["kid_std"] > 0  # not trivially equal
    table = capsys.readouterr().out
    assert [line.split()[0] for line in table.splitlines()[1:]] == ["fid", "is", "kid"]

    # `stats` writes a pytorch-fid .npz; as TARGET it gives the same FID without reading the target images
    stats = tmp_path / "target_stats.npz"
    assert main(["stats", str(target), "-o", str(stats), *common]) == 0
    with np.load(stats) as archive:
        assert sorted(archive.files) == ["mu", "sigma"] and archive["sigma"].shape == (2048, 2048)
    out_npz = tmp_path / "npz.json"
    capsys.readouterr()
    assert main(["evaluate", str(pred), str(stats), "--metrics", "fid", "--json", str(out_npz), *common]) == 0
    record = json.loads(out_npz.read_text())
    assert record["values"]["fid"] == pytest.approx(values["fid"], rel=1e-9)
    # a pytorch-fid .npz records no image count: unknown, never a placeholder
    assert record["counts"] == {"pred": 5, "target": None}
    assert record["results"][0]["n"] == 5 and record["results"][0]["n_reference"] is None
    assert capsys.readouterr().out.splitlines()[1].split()[2:] == ["5", "vs", "?", "lower"]


def test_kid_needs_two_images_per_folder_and_a_target_folder(tmp_path, photos, capsys):
    save_images(tmp_path / "pred", photos(3, 16, dtype=torch.uint8))
    save_images(tmp_path / "target", photos(1, 16, dtype=torch.uint8))
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "target"), "--metrics", "kid"]) == 2
    assert "kid needs at least 2 images in TARGET, but it holds 1" in capsys.readouterr().err

    np.savez(tmp_path / "stats.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "stats.npz"), "--preset", "gan"]) == 2
    assert "kid needs a folder of images (only fid works from statistics)" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value"), [("--kid-subsets", "0"), ("--kid-subset-size", "-1")])
def test_kid_options_are_checked(tmp_path, photos, capsys, flag, value):
    save_images(tmp_path / "pred", photos(2, 16, dtype=torch.uint8))
    save_images(tmp_path / "target", photos(2, 16, dtype=torch.uint8))
    assert (
        main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "target"), "--metrics", "kid", flag, value])
        == 2
    )
    name = flag[2:].replace("-", "_")
    assert f"Expected `{name}` to be >= 1, but got {value}" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_pytorch_fid_resize_equals_the_pytorch_fid_command_line(
    tmp_path, gan_folders, inception_weights, monkeypatch, capsys
):
    """`--resize pytorch_fid` equals `python -m pytorch_fid PRED TARGET --dims 2048` on the same weights file.

    pytorch-fid builds its network with `fid_inception_v3()`, which reads `FID_WEIGHTS_URL` through
    `pytorch_fid.inception.load_state_dict_from_url`; that download function is replaced by a read of the
    test's file, and the command line (`pytorch_fid.fid_score.main`, what `python -m pytorch_fid` runs) is
    run in this process with its own arguments.
    """
    import sys

    import pytorch_fid.inception
    from pytorch_fid import fid_score

    pred, target = gan_folders
    monkeypatch.setattr(
        pytorch_fid.inception, "load_state_dict_from_url", lambda url, **kw: torch.load(inception_weights)
    )
    argv = ["pytorch_fid", str(pred), str(target), "--dims", "2048", "--device", "cpu", "--batch-size", "4"]
    monkeypatch.setattr(sys, "argv", [*argv, "--num-workers", "0"])
    capsys.readouterr()
    fid_score.main()
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FID:")]
    expected = float(printed[-1].split()[-1])

    out = tmp_path / "fid.json"
    args = ["--metrics", "fid", "--resize", "pytorch_fid", "--weights", f"inception={inception_weights}"]
    common = ["--device", "cpu", "--num-workers", "0", "--no-progress", "--json", str(out)]
    assert main(["evaluate", str(pred), str(target), *args, *common]) == 0
    value = json.loads(out.read_text())["values"]["fid"]
    assert value == pytest.approx(expected, rel=1e-4)
    assert expected > 1.0
    # the torch-fidelity resize is a different convention: it does not give pytorch-fid's number
    assert main(["evaluate", str(pred), str(target), *args[:2], *args[4:], *common]) == 0
    assert json.loads(out.read_text())["values"]["fid"] != pytest.approx(expected, rel=1e-4)
