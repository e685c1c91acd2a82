"""FID Inception: parity with torch-fidelity on one official-format file, one forward for both heads."""

from __future__ import annotations

import warnings

import pytest
import torch
from _inception_reference import INCEPTION_TERMS, torch_fidelity_float64
from _numerics import assert_float32_close
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from percep_lightning.backbones import FIDInceptionV3
from percep_lightning.backbones.inception import resize_like_tensorflow1


@pytest.fixture(scope="module")
def inception(inception_weights):
    return FIDInceptionV3(weights=inception_weights)


@pytest.mark.parametrize("size", [(299, 299), (64, 80), (512, 384)])
def test_resize_matches_torch_fidelity(size):
    x = torch.rand(2, 3, *size) * 255
    expected = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    torch.testing.assert_close(resize_like_tensorflow1(x), expected, rtol=0, atol=0)


def test_matches_torch_fidelity(inception, inception_weights, photos):
    images = photos(3, 96, dtype=torch.uint8)
    reference = torch_fidelity_float64(inception_weights, ["2048", "logits_unbiased"])
    with torch.inference_mode():
        pool3, logits = reference(images)
        ours = inception(images)
    assert pool3.abs().mean() > 1e-3  # the random network is not degenerate
    assert_float32_close(ours.pool3, pool3.double(), terms=INCEPTION_TERMS)
    assert_float32_close(ours.logits_unbiased, logits.double(), terms=INCEPTION_TERMS)


def test_one_forward_equals_two(inception, inception_weights, photos):
    images = photos(2, 64, dtype=torch.uint8)
    with torch.inference_mode():
        both = inception(images)
        (pool3,) = torch_fidelity_float64(inception_weights, ["2048"])(images)
        (logits,) = torch_fidelity_float64(inception_weights, ["logits_unbiased"])(images)
    assert_float32_close(both.pool3, pool3.double(), terms=INCEPTION_TERMS)
    assert_float32_close(both.logits_unbiased, logits.double(), terms=INCEPTION_TERMS)


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
def test_both_layouts_match_torch_fidelity(inception_weights, photos, memory_format):
    images = photos(2, 64, dtype=torch.uint8)
    net = FIDInceptionV3(weights=inception_weights, memory_format=memory_format)
    with torch.inference_mode():
        (pool3,) = torch_fidelity_float64(inception_weights, ["2048"])(images)
        got = net(images).pool3
    layout = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    assert net.Conv2d_2a_3x3.folded_weight.is_contiguous(memory_format=layout)
    assert_float32_close(got, pool3.double(), terms=INCEPTION_TERMS)


def test_folded_batch_norm_follows_casts_and_loads(inception_weights, photos):
    """The folded convolutions are rebuilt from the official tensors after a cast and after a new load."""
    images = photos(2, 64, dtype=torch.uint8)
    with torch.inference_mode():
        (pool3,) = torch_fidelity_float64(inception_weights, ["2048"])(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = FIDInceptionV3(weights=None)
    assert not any("folded" in key for key in net.state_dict())  # the file format is unchanged
    net.load_state_dict(torch.load(inception_weights, weights_only=True))
    net.double()
    with torch.inference_mode():
        got = net(images).pool3
    # float64 throughout (the fold is computed in float64 from the loaded tensors): far below float32 error
    torch.testing.assert_close(got.double(), pool3.double(), rtol=0, atol=1e-9 * float(pool3.abs().max()))


def test_frozen_and_eval(inception):
    inception.train()
    assert not inception.training
    assert not any(p.requires_grad for p in inception.parameters())


def test_bad_input_and_options(inception):
    with pytest.raises(ValueError, match=r"Expected images of shape \(N, 3, H, W\), but got \(2, 1, 8, 8\)"):
        inception(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"Expected `resize` to be one of \(.*'clean'.*\), but got 'area'"):
        FIDInceptionV3(weights=None, resize="area")
    with pytest.raises(
        ValueError, match=r"Expected `memory_format` to be one of \(.*'channels_last'.*\), but got 'nhwc'"
    ):
        FIDInceptionV3(weights=None, memory_format="nhwc")


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
