"""SSIM and MS-SSIM: parity with pytorch-msssim and scikit-image on real photographs, gradients, errors."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import numpy as np
import pytest
import pytorch_msssim
import torch
import torch.nn.functional as F
from skimage import data
from skimage.metrics import structural_similarity

from percep_lightning.functional._ssim_kernels import SSIMFunction, ssim_and_cs_reference
from percep_lightning.functional.ssim import MS_SSIM_WEIGHTS, gaussian_window, ms_ssim, ssim
from percep_lightning.losses.ssim import MSSSIMLoss, SSIMLoss


def _crop(name: str, height: int, width: int, top: int = 0, left: int = 0) -> torch.Tensor:
    """A bundled photograph as a float ``(1, 3, height, width)`` tensor in [0, 1], cropped (full resolution)."""
    image = getattr(data, name)()[top : top + height, left : left + width, :3]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255


def _distort(x: torch.Tensor, kind: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if kind == "noise":
        return (x + 0.08 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    if kind == "blur":
        window = gaussian_window(7, 2.0)
        kernel = (window[:, None] * window[None]).expand(x.shape[1], 1, 7, 7)
        return F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), kernel, groups=x.shape[1])
    if kind == "quantised":  # coarse 8-level quantisation with a brightness shift, JPEG-like banding
        return ((x * 7).round() / 7 * 0.9 + 0.05).clamp(0, 1)
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def small_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two real 3 x 64 x 72 photographs, and a distorted version of each (noise, blur)."""
    target = torch.cat([_crop("astronaut", 64, 72, 40, 180), _crop("coffee", 64, 72, 100, 200)])
    preds = torch.cat([_distort(target[:1], "noise"), _distort(target[1:], "blur")])
    return preds, target


# ------------------------------------------------------------------------------------------------ SSIM parity


@pytest.mark.parametrize("distortion", ["noise", "blur", "quantised"])
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ssim_matches_pytorch_msssim_and_skimage(distortion: str, data_range: float) -> None:
    target = torch.cat([_crop("astronaut", 80, 96, 30, 200), _crop("chelsea", 80, 96, 60, 150)]) * data_range
    preds = _distort(target / data_range, distortion) * data_range

    ours = ssim(preds, target, data_range=data_range, reduction="none")
    reference = pytorch_msssim.ssim(preds, target, data_range=data_range, size_average=False)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)

    for i in range(target.shape[0]):
        expected = structural_similarity(
            preds[i].permute(1, 2, 0).double().numpy(),
            target[i].permute(1, 2, 0).double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=data_range,
            channel_axis=-1,
        )
        assert abs(float(ours[i]) - expected) < 1e-5


# skimage's Gaussian filter truncates at 3.5 sigma: these sigmas give windows of exactly 3, 5, 7 and 11 taps.
@pytest.mark.parametrize(("kernel_size", "sigma"), [(3, 0.3), (5, 0.5), (7, 0.8), (11, 1.5)])
def test_float64_ssim_matches_skimage_to_float64_precision(kernel_size: int, sigma: float) -> None:
    target = torch.cat([_crop("astronaut", 48, 56, 30, 200), _crop("chelsea", 48, 56, 60, 150)]).double()
    preds = _distort(target.float(), "noise").double()
    expected = torch.tensor(
        [
            structural_similarity(
                preds[i].permute(1, 2, 0).numpy(),
                target[i].permute(1, 2, 0).numpy(),
                gaussian_weights=True,
                sigma=sigma,
                use_sample_covariance=False,
                data_range=1.0,
                channel_axis=-1,
            )
            for i in range(target.shape[0])
        ],
        dtype=torch.float64,
    )
    options = {"kernel_size": kernel_size, "sigma": sigma}
    values = {
        "ssim": ssim(preds, target, reduction="none", **options),
        "SSIMLoss": 1 - SSIMLoss(reduction="none", **options)(preds, target),
        # One scale of MS-SSIM is the full SSIM of that scale.
        "ms_ssim": ms_ssim(preds, target, weights=(1.0,), reduction="none", **options),
        "MSSSIMLoss": 1 - MSSSIMLoss(weights=(1.0,), reduction="none", **options)(preds, target),
        # A module cast to float64 keeps its exact window (not a float32 one cast up).
        "SSIMLoss.double()": 1 - SSIMLoss(reduction="none", **options).double()(preds, target),
        "MSSSIMLoss.double()": 1
        - MSSSIMLoss(weights=(1.0,), reduction="none", **options).double()(preds, target),
    }
    for name, value in values.items():
        assert value.dtype == torch.float64, name
        torch.testing.assert_close(value, expected, atol=1e-12, rtol=0, msg=name)


def test_ssim_grayscale_and_non_square_matches_pytorch_msssim() -> None:
    target = torch.from_numpy(data.camera()[100:161, 200:287]).float()[None, None] / 255
    preds = _distort(target, "noise")
    torch.testing.assert_close(
        ssim(preds, target, reduction="none"),
        pytorch_msssim.ssim(preds, target, data_range=1.0, size_average=False),
        atol=1e-5,
        rtol=0,
    )


def test_ssim_custom_window_and_constants_match_pytorch_msssim(
    small_pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    preds, target = small_pair
    ours = ssim(preds, target, kernel_size=7, sigma=1.0, k1=0.02, k2=0.05, reduction="none")
    reference = pytorch_msssim.ssim(
        preds, target, data_range=1.0, win_size=7, win_sigma=1.0, K=(0.02, 0.05), size_average=False
    )
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def _assert_grad_close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """Float32 gradient against a float64 one, to float32 rounding relative to the gradient's scale."""
    scale = float(reference.abs().max())
    torch.testing.assert_close(ours.double(), reference, atol=3e-4 * scale, rtol=0)


def test_ssim_gradient_matches_pytorch_msssim(small_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The closed-form backward (float32) equals autograd through the reference (float64), for both inputs."""
    preds, target = small_pair
    ours = [t.clone().requires_grad_(True) for t in (preds, target)]
    theirs = [t.double().requires_grad_(True) for t in (preds, target)]
    ssim(*ours).backward()
    pytorch_msssim.ssim(*theirs, data_range=1.0).backward()
    for a, b in zip(ours, theirs, strict=True):
        _assert_grad_close(a.grad, b.grad)


def test_ssim_identity_and_reductions(small_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = small_pair
    torch.testing.assert_close(ssim(target, target), torch.tensor(1.0))
    per_image = ssim(preds, target, reduction="none")
    assert per_image.shape == (2,)
    assert (per_image < 1).all()
    torch.testing.assert_close(ssim(preds, target), per_image.mean())
    torch.testing.assert_close(ssim(preds, target, reduction="sum"), per_image.sum())
    torch.testing.assert_close(ssim(preds, target, validate_args=False), per_image.mean())


def test_ssim_is_symmetric(small_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = small_pair
    torch.testing.assert_close(ssim(preds, target), ssim(target, preds))


def test_gaussian_window_matches_pytorch_msssim() -> None:
    expected = importlib.import_module("pytorch_msssim.ssim")._fspecial_gauss_1d(11, 1.5).flatten()
    torch.testing.assert_close(gaussian_window(11, 1.5), expected)
    assert gaussian_window(5, 1.0, dtype=torch.float64).dtype == torch.float64


# --------------------------------------------------------------------------------------------- MS-SSIM parity


@pytest.fixture(scope="module")
def large_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two real 3 x 193 x 201 photographs (odd sides exercise the pooling padding), noisy and blurred."""
    target = torch.cat([_crop("astronaut", 193, 201, 20, 150), _crop("coffee", 193, 201, 100, 250)])
    preds = torch.cat([_distort(target[:1], "noise"), _distort(target[1:], "blur")])
    return preds, target


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ms_ssim_matches_pytorch_msssim(
    large_pair: tuple[torch.Tensor, torch.Tensor], data_range: float
) -> None:
    preds, target = (t * data_range for t in large_pair)
    ours = ms_ssim(preds, target, data_range=data_range, reduction="none")
    reference = pytorch_msssim.ms_ssim(preds, target, data_range=data_range, size_average=False)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_ms_ssim_custom_weights_match_pytorch_msssim(large_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = large_pair
    weights = (0.2, 0.3, 0.5)
    ours = ms_ssim(preds, target, weights=weights, reduction="none")
    reference = pytorch_msssim.ms_ssim(
        preds, target, data_range=1.0, weights=list(weights), size_average=False
    )
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_ms_ssim_gradient_matches_pytorch_msssim(large_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = large_pair
    ours, theirs = preds.clone().requires_grad_(True), preds.double().requires_grad_(True)
    ms_ssim(ours, target).backward()
    pytorch_msssim.ms_ssim(theirs, target.double(), data_range=1.0).backward()
    _assert_grad_close(ours.grad, theirs.grad)


def test_ms_ssim_negative_terms_give_no_nan() -> None:
    """Anti-correlated images make the contrast-structure terms negative: clamped to 0, not NaN."""
    target = _crop("chelsea", 176, 176, 50, 150)
    preds = (1.0 - target).requires_grad_(True)
    ours = ms_ssim(preds, target, reduction="none")
    reference = pytorch_msssim.ms_ssim(preds.detach(), target, data_range=1.0, size_average=False)
    torch.testing.assert_close(ours.detach(), reference, atol=1e-5, rtol=0)
    _, cs = SSIMFunction.apply(preds.detach(), target, gaussian_window(), 1e-4, 9e-4)
    assert (cs < 0).all()  # the situation the clamp is for
    ours.sum().backward()
    assert torch.isfinite(ours).all()
    assert torch.isfinite(preds.grad).all()


def test_ms_ssim_identity_and_reductions(large_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = large_pair
    torch.testing.assert_close(ms_ssim(target, target), torch.tensor(1.0))
    per_image = ms_ssim(preds, target, reduction="none")
    assert per_image.shape == (2,)
    torch.testing.assert_close(ms_ssim(preds, target), per_image.mean())
    torch.testing.assert_close(ms_ssim(preds, target, reduction="sum"), per_image.sum())


def test_ms_ssim_single_scale_is_ssim(small_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = small_pair
    torch.testing.assert_close(ms_ssim(preds, target, weights=(1.0,)), ssim(preds, target))


# ------------------------------------------------------------------------------------------------- gradients


@pytest.fixture
def single_thread() -> Iterator[None]:
    """gradcheck runs thousands of tiny forward passes: thread start-up would dominate on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.usefixtures("single_thread")
def test_ssim_gradcheck() -> None:
    preds = _tiny(2, 2, 7, 6, seed=0).requires_grad_(True)
    target = _tiny(2, 2, 7, 6, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, t: ssim(p, t, kernel_size=3, sigma=1.0, reduction="none"), (preds, target)
    )


@pytest.mark.usefixtures("single_thread")
def test_ssim_and_cs_gradgradcheck() -> None:
    """Double backward (create_graph=True) goes through the plain implementation and is correct."""
    preds = _tiny(1, 2, 6, 5, seed=2).requires_grad_(True)
    target = _tiny(1, 2, 6, 5, seed=3).requires_grad_(True)
    window = gaussian_window(3, 1.0, dtype=torch.float64)
    assert torch.autograd.gradgradcheck(
        lambda p, t: SSIMFunction.apply(p, t, window, 1e-2, 3e-2), (preds, target)
    )


@pytest.mark.usefixtures("single_thread")
def test_ssim_function_matches_plain_autograd_for_cs_only_and_both_outputs() -> None:
    preds = _tiny(2, 3, 9, 8, seed=4).requires_grad_(True)
    target = _tiny(2, 3, 9, 8, seed=5)
    window = gaussian_window(5, 1.2, dtype=torch.float64)
    weights = _tiny(2, 3, seed=6)
    for pick in (lambda s, c: (c * weights).sum(), lambda s, c: (s * weights).sum() + c.sum()):
        (ours,) = torch.autograd.grad(pick(*SSIMFunction.apply(preds, target, window, 1e-4, 9e-4)), preds)
        (plain,) = torch.autograd.grad(pick(*ssim_and_cs_reference(preds, target, window, 1e-4, 9e-4)), preds)
        torch.testing.assert_close(ours, plain)


@pytest.mark.usefixtures("single_thread")
def test_ms_ssim_gradcheck() -> None:
    preds = _tiny(1, 2, 9, 10, seed=7).requires_grad_(True)
    target = _tiny(1, 2, 9, 10, seed=8).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, t: ms_ssim(p, t, kernel_size=3, sigma=1.0, weights=(0.4, 0.6), reduction="none"),
        (preds, target),
    )


@pytest.mark.parametrize("fn", [ssim, ms_ssim])
def test_gradient_finite_when_preds_equal_target(fn) -> None:
    target = _crop("astronaut", 176, 176, 100, 100)
    preds = target.clone().requires_grad_(True)
    value = fn(preds, target)
    value.backward()
    torch.testing.assert_close(value.detach(), torch.tensor(1.0))
    assert torch.isfinite(preds.grad).all()
    assert preds.grad.abs().max() < 1e-6  # SSIM is at its maximum


# ----------------------------------------------------------------------------------------- dtypes / autocast


@pytest.mark.parametrize("fn", [ssim, ms_ssim])
def test_autocast_bfloat16_matches_float32(fn) -> None:
    target = _crop("coffee", 176, 176, 100, 200)
    preds32 = _distort(target, "noise").requires_grad_(True)
    expected = fn(preds32, target)
    (expected_grad,) = torch.autograd.grad(expected, preds32)

    preds = preds32.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = fn(preds, target)
        (grad,) = torch.autograd.grad(value, preds)
    assert value.dtype == torch.float32
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert abs(float(value.detach()) - float(expected.detach())) < 1e-3
    assert float((grad - expected_grad).abs().max()) < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_float32(dtype: torch.dtype) -> None:
    target = _crop("chelsea", 40, 48, 100, 100).to(dtype)
    preds = _distort(target.float(), "noise").to(dtype)
    value = ssim(preds, target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, ssim(preds.float(), target.float()))


def test_float64_inputs_give_float64() -> None:
    assert ssim(_tiny(1, 1, 12, 12, seed=0), _tiny(1, 1, 12, 12, seed=1)).dtype == torch.float64


# ------------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("fn", [ssim, ms_ssim])
def test_input_errors(fn) -> None:
    x = torch.rand(1, 3, 176, 176)
    with pytest.raises(ValueError, match="same shape"):
        fn(x, torch.rand(1, 3, 176, 177))
    with pytest.raises(ValueError, match="4-D"):
        fn(x[0], x[0])
    with pytest.raises(ValueError, match="`preds` to be finite"):
        fn(torch.full_like(x, float("nan")), x)
    with pytest.raises(ValueError, match="`target` to be finite"):
        fn(x, torch.full_like(x, float("inf")))
    with pytest.raises(TypeError, match=r"`preds` to be uint8 or floating point, but got dtype torch.int32"):
        fn((x * 255).int(), (x * 255).int())
    with pytest.raises(TypeError, match=r"both uint8 or both floating point, but got dtypes torch.uint8 and"):
        fn((x * 255).byte(), x)


@pytest.mark.parametrize("fn", [ssim, ms_ssim])
def test_argument_errors(fn) -> None:
    x = torch.rand(1, 3, 176, 176)
    with pytest.raises(ValueError, match=r"`data_range` to be > 0, but got 0"):
        fn(x, x, data_range=0)
    with pytest.raises(ValueError, match=r"`data_range` to be > 0, but got -1.0"):
        fn(x, x, data_range=-1.0)
    with pytest.raises(ValueError, match=r"`reduction` to be one of .*'mean'.* but got 'avg'"):
        fn(x, x, reduction="avg")
    with pytest.raises(ValueError, match=r"`kernel_size` to be an odd positive integer, but got 10"):
        fn(x, x, kernel_size=10)
    with pytest.raises(ValueError, match=r"`kernel_size` to be an odd positive integer, but got 0"):
        fn(x, x, kernel_size=0)
    with pytest.raises(ValueError, match=r"`sigma` to be > 0, but got 0"):
        fn(x, x, sigma=0.0)
    with pytest.raises(ValueError, match=r"`k2` to be > 0"):
        fn(x, x, k2=-0.03)


def test_ssim_image_smaller_than_window() -> None:
    x = torch.rand(1, 3, 10, 32)
    with pytest.raises(
        ValueError, match=r"at least kernel_size=11 pixels .* but got spatial size \(10, 32\)"
    ):
        ssim(x, x)


def test_ms_ssim_too_small_image_states_minimum_side() -> None:
    x = torch.rand(1, 3, 160, 300)
    with pytest.raises(ValueError, match=r"exceed .* = 160 pixels, but got spatial size \(160, 300\)"):
        ms_ssim(x, x)
    with pytest.raises(ValueError, match=r"= 40 pixels"):
        ms_ssim(x[..., :40, :], x[..., :40, :], weights=(0.5, 0.5, 0.5))
    ms_ssim(x[..., :41, :], x[..., :41, :], weights=(0.5, 0.5, 0.5))  # 41 > 40 is enough


def test_ms_ssim_weights_errors() -> None:
    x = torch.rand(1, 1, 176, 176)
    with pytest.raises(
        ValueError, match=r"`weights` to be a non-empty sequence of positive numbers, but got \(\)"
    ):
        ms_ssim(x, x, weights=())
    with pytest.raises(ValueError, match=r"`weights` .* but got \(0.5, -0.5\)"):
        ms_ssim(x, x, weights=(0.5, -0.5))
    with pytest.raises(ValueError, match=r"`weights` to be a sequence of positive numbers, but got 'abc'"):
        ms_ssim(x, x, weights="abc")


def test_default_weights() -> None:
    assert MS_SSIM_WEIGHTS == (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
