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
        input1=str(pred), input2=str(target), fid=True, isc=True, cache=False, verbose=False, cuda=False,
        feature_extractor_weights_path=str(inception_weights), batch_size=4, isc_splits=2,
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
    assert values["fid"] > 1.0  # not trivially equal

    # `stats` writes a pytorch-fid .npz; as TARGET it gives the same FID without reading the target images
    stats = tmp_path / "target_stats.npz"
    assert main(["stats", str(target), "-o", str(stats), *common]) == 0
    with np.load(stats) as archive:
        assert sorted(archive.files) == ["mu", "sigma"] and archive["sigma"].shape == (2048, 2048)
    out_npz = tmp_path / "npz.json"
    assert main(["evaluate", str(pred), str(stats), "--metrics", "fid", "--json", str(out_npz), *common]) == 0
    record = json.loads(out_npz.read_text())
    assert record["values"]["fid"] == pytest.approx(values["fid"], rel=1e-9)
    assert record["counts"] == {"pred": 5}
    capsys.readouterr()
