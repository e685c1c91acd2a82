"""The one input module: non-tensor input is a TypeError naming the argument in every public function and loss,
and the integer, bool and real-number option checks (a wrong type is a TypeError, a bad value a ValueError)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _stub_extractor import StubExtractor

from percep_lightning import functional
from percep_lightning.backbones import ArtInception, DINOv2Arch, ModuleExtractor
from percep_lightning.callbacks import ImageGridCallback, ImageMetricsCallback
from percep_lightning.evaluation import evaluate
from percep_lightning.functional.inputs import check_bool, check_int, check_real, check_tensors
from percep_lightning.losses import CFSDLoss, MSSSIMLoss, PixelLoss, SSIMLoss, VGGPerceptualLoss
from percep_lightning.metrics import CFSD, CMMD, LPIPS, PSNR, KernelDistance

X = torch.rand(1, 3, 16, 16)


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: functional.psnr(a, b),
        lambda a, b: functional.ssim(a, b),
        lambda a, b: functional.ms_ssim(a, b),
        lambda a, b: functional.pixel_loss(a, b),
        lambda a, b: SSIMLoss()(a, b),
        lambda a, b: MSSSIMLoss()(a, b),
        lambda a, b: PixelLoss()(a, b),
    ],
)
def test_non_tensor_input_is_a_type_error_naming_the_argument(call):
    with pytest.raises(TypeError, match=r"Expected `preds` to be a torch.Tensor, but got int"):
        call(1, X)
    with pytest.raises(TypeError, match=r"Expected `preds` to be a torch.Tensor, but got list"):
        call([X], X)
    with pytest.raises(TypeError, match=r"Expected `target` to be a torch.Tensor, but got int"):
        call(X, 2)


def test_option_checks():
    assert check_int(np.int64(3), "splits", minimum=1) == 3
    with pytest.raises(TypeError, match=r"Expected `splits` to be an integer, but got bool True"):
        check_int(True, "splits")
    with pytest.raises(TypeError, match=r"Expected `splits` to be an integer, but got float 2.0"):
        check_int(2.0, "splits")
    with pytest.raises(ValueError, match=r"Expected `splits` to be >= 1, but got 0"):
        check_int(0, "splits", minimum=1)
    assert check_bool(False, "real") is False
    with pytest.raises(TypeError, match=r"Expected `real` to be a bool, but got int 1"):
        check_bool(1, "real")
    check_tensors(preds=X, target=X)
    assert check_real(np.float32(0.5), "sigma", positive=True) == 0.5
    with pytest.raises(TypeError, match=r"Expected `sigma` to be a real number, but got bool True"):
        check_real(True, "sigma")
    with pytest.raises(ValueError, match=r"Expected `sigma` to be > 0, but got 0"):
        check_real(0, "sigma", positive=True)


FEATURES = torch.rand(1, 4, 8, 8)
VECTORS = torch.rand(4, 8)


@pytest.mark.parametrize(
    ("call", "wrong_type", "bad_value"),
    [
        (
            lambda v: functional.psnr(X, X, crop_border=v),
            ("2", r"Expected `crop_border` to be an integer, but got str '2'"),
            (-1, r"Expected `crop_border` to be >= 0, but got -1"),
        ),
        (
            lambda v: functional.image_cosine_similarity(X, X, size=v),
            (8.0, r"Expected `size` to be an integer, but got float 8.0"),
            (0, r"Expected `size` to be >= 1, but got 0"),
        ),
        (
            lambda v: functional.cfsd(FEATURES, FEATURES, chunk_size=v),
            (True, r"Expected `chunk_size` to be an integer, but got bool True"),
            (0, r"Expected `chunk_size` to be >= 1, but got 0"),
        ),
        (
            lambda v: functional.inception_score(torch.randn(4, 10), splits=v),
            ("2", r"Expected `splits` to be an integer, but got str '2'"),
            (0, r"Expected `splits` to be >= 1, but got 0"),
        ),
        (
            lambda v: functional.cmmd(VECTORS, VECTORS, sigma=v),
            ("1", r"Expected `sigma` to be a real number, but got str '1'"),
            (0.0, r"Expected `sigma` to be finite and > 0, but got 0.0"),
        ),
        (
            lambda v: PSNR(crop_border=v),
            (1.5, r"Expected `crop_border` to be an integer, but got float 1.5"),
            (-2, r"Expected `crop_border` to be >= 0, but got -2"),
        ),
        (
            lambda v: CFSD(weights=None, chunk_size=v),
            ("8", r"Expected `chunk_size` to be an integer, but got str '8'"),
            (0, r"Expected `chunk_size` to be >= 1, but got 0"),
        ),
        (
            lambda v: LPIPS(weights=None, resize=v),
            ("a", r"Expected `resize` to be an integer, but got str 'a'"),
            (0, r"Expected `resize` to be >= 1, but got 0"),
        ),
        (
            lambda v: KernelDistance(StubExtractor(), subset_size=v),
            (2.5, r"Expected `subset_size` to be an integer, but got float 2.5"),
            (0, r"Expected `subset_size` to be >= 1, but got 0"),
        ),
        (
            lambda v: CMMD(StubExtractor(), scale=v),
            ("big", r"Expected `scale` to be a real number, but got str 'big'"),
            (-1.0, r"Expected `scale` to be > 0, but got -1.0"),
        ),
        (
            lambda v: CFSDLoss(weights=None, chunk_size=v),
            (None, r"Expected `chunk_size` to be an integer, but got NoneType None"),
            (-1, r"Expected `chunk_size` to be >= 1, but got -1"),
        ),
        (
            lambda v: SSIMLoss(kernel_size=v),
            (11.0, r"Expected `kernel_size` to be an integer, but got float 11.0"),
            (4, r"Expected `kernel_size` to be an odd positive integer, but got 4"),
        ),
        (
            lambda v: VGGPerceptualLoss(weights=None, style_weight=v),
            ("1", r"Expected `style_weight` to be a real number, but got str '1'"),
            (-1, r"Expected `style_weight` to be a finite number >= 0, but got -1.0"),
        ),
        (
            lambda v: ArtInception(weights=None, resize=v),
            ("512", r"Expected `resize` to be an integer, but got str '512'"),
            (
                10,
                r"Expected `resize` to be None or an integer >= 75 \(the network's smallest input\), but got 10",
            ),
        ),
        (
            lambda v: DINOv2Arch(v, 2, 2),
            (32.0, r"Expected `embed_dim` to be an integer, but got float 32.0"),
            (0, r"Expected `embed_dim` to be >= 1, but got 0"),
        ),
        (
            lambda v: ModuleExtractor(torch.nn.Flatten(), num_features=v),
            ("4", r"Expected `num_features` to be an integer, but got str '4'"),
            (0, r"Expected `num_features` to be >= 1, but got 0"),
        ),
        (
            lambda v: ImageGridCallback(num_samples=v),
            (1.5, r"Expected `num_samples` to be an integer, but got float 1.5"),
            (0, r"Expected `num_samples` to be >= 1, but got 0"),
        ),
        (
            lambda v: evaluate("missing", "missing", metrics="psnr", batch_size=v),
            ("16", r"Expected `batch_size` to be an integer, but got str '16'"),
            (0, r"Expected `batch_size` to be >= 1, but got 0"),
        ),
        (
            lambda v: ImageMetricsCallback(metrics=("psnr",), options={"psnr": {"crop_border": v}}),
            ("4", r"Expected `options\['psnr'\]\['crop_border'\]` to be an integer, but got str '4'"),
            (-1, r"Expected `options\['psnr'\]\['crop_border'\]` to be >= 0, but got -1"),
        ),
    ],
    ids=[
        "functional.psnr",
        "functional.image_cosine_similarity",
        "functional.cfsd",
        "functional.inception_score",
        "functional.cmmd",
        "PSNR",
        "CFSD",
        "LPIPS",
        "KernelDistance",
        "CMMD",
        "CFSDLoss",
        "SSIMLoss",
        "VGGPerceptualLoss",
        "ArtInception",
        "DINOv2Arch",
        "ModuleExtractor",
        "ImageGridCallback",
        "evaluate",
        "ImageMetricsCallback.options",
    ],
)
def test_a_wrong_type_is_a_type_error_and_a_bad_value_a_value_error(call, wrong_type, bad_value):
    value, message = wrong_type
    with pytest.raises(TypeError, match=message):
        call(value)
    value, message = bad_value
    with pytest.raises(ValueError, match=message):
        call(value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: functional.fid_infinity(VECTORS, VECTORS, paired=1),
            r"`paired` to be a bool, but got int 1",
        ),
        (
            lambda: functional.inception_score(torch.randn(4, 10), shuffle="no"),
            r"`shuffle` to be a bool, but got str",
        ),
        (lambda: LPIPS(weights=None, grey=1), r"Expected `grey` to be a bool, but got int 1"),
    ],
    ids=["functional.fid_infinity", "functional.inception_score", "LPIPS"],
)
def test_a_bool_option_of_another_type_is_a_type_error(call, message):
    with pytest.raises(TypeError, match=message):
        call()
