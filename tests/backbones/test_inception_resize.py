"""Resize modes of the FID Inception: clean-fid's resizer and pytorch-fid's network, same weights file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _inception_reference import INCEPTION_TERMS
from _numerics import assert_float32_close

from percep_lightning.backbones import RESIZE_MODES, FIDInceptionV3
from percep_lightning.backbones.inception import resize_like_clean_fid
from percep_lightning.functional import frechet_distance


def _native_photo(name: str) -> np.ndarray:
    """A scikit-image photograph at its own size, as uint8 (H, W, 3)."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "camera", "rocket"])
def test_clean_resize_matches_clean_fid(name):
    from cleanfid.resize import make_resizer

    image = _native_photo(name)  # 512x512, 400x600, 300x451, 512x512 grey, 427x640
    expected = make_resizer("PIL", False, "bicubic", (299, 299))(image)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    got = resize_like_clean_fid(x)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_clean_resize_upsamples_small_images_like_clean_fid(photos):
    from cleanfid.resize import make_resizer

    image = photos(1, 64, dtype=torch.uint8)[0].permute(1, 2, 0).numpy()
    expected = make_resizer("PIL", False, "bicubic", (299, 299))(image)
    got = resize_like_clean_fid(torch.from_numpy(image).permute(2, 0, 1)[None].float())[0]
    np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-5)


def test_clean_mode_feeds_the_clean_fid_resize_to_the_network(inception_weights):
    """``resize="clean"``: the network input is clean-fid's resized image scaled as (x - 128) / 128."""
    from cleanfid.resize import make_resizer

    image = _native_photo("coffee")
    net = FIDInceptionV3(weights=inception_weights, resize="clean")
    got = net.preprocess(torch.from_numpy(image).permute(2, 0, 1)[None])
    expected = (make_resizer("PIL", False, "bicubic", (299, 299))(image) - 128) / 128
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-6)


def _pytorch_fid_network(path):
    from unittest import mock

    from pytorch_fid import inception as pfi

    state = torch.load(path, weights_only=True)
    with mock.patch.object(pfi, "load_state_dict_from_url", return_value=state):
        model = pfi.InceptionV3(
            [pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True
        )
    return model.double().eval()


@pytest.mark.slow
def test_pytorch_fid_mode_matches_pytorch_fid(inception_weights, photos):
    from pytorch_fid.fid_score import calculate_frechet_distance

    real = photos(5, 80, dtype=torch.uint8)
    fake = photos(10, 96, dtype=torch.uint8)[5:]
    reference = _pytorch_fid_network(inception_weights)
    ours = FIDInceptionV3(weights=inception_weights, resize="pytorch_fid")
    bilinear = FIDInceptionV3(weights=inception_weights, resize="bilinear")
    stats, ours_stats, bilinear_stats = [], [], []
    with torch.inference_mode():
        for images in (real, fake):
            # pytorch-fid reads images in [0, 1] (ToTensor: float32 / 255); its network runs in float64 here
            expected = reference((images.float() / 255).double())[0].flatten(1)
            got = ours(images).pool3
            assert_float32_close(got, expected, terms=INCEPTION_TERMS)
            stats.append(_np_stats(expected))
            ours_stats.append(_torch_stats(got))
            bilinear_stats.append(_torch_stats(bilinear(images).pool3))
    expected_fid = calculate_frechet_distance(*stats[0], *stats[1])
    assert expected_fid > 1e-3
    assert float(frechet_distance(*ours_stats[0], *ours_stats[1])) == pytest.approx(expected_fid, rel=1e-4)
    # the legacy "bilinear" mode scales as (x - 128) / 128: measurably different from pytorch-fid
    assert float(frechet_distance(*bilinear_stats[0], *bilinear_stats[1])) != pytest.approx(
        expected_fid, rel=1e-4
    )


def _np_stats(features):
    x = features.double().numpy()  # float32 features are exact in float64
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _torch_stats(features):
    mu, sigma = _np_stats(features)
    return torch.from_numpy(mu), torch.from_numpy(sigma)


def test_unknown_resize_lists_the_modes():
    with pytest.raises(
        ValueError,
        match=r"Expected `resize` to be one of \('tensorflow', 'pytorch_fid', 'clean', 'bilinear'\), but got 'area'",
    ):
        FIDInceptionV3(weights=None, resize="area")
    assert RESIZE_MODES == ("tensorflow", "pytorch_fid", "clean", "bilinear")
