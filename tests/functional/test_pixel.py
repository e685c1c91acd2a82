"""Pixel losses and PSNR: values against torch / scikit-image on real photographs, gradients, errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio

from percep_lightning.functional.pixel import pixel_loss, psnr

KINDS = ("l1", "l2", "charbonnier")


@pytest.fixture(scope="module")
def pair(photos) -> tuple[torch.Tensor, torch.Tensor]:
    """Three real 3 x 32 x 32 photographs and a noisy version of each."""
    target = photos(3, 32)
    noise = 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    return (target + noise).clamp(0, 1), target


@pytest.fixture
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------ values


def test_l1_and_l2_match_torch(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = pair
    torch.testing.assert_close(pixel_loss(preds, target, kind="l1"), F.l1_loss(preds, target))
    torch.testing.assert_close(pixel_loss(preds, target, kind="l2"), F.mse_loss(preds, target))


def test_charbonnier_formula_and_basicsr_convention(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = pair
    expected = torch.sqrt((preds - target) ** 2 + 1e-3**2).mean()
    torch.testing.assert_close(pixel_loss(preds, target, kind="charbonnier"), expected)
    # BasicSR's charbonnier_loss: sqrt(diff^2 + eps) with eps=1e-12, i.e. eps=1e-6 in our (squared) convention
    basicsr = torch.sqrt((preds.double() - target.double()) ** 2 + 1e-12).mean()
    ours = pixel_loss(preds.double(), target.double(), kind="charbonnier", eps=1e-6)
    torch.testing.assert_close(ours, basicsr)


@pytest.mark.parametrize("kind", KINDS)
def test_reductions(pair: tuple[torch.Tensor, torch.Tensor], kind: str) -> None:
    preds, target = pair
    per_image = pixel_loss(preds, target, kind=kind, reduction="none")
    assert per_image.shape == (3,)
    expected = torch.stack(
        [pixel_loss(p[None], t[None], kind=kind) for p, t in zip(preds, target, strict=True)]
    )
    torch.testing.assert_close(per_image, expected)
    torch.testing.assert_close(pixel_loss(preds, target, kind=kind), per_image.mean())
    torch.testing.assert_close(pixel_loss(preds, target, kind=kind, reduction="sum"), per_image.sum())
    torch.testing.assert_close(pixel_loss(preds, target, kind=kind, validate_args=False), per_image.mean())


@pytest.mark.parametrize("kind", KINDS)
def test_identical_images(pair: tuple[torch.Tensor, torch.Tensor], kind: str) -> None:
    _, target = pair
    expected = 1e-3 if kind == "charbonnier" else 0.0  # Charbonnier bottoms out at eps
    torch.testing.assert_close(pixel_loss(target, target, kind=kind), torch.tensor(expected))


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_psnr_matches_skimage(pair: tuple[torch.Tensor, torch.Tensor], data_range: float) -> None:
    preds, target = (t.double() * data_range for t in pair)
    ours = psnr(preds, target, data_range=data_range, reduction="none")
    expected = [
        peak_signal_noise_ratio(t.numpy(), p.numpy(), data_range=data_range)
        for p, t in zip(preds, target, strict=True)
    ]
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(psnr(preds, target, data_range=data_range), ours.mean())
    torch.testing.assert_close(psnr(preds, target, data_range=data_range, reduction="sum"), ours.sum())


def test_psnr_float32_close_to_float64(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = pair
    value = psnr(preds, target)
    assert value.dtype == torch.float32
    assert abs(float(value) - float(psnr(preds.double(), target.double()))) < 1e-4


def test_psnr_is_infinite_for_identical_images_with_zero_gradient(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    preds, target = pair
    preds = torch.cat([target[:1], preds[1:]]).requires_grad_(True)  # first image identical
    values = psnr(preds, target, reduction="none")
    assert torch.isinf(values[0]) and torch.isfinite(values[1:]).all()
    values[1:].sum().backward()
    assert torch.isfinite(preds.grad).all()
    preds.grad = None
    psnr(preds, target).backward()  # inf in the mean: still no NaN in the gradient
    assert torch.isfinite(preds.grad).all()
    assert (preds.grad[0] == 0).all()


# --------------------------------------------------------------------------------------------------- gradients


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("kind", KINDS)
def test_pixel_loss_gradcheck(kind: str) -> None:
    generator = torch.Generator().manual_seed(0)
    preds = torch.rand(2, 2, 3, 4, dtype=torch.float64, generator=generator).requires_grad_(True)
    target = torch.rand(2, 2, 3, 4, dtype=torch.float64, generator=generator).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, t: pixel_loss(p, t, kind=kind, reduction="none"), (preds, target)
    )


@pytest.mark.usefixtures("single_thread")
def test_psnr_gradcheck() -> None:
    generator = torch.Generator().manual_seed(1)
    preds = torch.rand(2, 2, 3, 4, dtype=torch.float64, generator=generator).requires_grad_(True)
    target = torch.rand(2, 2, 3, 4, dtype=torch.float64, generator=generator).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, t: psnr(p, t, reduction="none"), (preds, target))


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_finite_when_preds_equal_target(pair: tuple[torch.Tensor, torch.Tensor], kind: str) -> None:
    _, target = pair
    preds = target.clone().requires_grad_(True)
    pixel_loss(preds, target, kind=kind).backward()
    assert torch.isfinite(preds.grad).all()
    assert (preds.grad == 0).all()


# ---------------------------------------------------------------------------------------------------- autocast


@pytest.mark.parametrize("kind", KINDS)
def test_autocast_bfloat16_matches_float32(pair: tuple[torch.Tensor, torch.Tensor], kind: str) -> None:
    preds32, target = pair
    preds32 = preds32.clone().requires_grad_(True)
    expected = pixel_loss(preds32, target, kind=kind)
    (expected_grad,) = torch.autograd.grad(expected, preds32)
    preds = preds32.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = pixel_loss(preds, target, kind=kind)
        (grad,) = torch.autograd.grad(value, preds)
    assert value.dtype == torch.float32
    assert abs(float(value.detach()) - float(expected.detach())) < 1e-3
    assert float((grad - expected_grad).abs().max()) < 1e-3


def test_bfloat16_inputs_are_computed_in_float32(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = (t.bfloat16() for t in pair)
    value = pixel_loss(preds, target, kind="l2")
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, pixel_loss(preds.float(), target.float(), kind="l2"))
    assert psnr(preds, target).dtype == torch.float32


# ------------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("fn", [pixel_loss, psnr])
def test_input_errors(fn) -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"same shape, but got \(1, 3, 8, 8\) and \(1, 3, 8, 9\)"):
        fn(x, torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="4-D"):
        fn(x[0], x[0])
    with pytest.raises(ValueError, match="`preds` to be finite"):
        fn(torch.full_like(x, float("nan")), x)
    with pytest.raises(ValueError, match="`target` to be finite"):
        fn(x, torch.full_like(x, float("-inf")))
    with pytest.raises(ValueError, match=r"`reduction` to be one of .* but got 'mena'"):
        fn(x, x, reduction="mena")
    with pytest.raises(TypeError, match=r"`preds` to be .*floating[- ]point.*, but got dtype torch.int64"):
        fn(x.long(), x.long())


def test_pixel_loss_argument_errors() -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"`kind` to be one of \('l1', 'l2', 'charbonnier'\), but got 'l3'"):
        pixel_loss(x, x, kind="l3")
    with pytest.raises(ValueError, match=r"`eps` to be > 0, but got 0"):
        pixel_loss(x, x, kind="charbonnier", eps=0)


def test_psnr_data_range_error() -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"`data_range` to be > 0, but got 0"):
        psnr(x, x, data_range=0)
    with pytest.raises(ValueError, match=r"`data_range` to be > 0, but got -255"):
        psnr(x, x, data_range=-255)
