"""PSNR and SSIM as super-resolution papers report them: BasicSR's definitions and scikit-image's rgb2ycbcr.

BasicSR (``basicsr/metrics/psnr_ssim.py``) works on HWC images in [0, 255] read by OpenCV, i.e. in BGR
order; its SSIM filters with ``cv2.filter2D`` and keeps the valid region. The reference below writes those
definitions out in numpy float64 (OpenCV is not a dependency): the 11-tap Gaussian of
``cv2.getGaussianKernel(11, 1.5)``, its outer product as the 2-D window, the valid correlation, and the
BT.601 luma of ``bgr2ycbcr(y_only=True)`` applied to the BGR image.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pytorch_msssim
import torch
import torch.nn.functional as F
from _numerics import assert_float32_close
from skimage.color import rgb2ycbcr

from percep_lightning.functional import ms_ssim, psnr, rgb_to_y, ssim
from percep_lightning.losses import MSSSIMLoss, SSIMLoss

# --------------------------------------------------------------------------------------- the BasicSR reference


def _bgr_to_y(img: np.ndarray) -> np.ndarray:
    """BasicSR's ``to_y_channel`` on a BGR image in [0, 255]: ``bgr2ycbcr(img / 255, y_only=True) * 255``."""
    return ((img / 255.0) @ np.array([24.966, 128.553, 65.481]) + 16.0)[..., None]


def _prepare(img: np.ndarray, crop_border: int, test_y_channel: bool) -> np.ndarray:
    img = img.astype(np.float64)
    if crop_border != 0:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    return _bgr_to_y(img) if test_y_channel else img


def basicsr_psnr(img: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool) -> float:
    img, img2 = _prepare(img, crop_border, test_y_channel), _prepare(img2, crop_border, test_y_channel)
    mse = np.mean((img - img2) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 * 255.0 / mse))


def _cv2_gaussian_kernel(ksize: int = 11, sigma: float = 1.5) -> np.ndarray:
    """``cv2.getGaussianKernel(ksize, sigma)`` for sigma > 0: exp(-(i - (k-1)/2)^2 / (2 sigma^2)), normalised."""
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _filter2d_valid(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """``cv2.filter2D(img, -1, window)[r:-r, r:-r]``: correlation over the positions the window fits in."""
    patches = np.lib.stride_tricks.sliding_window_view(img, window.shape)
    return np.einsum("ijkl,kl->ij", patches, window)


def basicsr_ssim_map(img: np.ndarray, img2: np.ndarray) -> np.ndarray:
    """BasicSR's ``_ssim`` on one channel in [0, 255], before its final mean."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = _cv2_gaussian_kernel(11, 1.5)
    window = np.outer(kernel, kernel)
    mu1, mu2 = _filter2d_valid(img, window), _filter2d_valid(img2, window)
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = _filter2d_valid(img**2, window) - mu1_sq
    sigma2_sq = _filter2d_valid(img2**2, window) - mu2_sq
    sigma12 = _filter2d_valid(img * img2, window) - mu1_mu2
    return ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))


def basicsr_ssim(img: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool) -> float:
    img, img2 = _prepare(img, crop_border, test_y_channel), _prepare(img2, crop_border, test_y_channel)
    return float(np.mean([basicsr_ssim_map(img[..., i], img2[..., i]).mean() for i in range(img.shape[2])]))


def _bgr(images: torch.Tensor, scale: float) -> list[np.ndarray]:
    """``(N, 3, H, W)`` RGB tensors -> HWC BGR float64 arrays in [0, 255], as OpenCV reads image files."""
    return [(x.permute(1, 2, 0).double().numpy() * scale)[..., ::-1].copy() for x in images]


# ------------------------------------------------------------------------------------------------ the images


@pytest.fixture(scope="module")
def sr_pair(photos) -> tuple[torch.Tensor, torch.Tensor]:
    """Three real 3 x 48 x 48 photographs (uint8) and their x2 bicubic down-up reconstruction with noise."""
    target = photos(3, 48, torch.uint8)
    x = target.double() / 255
    low = F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    up = F.interpolate(low, size=(48, 48), mode="bicubic", align_corners=False)
    noise = 0.02 * torch.randn(up.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    preds = ((up + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return preds, target


# Float32 SSIM accumulates round-off mostly in the window sums (11 x 11 taps) of the local statistics.
SSIM_TERMS = 11 * 11


def _as(images: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """The uint8 images as ``dtype`` and the matching data range (255 for uint8, 1 for floats in [0, 1])."""
    if dtype == torch.uint8:
        return images, 255.0
    return images.to(dtype) / 255, 1.0


# ------------------------------------------------------------------------------------------------- rgb_to_y


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.uint8])
def test_rgb_to_y_matches_skimage_rgb2ycbcr(photos, dtype: torch.dtype) -> None:
    images = photos(3, 40, torch.uint8)
    ours = rgb_to_y(_as(images, dtype)[0])
    assert ours.shape == (3, 1, 40, 40)
    for i, image in enumerate(images):
        expected = rgb2ycbcr(image.permute(1, 2, 0).numpy())[..., 0]  # Y in [16, 235]
        scale = 1.0 if dtype == torch.uint8 else 255.0
        # float32 holds Y to 2^-24 relative, a few units of 1e-6 on [16, 235] after the three products
        tolerance = 1e-10 if dtype == torch.float64 else 235 * 2.0**-21
        np.testing.assert_allclose(ours[i, 0].double().numpy() * scale, expected, rtol=0, atol=tolerance)


def test_rgb_to_y_range_grey_and_batch_shapes() -> None:
    assert rgb_to_y(torch.zeros(2, 3, 4, 4)).unique().tolist() == pytest.approx([16 / 255])
    assert rgb_to_y(torch.full((3, 4, 4), 255.0), data_range=255.0).unique().tolist() == pytest.approx(
        [235.0]
    )
    grey = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(rgb_to_y(grey), rgb_to_y(grey.expand(-1, 3, -1, -1)))
    assert rgb_to_y(torch.rand(4, 2, 3, 6, 6)).shape == (4, 2, 1, 6, 6)


def test_rgb_to_y_errors() -> None:
    with pytest.raises(ValueError, match=r"\(\*, 3, H, W\) or \(\*, 1, H, W\), but got \(1, 2, 4, 4\)"):
        rgb_to_y(torch.rand(1, 2, 4, 4))
    with pytest.raises(TypeError, match="uint8 or floating point, but got dtype torch.int64"):
        rgb_to_y(torch.zeros(1, 3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`data_range` to be > 0, but got 0"):
        rgb_to_y(torch.rand(1, 3, 4, 4), data_range=0)


# --------------------------------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64, torch.float32])
@pytest.mark.parametrize("crop_border", [0, 4])
@pytest.mark.parametrize("channel", ["rgb", "y"])
def test_psnr_matches_basicsr(sr_pair, dtype: torch.dtype, crop_border: int, channel: str) -> None:
    preds_u8, target_u8 = sr_pair
    (preds, data_range), (target, _) = _as(preds_u8, dtype), _as(target_u8, dtype)
    ours = psnr(preds, target, channel=channel, crop_border=crop_border, reduction="none")
    assert ours.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    expected = [
        basicsr_psnr(p, t, crop_border, test_y_channel=channel == "y")
        for p, t in zip(_bgr(preds_u8, 1.0), _bgr(target_u8, 1.0), strict=True)
    ]
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=1e-5)
    # the default data range follows the dtype: passing it explicitly changes nothing
    torch.testing.assert_close(
        psnr(preds, target, data_range=data_range, channel=channel, crop_border=crop_border), ours.mean()
    )


def test_psnr_per_channel_is_the_mean_of_channel_psnrs(sr_pair) -> None:
    preds, target = sr_pair
    ours = psnr(preds, target, channel="per_channel", reduction="none")
    for i, (p, t) in enumerate(zip(_bgr(preds, 1.0), _bgr(target, 1.0), strict=True)):
        per_channel = [basicsr_psnr(p[..., c : c + 1], t[..., c : c + 1], 0, False) for c in range(3)]
        assert float(ours[i]) == pytest.approx(np.mean(per_channel), rel=1e-5)
    # three different numbers, as the seed lists them
    rgb, y = psnr(preds, target), psnr(preds, target, channel="y")
    assert len({round(float(v), 3) for v in (ours.mean(), rgb, y)}) == 3


def test_psnr_y_on_grey_images_is_r_equals_g_equals_b(sr_pair) -> None:
    preds, target = (x[:, :1] for x in sr_pair)
    expected = psnr(preds.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1), channel="y")
    torch.testing.assert_close(psnr(preds, target, channel="y"), expected)


def test_psnr_y_gradient_is_finite(sr_pair) -> None:
    preds, target = (x.double() / 255 for x in sr_pair)
    preds = preds[:1, :, :16, :16].clone().requires_grad_(True)
    target = target[:1, :, :16, :16]
    assert torch.autograd.gradcheck(
        lambda p: psnr(p, target, channel="y", crop_border=2, reduction="none"), (preds,)
    )


# --------------------------------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64, torch.float32])
@pytest.mark.parametrize("crop_border", [0, 4])
@pytest.mark.parametrize("channel", ["rgb", "per_channel", "y"])
def test_ssim_matches_basicsr(sr_pair, dtype: torch.dtype, crop_border: int, channel: str) -> None:
    preds_u8, target_u8 = sr_pair
    (preds, _), (target, _) = _as(preds_u8, dtype), _as(target_u8, dtype)
    ours = ssim(preds, target, channel=channel, crop_border=crop_border, reduction="none")
    expected = torch.tensor(
        [
            basicsr_ssim(p, t, crop_border, test_y_channel=channel == "y")
            for p, t in zip(_bgr(preds_u8, 1.0), _bgr(target_u8, 1.0), strict=True)
        ],
        dtype=torch.float64,
    )
    if dtype == torch.float64:
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    else:  # uint8 and float32 images are computed in float32
        assert_float32_close(ours, expected, terms=SSIM_TERMS)


def test_ssim_map_matches_basicsr_map(sr_pair) -> None:
    preds_u8, target_u8 = sr_pair
    preds, target = preds_u8.double(), target_u8.double()
    value, ssim_map = ssim(
        preds, target, data_range=255.0, channel="y", crop_border=3, return_map=True, reduction="none"
    )
    assert ssim_map.shape == (3, 1, 48 - 6 - 10, 48 - 6 - 10)
    for i, (p, t) in enumerate(zip(_bgr(preds_u8, 1.0), _bgr(target_u8, 1.0), strict=True)):
        expected = basicsr_ssim_map(_prepare(p, 3, True)[..., 0], _prepare(t, 3, True)[..., 0])
        np.testing.assert_allclose(ssim_map[i, 0].numpy(), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(value, ssim_map.mean(dim=(1, 2, 3)))
    torch.testing.assert_close(
        value,
        ssim(preds_u8, target_u8, channel="y", crop_border=3, reduction="none").double(),
        atol=1e-5,
        rtol=0,
    )


def test_ssim_map_per_channel_and_gradient() -> None:
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=generator)
    preds = (target + 0.1 * torch.randn(target.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    mean, ssim_map = ssim(preds, target, kernel_size=5, return_map=True)
    assert ssim_map.shape == (2, 3, 12, 12)
    torch.testing.assert_close(mean, ssim(preds, target, kernel_size=5))
    preds = preds[:1, :, :8, :8].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p: ssim(p, target[:1, :, :8, :8], kernel_size=5, return_map=True)[1], (preds,)
    )


def test_ms_ssim_y_channel_and_crop_match_pytorch_msssim(photos) -> None:
    """MS-SSIM on scikit-image's Y channel, cropped, computed by pytorch-msssim (which needs sides > 160)."""
    target = photos(2, 176, torch.uint8)
    preds = torch.flip(target, dims=(-1,)) // 4 + target // 4 * 3
    ours = ms_ssim(preds, target, channel="y", crop_border=4, reduction="none")

    def y(images: torch.Tensor) -> torch.Tensor:
        planes = [rgb2ycbcr(x.permute(1, 2, 0).numpy())[4:-4, 4:-4, 0] for x in images]
        return torch.from_numpy(np.stack(planes))[:, None]

    expected = pytorch_msssim.ms_ssim(y(preds), y(target), data_range=255.0, size_average=False)
    assert expected.dtype == torch.float64
    assert_float32_close(ours, expected, terms=SSIM_TERMS)


def test_uint8_equals_float_images(sr_pair) -> None:
    preds, target = sr_pair
    as_float = (preds.double() / 255, target.double() / 255)
    assert ssim(preds, target).dtype == torch.float32
    assert_float32_close(ssim(preds, target), ssim(*as_float), terms=SSIM_TERMS)
    big_p, big_t = (
        F.interpolate(x.double(), size=(176, 176), mode="nearest").to(torch.uint8) for x in sr_pair
    )
    expected = ms_ssim(big_p.double() / 255, big_t.double() / 255)
    assert_float32_close(ms_ssim(big_p, big_t), expected, terms=SSIM_TERMS)


# ------------------------------------------------------------------------------- input_range and the warning


@pytest.mark.parametrize("fn", [ssim, ms_ssim])
def test_input_range_minus_one_one(fn, sr_pair) -> None:
    preds, target = (F.interpolate(x.double() / 255, size=(176, 176), mode="bilinear") for x in sr_pair)
    expected = fn(preds, target, reduction="none")
    ours = fn(2 * preds - 1, 2 * target - 1, input_range=(-1, 1), reduction="none")
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(
        fn(2 * preds - 1, 2 * target - 1, input_range=(-1, 1), data_range=2.0), expected.mean()
    )


@pytest.mark.parametrize("loss_cls", [SSIMLoss, MSSSIMLoss])
def test_losses_accept_input_range(loss_cls, sr_pair) -> None:
    preds, target = (F.interpolate(x.double() / 255, size=(176, 176), mode="bilinear") for x in sr_pair)
    expected = loss_cls()(preds, target)
    torch.testing.assert_close(loss_cls(input_range=(-1, 1))(2 * preds - 1, 2 * target - 1), expected)
    assert "input_range=(-1.0, 1.0)" in repr(loss_cls(input_range=(-1, 1)))
    with pytest.raises(
        ValueError, match=r"`data_range` to be None or high - low = 2.0 .* but got data_range=1.0"
    ):
        loss_cls(data_range=1.0, input_range=(-1, 1))


@pytest.mark.parametrize(
    "call",
    [
        lambda p, t: ssim(p, t),
        lambda p, t: ms_ssim(p, t, weights=(0.5, 0.5)),
        lambda p, t: SSIMLoss()(p, t),
        lambda p, t: MSSSIMLoss(weights=(0.5, 0.5))(p, t),
    ],
    ids=["ssim", "ms_ssim", "SSIMLoss", "MSSSIMLoss"],
)
def test_warns_once_when_values_leave_the_range(call) -> None:
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call(x, x)  # [0, 1]: silent
        call((x * 1.05).clamp(max=1.05), x)  # a small overshoot of an un-clamped output: silent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for scale in (255.0, 200.0, 255.0):
            call(x * scale, x * scale)
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "`preds` and `target` have values far outside [0, 1] (data_range=1)" in message
    assert "`data_range` (e.g. 255.0) or `input_range` (e.g. (-1, 1))" in message
    assert caught[0].filename == __file__  # points at the caller's line
    with pytest.warns(UserWarning, match=r"`preds` has values far outside \[0, 1\]"):
        call(2 * x - 1, x)


# ------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [psnr, ssim, ms_ssim])
def test_channel_and_crop_errors(fn) -> None:
    x = torch.rand(1, 3, 20, 24)
    with pytest.raises(
        ValueError, match=r"`channel` to be one of \('rgb', 'y', 'per_channel'\), but got 'Y'"
    ):
        fn(x, x, channel="Y")
    with pytest.raises(ValueError, match=r"leave pixels in images of size \(20, 24\), but crop_border=10"):
        fn(x, x, crop_border=10)
    with pytest.raises(ValueError, match=r"`crop_border` to be >= 0, but got -1"):
        fn(x, x, crop_border=-1)
    with pytest.raises(ValueError, match=r"3 \(RGB\) or 1 channels for channel='y', but got 2"):
        fn(x[:, :2], x[:, :2], channel="y")
    with pytest.raises(TypeError, match="both uint8 or both floating point"):
        fn((x * 255).byte(), x)


def test_ssim_size_error_names_the_crop() -> None:
    x = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match=r"kernel_size=11 .* spatial size \(8, 8\) after crop_border=6"):
        ssim(x, x, crop_border=6)
    with pytest.raises(ValueError, match=r"`input_range` to satisfy low < high, but got \(1, -1\)"):
        ssim(x, x, input_range=(1, -1))
