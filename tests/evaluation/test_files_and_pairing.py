"""Folder loading, pairing and the bad-input messages of `percep-lightning evaluate` (exit status 2)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import save_images
from PIL import Image

from percep_lightning.cli import main
from percep_lightning.evaluation import EvaluationError, evaluate, list_images, pair_files
from percep_lightning.evaluation.files import decode_image


def _image(h: int = 16, w: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif"])
def test_formats_decode_to_the_pixels_pillow_reads(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    Image.fromarray(_image()).save(path)
    image, had_alpha = decode_image(path)
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert image.dtype == torch.uint8 and not had_alpha
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_grey_keeps_its_precision(tmp_path, suffix):
    values = np.random.default_rng(0).integers(0, 65536, (9, 7), dtype=np.uint16)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(values).save(path)
    image, _ = decode_image(path)
    assert image.dtype == torch.float32 and image.shape == (3, 9, 7)
    expected = torch.from_numpy(values.astype(np.float64) / 65535)
    for channel in image:
        torch.testing.assert_close(channel.double(), expected, rtol=0, atol=1e-7)


def test_grey_is_repeated_and_alpha_dropped_with_one_warning(tmp_path):
    pred, target = tmp_path / "pred", tmp_path / "target"
    pred.mkdir(), target.mkdir()
    rgb = _image()
    for i in range(3):
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])).save(pred / f"{i}.png")  # RGBA
        Image.fromarray(rgb).save(target / f"{i}.png")
    grey = tmp_path / "grey.png"
    Image.fromarray(rgb[..., 0]).save(grey)
    image, _ = decode_image(grey)
    assert torch.equal(image[0], image[2]) and torch.equal(image[1], torch.from_numpy(rgb[..., 0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = evaluate(pred, target, metrics="psnr", progress=False)
    alpha = [w for w in caught if "alpha" in str(w.message)]
    assert len(alpha) == 1 and "0.png" in str(alpha[0].message)
    assert values["psnr"] == float("inf")  # the RGB channels are the target's exactly


def test_listing_is_sorted_filtered_and_recursive(tmp_path):
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    save_images(tmp_path, images, ["b.png", "sub/a.PNG"])
    (tmp_path / "notes.txt").write_text("x")
    assert list_images(tmp_path) == ["b.png"]
    assert list_images(tmp_path, recursive=True) == ["b.png", "sub/a.PNG"]


def test_pairing_by_name_and_by_sorted_order():
    assert pair_files(["a.png", "b.png"], ["b.jpg", "a.jpg"][::-1]) == [
        ("a.png", "a.jpg"),
        ("b.png", "b.jpg"),
    ]
    assert pair_files(["1.png", "2.png"], ["x.png", "y.png"], by="sorted") == [
        ("1.png", "x.png"),
        ("2.png", "y.png"),
    ]
    with pytest.raises(EvaluationError, match=r"PRED_DIR has 3 images and TARGET has 2.*'c.png'"):
        pair_files(["a.png", "b.png", "c.png"], ["a.png", "b.png"])
    with pytest.raises(EvaluationError, match=r"PRED_DIR has 2 images and TARGET has 2.*'b.png'.*'z.png'"):
        pair_files(["a.png", "b.png"], ["a.png", "z.png"])
    with pytest.raises(EvaluationError, match=r"sorted order: PRED_DIR has 1 images and TARGET has 2"):
        pair_files(["a.png"], ["a.png", "b.png"], by="sorted")


def test_pair_by_sorted_pairs_different_names(tmp_path):
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    save_images(tmp_path / "p", x, ["stylized_1.png", "stylized_2.png"])
    save_images(tmp_path / "t", x, ["content_1.png", "content_2.png"])
    with pytest.raises(EvaluationError, match="without a partner"):
        evaluate(tmp_path / "p", tmp_path / "t", metrics="ssim", progress=False)
    assert evaluate(tmp_path / "p", tmp_path / "t", metrics="ssim", pair_by="sorted", progress=False) == {
        "ssim": 1.0
    }


def _run(capsys, *args: str) -> tuple[int, str]:
    status = main(["evaluate", *map(str, args), "--no-progress", "--num-workers", "0"])
    return status, capsys.readouterr().err


def test_bad_input_exits_with_status_2_and_writes_nothing(tmp_path, capsys):
    pred, target = tmp_path / "pred", tmp_path / "target"
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    save_images(pred, x)
    save_images(target, x[:2])
    out = tmp_path / "out.json"
    cases = [
        (
            (tmp_path / "missing", target, "--metrics", "psnr"),
            r"PRED_DIR \(pred\) '.*missing' does not exist",
        ),
        ((pred, target, "--metrics", "psnr"), r"PRED_DIR has 3 images and TARGET has 2.*'002.png'"),
        ((pred, target, "--metrics", "psnx"), r"Unknown metric 'psnx'; expected some of psnr, ssim"),
        (
            (pred, target, "--preset", "fancy"),
            r"Unknown preset 'fancy'; expected one of lpips, sr, gan, styleid",
        ),
        ((pred, "--metrics", "cfsd"), r"Metric 'cfsd' needs --content"),
        ((pred, "--metrics", "lpips,fid_style", "--content", target), r"Metric 'lpips' needs TARGET"),
        ((pred, "--metrics", "fid_style", "--content", target), r"Metric 'fid_style' needs --style"),
        (
            (pred, target, "--metrics", "fid", "--weights", "inception=" + str(tmp_path / "no.pth")),
            r"no file at .*no\.pth",
        ),
        ((pred, target, "--metrics", "psnr", "--weights", "incepton=x"), r"Unknown weights name 'incepton'"),
        (
            (pred, "--metrics", "is"),
            r"is needs at least 10 images in PRED_DIR \(one per split, --is-splits 10\), but it holds 3",
        ),
    ]
    for args, message in cases:
        status, err = _run(capsys, *args, "--json", out)
        assert status == 2, args
        assert __import__("re").search(message, err), (args, err)
        assert not out.exists()
    (tmp_path / "empty").mkdir()
    status, err = _run(capsys, tmp_path / "empty", target, "--metrics", "psnr")
    assert status == 2 and "holds no image file" in err


def test_corrupt_image_and_size_mismatch_name_the_files(tmp_path, capsys):
    pred, target = tmp_path / "pred", tmp_path / "target"
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    save_images(pred, x)
    save_images(target, x)
    (pred / "001.png").write_bytes(b"not a png")
    for workers in ("0", "2"):
        status = main(
            [
                "evaluate",
                str(pred),
                str(target),
                "--metrics",
                "psnr",
                "--no-progress",
                "--num-workers",
                workers,
            ]
        )
        err = capsys.readouterr().err
        assert status == 2 and "Could not read image" in err and "001.png" in err
    save_images(pred, torch.zeros(1, 3, 8, 6, dtype=torch.uint8), ["001.png"])
    status, err = _run(capsys, pred, target, "--metrics", "psnr")
    assert status == 2 and "differ in size" in err and "8x6" in err and "8x8" in err
    assert str(pred / "001.png") in err and str(target / "001.png") in err


def test_npz_without_mu_sigma_and_missing_weights_offline(tmp_path, capsys):
    pred = tmp_path / "pred"
    save_images(pred, torch.zeros(3, 3, 8, 8, dtype=torch.uint8))
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros(3))
    status, err = _run(capsys, pred, bad, "--metrics", "fid")
    assert status == 2 and "'mu' and 'sigma'" in err
    status, err = _run(capsys, pred, pred, "--metrics", "fid")  # empty TORCH_HOME, no network
    assert (
        status == 2
        and "pt_inception-2015-12-05-6726825d.pth" in err
        and "weights download inception_fid" in err
    )


def test_per_image_needs_a_paired_metric(tmp_path, capsys):
    pred = tmp_path / "pred"
    save_images(pred, torch.zeros(3, 3, 8, 8, dtype=torch.uint8))
    status, err = _run(capsys, pred, "--metrics", "is", "--per-image", tmp_path / "x.csv")
    assert status == 2 and "--per-image needs a paired metric" in err


def test_python_module_entry_point(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "percep_lightning", "evaluate", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "--preset" in done.stdout and "styleid" in done.stdout
