"""ArtInception and ArtFID against StyleID's eval_artfid.py (mode art_fid) written out with the same files."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch
import torchvision
from _numerics import assert_float32_close
from PIL import Image
from scipy import linalg
from torchvision.transforms import Compose, Resize, ToTensor

from percep_lightning.backbones import ArtInception
from percep_lightning.backbones.art_inception import resize_shorter_side
from percep_lightning.metrics import ArtFID

pytestmark = pytest.mark.filterwarnings("ignore:FID statistics from .* samples:UserWarning")

SIZE = 128  # StyleID resizes to 512; a smaller size keeps the test fast and changes no code path


def _styleid_network(path):
    """StyleID's Inception3 (a copy of torchvision's) loaded strict=False; pooled features out, in float64."""
    net = torchvision.models.Inception3(num_classes=1000, aux_logits=True, init_weights=False)
    net.load_state_dict(torch.load(path, weights_only=True), strict=False)
    net.fc = torch.nn.Identity()  # model(batch, return_features=True): the flattened avgpool output
    return net.double().eval()


# Float32 round-off accumulates over the longest reductions (3 x 3 x 448 taps in Mixed_7) and compounds
# through the 94 convolution + batch-norm layers (as for the FID Inception).
INCEPTION_TERMS = 3 * 3 * 448 * 94


def _styleid_read(images_u8, size):
    """ImagePathDataset + Compose([Resize(size), ToTensor()]) on 8-bit images."""
    transform = Compose([Resize(size), ToTensor()])
    return torch.stack([transform(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images_u8])


def _styleid_frechet(mu1, sigma1, mu2, sigma2):
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real)


def _styleid_lpips(alexnet_path):
    """lpips.LPIPS(net="alex") (StyleID's image_metrics.LPIPS) with the trunk from the torchvision file."""
    import lpips

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True)
    ends = (2, 5, 8, 10, 12)
    state = {}
    for key, value in torch.load(alexnet_path, weights_only=True).items():
        if key.startswith("features."):
            index, rest = key.split(".", 2)[1:]
            k = next(s for s, end in enumerate(ends) if int(index) < end)
            state[f"slice{k + 1}.{index}.{rest}"] = value
    model.net.load_state_dict(state, strict=True)
    return model.double().eval()


@pytest.fixture(scope="module")
def triplets(photos):
    """Non-square 8-bit photographs: 4 content, 4 stylized (blurred, tinted others), 5 style images."""
    content = photos(4, 144, dtype=torch.uint8)[..., 24:120, :]  # 96 x 144
    others = photos(9, 144)[4:8, :, 24:120, :]
    stylized = torch.nn.functional.avg_pool2d(others, 3, stride=1, padding=1).mul(0.85).add(0.1)
    stylized = (stylized * 255).round().to(torch.uint8)
    style = photos(12, 160, dtype=torch.uint8)[7:12].flip(-1)
    return stylized, content, style


@pytest.mark.parametrize("hw", [(96, 144), (160, 100), (128, 128), (61, 77)])
def test_resize_equals_torchvision_resize_on_pil(hw, photos):
    images = photos(2, 200, dtype=torch.uint8)[..., : hw[0], : hw[1]]
    expected = torch.stack(
        [
            torch.from_numpy(np.array(Resize(SIZE)(Image.fromarray(im.permute(1, 2, 0).numpy()))))
            for im in images
        ]
    ).permute(0, 3, 1, 2)
    got = resize_shorter_side(images, SIZE)
    assert got.dtype == torch.uint8
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("memory_format", ["auto", "contiguous", "channels_last"])
def test_features_equal_styleid(art_inception_weights, triplets, memory_format):
    stylized = triplets[0][:2] if memory_format != "auto" else triplets[0]
    ours = ArtInception(weights=art_inception_weights, resize=SIZE, memory_format=memory_format)
    # the file has exactly the network's keys (the folded copies are not state)
    assert ours.ignored_keys == []
    with torch.inference_mode():
        got = ours(stylized)
        expected = _styleid_network(art_inception_weights)(_styleid_read(stylized, SIZE).double())
    assert got.shape == (len(stylized), 2048) and got.abs().mean() > 1e-3
    assert_float32_close(got, expected, terms=INCEPTION_TERMS)


@pytest.mark.slow
def test_artfid_equals_styleid(art_inception_weights, torchvision_weights, triplets):
    stylized, content, style = triplets
    metric = ArtFID(weights=art_inception_weights, lpips_weights=torchvision_weights("alexnet"), resize=SIZE)
    metric.update(stylized[:3], content[:3], style[:2])
    metric.update(stylized[3:], content[3:])
    metric.update_style(style[2:])
    got = metric.compute()

    net = _styleid_network(art_inception_weights)
    with torch.no_grad():
        act_stylized = net(_styleid_read(stylized, SIZE).double()).numpy()
        act_style = net(_styleid_read(style, SIZE).double()).numpy()
        fid = _styleid_frechet(
            np.mean(act_stylized, axis=0), np.cov(act_stylized, rowvar=False),
            np.mean(act_style, axis=0), np.cov(act_style, rowvar=False),
        )  # fmt: skip
        x, y = _styleid_read(stylized, SIZE).double(), _styleid_read(content, SIZE).double()
        lpips_value = float(_styleid_lpips(torchvision_weights("alexnet"))(2 * x - 1, 2 * y - 1).sum() / 4)
    # ours runs in float32 and the reference in float64: the difference is float32 round-off
    assert fid > 1e-3 and lpips_value > 1e-3
    assert float(got["fid"]) == pytest.approx(fid, rel=1e-5)
    assert float(got["lpips"]) == pytest.approx(lpips_value, rel=1e-5)
    assert float(got["artfid"]) == pytest.approx((1 + lpips_value) * (1 + fid), rel=1e-5)


def test_non_strict_loading_reports_what_it_ignored(art_inception_weights):
    state = torch.load(art_inception_weights, weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    del state["fc2.weight"], state["fc2.bias"]
    with pytest.warns(UserWarning, match=r"loaded non-strictly.*'extra\.weight'.*'fc2\.bias', 'fc2\.weight'"):
        net = ArtInception(weights=state, resize=None)
    assert net.ignored_keys == ["extra.weight", "fc2.bias", "fc2.weight"]
    del state["Mixed_7c.branch_pool.conv.weight"]
    with pytest.raises(RuntimeError, match=r"missing keys \(1\): Mixed_7c\.branch_pool\.conv\.weight"):
        ArtInception(weights=state)


def test_errors(art_inception_weights, triplets):
    stylized, content, _ = triplets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = ArtFID(weights=art_inception_weights, lpips_weights=None, resize=80)
    with pytest.raises(ValueError, match=r"same shape, but got \(4, 3, 96, 144\) and \(4, 3, 96, 100\)"):
        metric.update(stylized, content[..., :100])
    metric.update(stylized[:1], content[:1], stylized[:1])
    with pytest.raises(ValueError, match=r"ArtFID needs at least 2 stylized images .*, but got 1"):
        metric.compute()
    with pytest.raises(ValueError, match=r"Expected `resize` to be None or an integer >= 75"):
        ArtInception(weights=None, resize=10)


def test_autocast_does_not_change_the_value(art_inception_weights, torchvision_weights, triplets):
    stylized, content, style = triplets
    values = []
    for autocast in (False, True):
        metric = ArtFID(
            weights=art_inception_weights, lpips_weights=torchvision_weights("alexnet"), resize=80
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            metric.update(stylized[:2], content[:2], style[:2])
        values.append(metric.compute())
    for key in ("artfid", "fid", "lpips"):
        assert values[1][key] == values[0][key], key


def test_default_weights_offline_name_the_file(monkeypatch):
    from percep_lightning.backbones import WEIGHTS, WeightsUnavailableError
    from percep_lightning.backbones import weights as w

    spec = WEIGHTS["art_inception"]
    assert spec.url == "https://huggingface.co/matthias-wright/art_inception/resolve/main/art_inception.pth"
    closed = w.WeightsSpec(
        spec.name, spec.filename, "http://127.0.0.1:9/art_inception.pth", "", spec.description
    )
    monkeypatch.setitem(WEIGHTS, "art_inception", closed)
    with pytest.raises(WeightsUnavailableError, match=r"art_inception.*art_inception\.pth"):
        ArtInception(weights="default")
