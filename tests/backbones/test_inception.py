"""FID Inception: parity with torch-fidelity on one official-format file, one forward for both heads."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from percep_lightning.backbones import FIDInceptionV3
from percep_lightning.backbones.inception import resize_like_tensorflow1


@pytest.fixture(scope="module")
def inception(inception_weights):
    return FIDInceptionV3(weights=inception_weights)


def _torch_fidelity(path, features):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3(
        "inception-v3-compat", features, feature_extractor_weights_path=str(path)
    )


@pytest.mark.parametrize("size", [(299, 299), (64, 80), (512, 384)])
def test_resize_matches_torch_fidelity(size):
    x = torch.rand(2, 3, *size) * 255
    expected = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    torch.testing.assert_close(resize_like_tensorflow1(x), expected, rtol=0, atol=0)


def test_matches_torch_fidelity(inception, inception_weights, photos):
    images = photos(3, 96, dtype=torch.uint8)
    reference = _torch_fidelity(inception_weights, ["2048", "logits_unbiased"])
    with torch.inference_mode():
        pool3, logits = reference(images)
        ours = inception(images)
    assert pool3.abs().mean() > 1e-3  # the random network is not degenerate
    torch.testing.assert_close(ours.pool3, pool3, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.logits_unbiased, logits, rtol=1e-5, atol=1e-5)


def test_one_forward_equals_two(inception, inception_weights, photos):
    images = photos(2, 64, dtype=torch.uint8)
    with torch.inference_mode():
        both = inception(images)
        (pool3,) = _torch_fidelity(inception_weights, ["2048"])(images)
        (logits,) = _torch_fidelity(inception_weights, ["logits_unbiased"])(images)
    torch.testing.assert_close(both.pool3, pool3, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both.logits_unbiased, logits, rtol=1e-5, atol=1e-5)


def test_frozen_and_eval(inception):
    inception.train()
    assert not inception.training
    assert not any(p.requires_grad for p in inception.parameters())


def test_bad_input_and_options(inception):
    with pytest.raises(ValueError, match=r"Expected images of shape \(N, 3, H, W\), but got \(2, 1, 8, 8\)"):
        inception(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(
        ValueError, match=r"Expected `resize` to be 'tensorflow' or 'bilinear', but got 'area'"
    ):
        FIDInceptionV3(weights=None, resize="area")


def test_wrong_file_named(tmp_path, torchvision_weights):
    with pytest.raises(
        RuntimeError, match=r"vgg16-random\.pth do not match the official inception_fid format"
    ):
        FIDInceptionV3(weights=torchvision_weights("vgg16"))


def test_random_weights_do_not_collapse(photos):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = FIDInceptionV3(weights=None)
    with torch.inference_mode():
        out = net(photos(3, 64, dtype=torch.uint8))
    # Different photographs give clearly different features (FID/IS of random weights still move).
    # (PyTorch's default init gives a spread of ~1e-8 here, and FID ~1e-15 between any two sets.)
    spread = out.pool3.std(dim=0).mean()
    assert spread > 1e-2, spread
