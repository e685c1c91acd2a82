"""`--preset sr` equals BasicSR's PSNR/SSIM definitions; `--preset styleid` equals StyleID's evaluation code."""

from __future__ import annotations

import contextlib
import csv
import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import save_images
from PIL import Image

from percep_lightning.cli import main
from percep_lightning.evaluation import evaluate


def _basicsr_y(image: np.ndarray) -> np.ndarray:
    """BasicSR ``to_y_channel`` on an RGB uint8 image: float32 [0, 1], MATLAB luma, back to [0, 255]."""
    x = image.astype(np.float32) / 255.0
    y = np.dot(x, np.array([65.481, 128.553, 24.966], dtype=np.float32)) + 16.0
    return (y / 255.0 * 255.0).astype(np.float64)


def _basicsr_psnr(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    """BasicSR ``calculate_psnr(crop_border=crop, test_y_channel=True)``."""
    a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    mse = np.mean((_basicsr_y(a) - _basicsr_y(b)) ** 2)
    return float(10.0 * np.log10(255.0 * 255.0 / mse))


def _basicsr_ssim(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    """BasicSR ``calculate_ssim(crop_border=crop, test_y_channel=True)``: Gaussian 11x11, sigma 1.5, valid region."""
    from skimage.metrics import structural_similarity

    a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    return float(
        structural_similarity(
            _basicsr_y(a), _basicsr_y(b), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=255.0,
        )
    )  # fmt: skip


@pytest.mark.slow
def test_sr_preset_equals_basicsr(tmp_path, photo_folders, torchvision_weights):
    pred, target = photo_folders(4, 48)
    out = tmp_path / "sr.csv"
    status = main(
        [
            "evaluate", str(pred), str(target), "--preset", "sr", "--crop-border", "4", "--no-progress",
            "--weights", f"alexnet={torchvision_weights('alexnet')}", "--per-image", str(out), "--num-workers", "0",
        ]
    )  # fmt: skip
    assert status == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4
    for row in rows:
        a = np.asarray(Image.open(pred / row["pred"]).convert("RGB"))
        b = np.asarray(Image.open(target / row["target"]).convert("RGB"))
        assert float(row["psnr_y"]) == pytest.approx(_basicsr_psnr(a, b, 4), rel=1e-5)
        assert float(row["ssim_y"]) == pytest.approx(_basicsr_ssim(a, b, 4), rel=1e-5)
    assert 20 < float(rows[0]["psnr_y"]) < 60 and float(rows[0]["ssim_y"]) < 0.999


@pytest.fixture
def vgg19_scaled(torchvision_weights, tmp_path):
    """The random VGG19 file with its first convolution scaled by 100, so relu3_1 has realistic magnitudes."""
    state = {k: v.clone() for k, v in torch.load(torchvision_weights("vgg19"), weights_only=True).items()}
    state["features.0.weight"] *= 100
    path = tmp_path / "vgg19-scaled.pth"
    torch.save(state, path)
    return path


def _styleid_reference(stylized, content, vgg_path, alex_path):
    """StyleID ``eval_artfid.py``'s LPIPS, LPIPS_gray and CFSD written out in float64, one pair at a time."""
    lpips = pytest.importorskip("lpips")
    from test_lpips_preset import _package_lpips

    model = _package_lpips(alex_path).double()
    vgg = torchvision.models.vgg19()
    vgg.load_state_dict(torch.load(vgg_path, weights_only=True))
    trunk = vgg.features[:12].double().eval()
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)

    def similarity(x):
        feat = trunk((x - mean) / std)
        b, c, h, w = feat.shape
        feat = feat.transpose(1, 3).reshape(b, h * w, c) / c
        return torch.bmm(feat, feat.transpose(1, 2))

    def to_tensor(image):  # torchvision ToTensor on a PIL image, in float64
        array = np.asarray(image, dtype=np.float64) / 255
        return torch.from_numpy(array if array.ndim == 3 else array[..., None]).permute(2, 0, 1)[None]

    out = {"lpips_content": [], "lpips_gray": [], "cfsd": []}
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        del lpips
        for s_path, c_path in zip(stylized, content, strict=True):
            s_img, c_img = Image.open(s_path).convert("RGB"), Image.open(c_path).convert("RGB")
            s, c = to_tensor(s_img), to_tensor(c_img)
            out["lpips_content"].append(model(s * 2 - 1, c * 2 - 1).item())
            s_grey, c_grey = to_tensor(s_img.convert("L")), to_tensor(c_img.convert("L"))
            out["lpips_gray"].append(model(s_grey * 2 - 1, c_grey * 2 - 1).item())
            m_s, m_c = similarity(s), similarity(c)
            kl = F.kl_div(m_s.log_softmax(-1).view(1, -1), m_c.softmax(-1).view(1, -1), reduction="batchmean")
            out["cfsd"].append(kl.item())
    return {name: float(np.mean(values)) for name, values in out.items()}


@pytest.mark.slow
def test_styleid_preset_equals_styleid_evaluation(tmp_path, photos, vgg19_scaled, torchvision_weights):
    content = photos(3, 40, dtype=torch.uint8)
    stylized = (
        (F.avg_pool2d(content.float(), 3, stride=1, padding=1) * 0.8 + 20).flip(-1).round().to(torch.uint8)
    )
    # StyleID pairs by sorted order; the names differ
    c_paths = save_images(tmp_path / "cnt", content, [f"content_{i}.png" for i in range(3)])
    s_paths = save_images(tmp_path / "sty", stylized, [f"stylized_{i}.png" for i in range(3)])
    alex = torchvision_weights("alexnet")
    values = evaluate(
        tmp_path / "sty", content=tmp_path / "cnt", preset="styleid", pair_by="sorted",
        weights={"alexnet": alex, "vgg19": vgg19_scaled}, progress=False, batch_size=2,
    )  # fmt: skip
    expected = _styleid_reference(s_paths, c_paths, vgg19_scaled, alex)
    assert set(values) == set(expected)
    for name, value in expected.items():
        assert value > 1e-3, name
        assert values[name] == pytest.approx(value, rel=1e-5), name
