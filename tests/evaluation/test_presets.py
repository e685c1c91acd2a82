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
            "--weights", f"alexnet={torchvision_weights('alexnet')}", f"vgg16={torchvision_weights('vgg16')}",
            "--per-image", str(out), "--num-workers", "0",
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


def _styleid_reference(stylized, content, style, *, vgg_path, alex_path, art_path, size):
    """StyleID ``eval_artfid.py`` (mode ``art_fid``) and its CFSD written out in float64 on the same files.

    Images are read as its ``ImagePathDataset`` does (Pillow, ``convert("RGB")``); LPIPS and the art
    Inception see ``Compose([Resize(size), ToTensor()])`` (StyleID: 512), LPIPS_gray
    ``Compose([Resize(size), Grayscale(), ToTensor()])``, CFSD ``ToTensor()`` at the file's own size.
    """
    pytest.importorskip("lpips")
    from scipy import linalg
    from test_lpips_preset import _package_lpips
    from torchvision.transforms import Compose, Grayscale, Resize, ToTensor

    model = _package_lpips(alex_path).double()
    vgg = torchvision.models.vgg19()
    vgg.load_state_dict(torch.load(vgg_path, weights_only=True))
    trunk = vgg.features[:12].double().eval()
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    art = torchvision.models.Inception3(num_classes=1000, aux_logits=True, init_weights=False)
    art.load_state_dict(torch.load(art_path, weights_only=True), strict=False)  # as StyleID does
    art.fc = torch.nn.Identity()  # model(batch, return_features=True): the flattened avgpool output
    art = art.double().eval()

    def read(path, transform):
        return transform(Image.open(path).convert("RGB")).to(torch.float64)[None]

    def similarity(x):
        feat = trunk((x - mean) / std)
        b, c, h, w = feat.shape
        feat = feat.transpose(1, 3).reshape(b, h * w, c) / c
        return torch.bmm(feat, feat.transpose(1, 2))

    def statistics(paths):
        act = torch.cat([art(read(p, Compose([Resize(size), ToTensor()]))) for p in paths]).numpy()
        return np.mean(act, axis=0), np.cov(act, rowvar=False)

    out = {"lpips_content": [], "lpips_gray": [], "cfsd": []}
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        colour, grey = Compose([Resize(size), ToTensor()]), Compose([Resize(size), Grayscale(), ToTensor()])
        for s_path, c_path in zip(stylized, content, strict=True):
            s, c = read(s_path, colour), read(c_path, colour)
            out["lpips_content"].append(model(s * 2 - 1, c * 2 - 1).item())
            s_grey, c_grey = read(s_path, grey), read(c_path, grey)
            out["lpips_gray"].append(model(s_grey * 2 - 1, c_grey * 2 - 1).item())
            m_s, m_c = similarity(read(s_path, ToTensor())), similarity(read(c_path, ToTensor()))
            kl = F.kl_div(m_s.log_softmax(-1).view(1, -1), m_c.softmax(-1).view(1, -1), reduction="batchmean")
            out["cfsd"].append(kl.item())
        (mu1, sigma1), (mu2, sigma2) = statistics(stylized), statistics(style)
        covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
        diff = mu1 - mu2
        fid = diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real)
    values = {name: float(np.mean(v)) for name, v in out.items()}
    values["fid_art"] = float(fid)
    values["artfid"] = (1 + values["lpips_content"]) * (1 + values["fid_art"])
    return values


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:FID statistics from .* samples:UserWarning")
def test_styleid_preset_equals_styleid_evaluation(
    tmp_path, photos, vgg19_scaled, torchvision_weights, art_inception_weights
):
    content = photos(3, 60, dtype=torch.uint8)[..., 10:50, :]  # 40 x 60: the shorter side is resized
    stylized = (
        (F.avg_pool2d(content.float(), 3, stride=1, padding=1) * 0.8 + 20).flip(-1).round().to(torch.uint8)
    )
    style = photos(7, 96, dtype=torch.uint8)[3:].flip(-2)
    # StyleID pairs by sorted order; the names differ
    c_paths = save_images(tmp_path / "cnt", content, [f"content_{i}.png" for i in range(3)])
    s_paths = save_images(tmp_path / "out", stylized, [f"stylized_{i}.png" for i in range(3)])
    y_paths = save_images(tmp_path / "sty", style[:2]) + save_images(
        tmp_path / "sty", style[2:, :, :80], ["x.png", "y.png"]
    )
    alex = torchvision_weights("alexnet")
    size = 80  # StyleID: 512; smaller keeps the test fast and changes no code path
    values = evaluate(
        tmp_path / "out", content=tmp_path / "cnt", style=tmp_path / "sty", preset="styleid", pair_by="sorted",
        weights={"alexnet": alex, "vgg19": vgg19_scaled, "art_inception": art_inception_weights},
        progress=False, batch_size=2, styleid_size=size, device="cpu",
    )  # fmt: skip
    expected = _styleid_reference(
        s_paths,
        c_paths,
        y_paths,
        vgg_path=vgg19_scaled,
        alex_path=alex,
        art_path=art_inception_weights,
        size=size,
    )
    assert list(values) == ["artfid", "fid_art", "lpips_content", "lpips_gray", "cfsd"]
    for name, value in expected.items():
        assert value > 1e-3, name
        assert values[name] == pytest.approx(value, rel=1e-5), name


def test_styleid_metrics_need_their_folders(tmp_path, photos, capsys):
    save_images(tmp_path / "out", photos(2, 16, dtype=torch.uint8))
    save_images(tmp_path / "cnt", photos(2, 16, dtype=torch.uint8))
    assert (
        main(["evaluate", str(tmp_path / "out"), "--content", str(tmp_path / "cnt"), "--preset", "styleid"])
        == 2
    )
    assert "Metric 'fid_art' needs --style" in capsys.readouterr().err
    # artfid alone brings the two metrics it is computed from
    assert main(["evaluate", str(tmp_path / "out"), "--metrics", "artfid"]) == 2
    assert "Metric 'lpips_content' needs --content" in capsys.readouterr().err
