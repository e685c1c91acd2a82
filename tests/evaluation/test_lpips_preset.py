"""`--preset lpips` equals the lpips README loop (lpips.LPIPS on same-named pairs) with the same weights file."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from percep_lightning.cli import main
from percep_lightning.evaluation import evaluate

lpips = pytest.importorskip("lpips")

_ALEX_SLICE_ENDS = (2, 5, 8, 10, 12)


def _package_lpips(path):
    """lpips.LPIPS(net="alex") with its v0.1 lin layers and the AlexNet trunk read from ``path``."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True)
    state = {}
    for key, value in torch.load(path, weights_only=True).items():
        if key.startswith("features."):
            index, rest = key.split(".", 2)[1:]
            k = next(s for s, end in enumerate(_ALEX_SLICE_ENDS) if int(index) < end)
            state[f"slice{k + 1}.{index}.{rest}"] = value
    model.net.load_state_dict(state, strict=True)
    return model.eval()


def _readme_loop(model, dir0, dir1):
    """The loop of lpips' README (``lpips_2dirs.py``) in float64 (our float32 values are compared with it).

    Images are read as the RGB uint8 arrays ``lpips.load_image`` returns (it uses OpenCV for PNG files).
    """
    values = {}
    for file in sorted(os.listdir(dir0)):
        if os.path.exists(os.path.join(dir1, file)):
            img0 = lpips.im2tensor(np.asarray(Image.open(os.path.join(dir0, file)).convert("RGB"))).double()
            img1 = lpips.im2tensor(np.asarray(Image.open(os.path.join(dir1, file)).convert("RGB"))).double()
            with torch.no_grad():
                values[file] = model.forward(img0, img1).item()
    return values


@pytest.mark.slow
def test_lpips_preset_equals_the_readme_loop(tmp_path, photo_folders, torchvision_weights, capsys):
    pred, target = photo_folders(5, 64)
    weights = torchvision_weights("alexnet")
    expected = _readme_loop(_package_lpips(weights).double(), pred, target)
    out_json, out_csv = tmp_path / "out.json", tmp_path / "pairs.csv"
    status = main(
        [
            "evaluate", str(pred), str(target), "--preset", "lpips", "--weights", f"alexnet={weights}",
            "--json", str(out_json), "--per-image", str(out_csv), "--num-workers", "2", "--batch-size", "2",
            "--device", "cpu",
        ]
    )  # fmt: skip
    assert status == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["pred"] for r in rows] == sorted(expected) == [r["target"] for r in rows]
    for row in rows:
        assert float(row["lpips"]) == pytest.approx(expected[row["pred"]], rel=0, abs=1e-6)
    mean = float(np.mean(list(expected.values())))
    record = json.loads(out_json.read_text())
    assert record["values"]["lpips"] == pytest.approx(mean, rel=0, abs=1e-6)
    assert min(expected.values()) > 1e-3  # not trivially equal
    (result,) = record["results"]
    assert result["n"] == 5 and result["higher_is_better"] is False and result["std_over"] == "pairs"
    assert result["std"] == pytest.approx(float(np.std(list(expected.values()))), abs=1e-6)
    assert record["counts"] == {"pred": 5, "target": 5}
    assert record["settings"]["preset"] == "lpips" and record["settings"]["batch_size"] == 2
    assert record["weights"]["alexnet"] == {
        "file": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    assert record["weights"]["lpips_alex_lin"]["file"] == "v0.1/alex.pth"
    assert set(record["versions"]) >= {"percep-lightning", "torch", "torchvision", "python"}
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["metric", "value", "±", "n", "better"]
    assert table[1].split()[0] == "lpips" and table[1].split()[-2:] == ["5", "lower"]
    # the Python API gives the same value, batched differently
    api = evaluate(pred, target, preset="lpips", weights={"alexnet": weights}, batch_size=5, progress=False)
    assert api["lpips"] == pytest.approx(mean, rel=0, abs=1e-6)
