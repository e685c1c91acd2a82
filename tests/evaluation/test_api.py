"""The public names of percep_lightning.evaluation, the metric table and the Python entry point."""

from __future__ import annotations

import pytest
import torch
from conftest import save_images

import percep_lightning
from percep_lightning.evaluation import METRICS, PRESETS, EvaluationError, evaluate, evaluate_report


def test_every_public_name_resolves():
    module = percep_lightning.evaluation
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


def test_presets_name_known_metrics_and_rows_are_consistent():
    for preset, names in PRESETS.items():
        assert names and set(names) <= set(METRICS), preset
    from percep_lightning.backbones import WEIGHTS

    for name, spec in METRICS.items():
        assert spec.name == name and spec.feed in ("images", "features", "logits", "derived")
        assert spec.against in (None, "target", "content", "style") and spec.roles[0] == "preds"
        assert set(spec.requires) <= set(METRICS) and (spec.combine is not None) == (spec.feed == "derived")
        assert all({"inception": "inception_fid"}.get(w, w) in WEIGHTS for w in spec.weights)


def test_paired_values_match_functional_reference_and_report_counts(tmp_path, photo_folders):
    from skimage.metrics import peak_signal_noise_ratio

    pred, target = photo_folders(3, 24)
    report = evaluate_report(pred, target, metrics=["psnr"], batch_size=2, progress=False)
    import numpy as np
    from PIL import Image

    expected = [
        peak_signal_noise_ratio(
            np.asarray(Image.open(target / n)), np.asarray(Image.open(pred / n)), data_range=255
        )
        for n in ("000.png", "001.png", "002.png")
    ]
    assert report.values() == {"psnr": pytest.approx(float(np.mean(expected)), rel=1e-12)}
    (result,) = report.results
    assert result.n == 3 and result.spread == "pairs" and result.std == pytest.approx(float(np.std(expected)))
    assert report.counts == {"pred": 3, "target": 3}
    assert report.per_image_columns == ["pred", "target", "psnr"]
    assert [row[2] for row in report.per_image_rows] == pytest.approx(expected, rel=1e-12)


def test_option_errors(tmp_path):
    save_images(tmp_path / "a", torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(EvaluationError, match=r"`batch_size` to be >= 1, but got 0"):
        evaluate(tmp_path / "a", tmp_path / "a", metrics="psnr", batch_size=0)
    with pytest.raises(EvaluationError, match=r"`pair_by` to be one of \('name', 'sorted'\), but got 'size'"):
        evaluate(tmp_path / "a", tmp_path / "a", metrics="psnr", pair_by="size")
    with pytest.raises(EvaluationError, match=r"`resize` to be one of"):
        evaluate(tmp_path / "a", tmp_path / "a", metrics="psnr", resize="lanczos")
    with pytest.raises(EvaluationError, match="Name the metrics"):
        evaluate(tmp_path / "a", tmp_path / "a")
    with pytest.raises(
        EvaluationError, match=r"psnr on '000.png'.*crop_border=8 removes 16 rows and columns"
    ):
        evaluate(tmp_path / "a", tmp_path / "a", metrics="psnr", crop_border=8, progress=False)
