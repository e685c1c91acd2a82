"""PixelLoss, SSIMLoss and MSSSIMLoss: modules equal the functions, buffers, reductions, errors."""

from __future__ import annotations

import pytest
import torch

from percep_lightning.functional.pixel import pixel_loss
from percep_lightning.functional.ssim import ms_ssim, ssim
from percep_lightning.losses.pixel import PixelLoss
from percep_lightning.losses.ssim import MSSSIMLoss, SSIMLoss


@pytest.fixture(scope="module")
def pair(photos) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real 3 x 176 x 176 photographs and a noisy version of each."""
    target = photos(2, 176)
    noise = 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    return (target + noise).clamp(0, 1), target


# --------------------------------------------------------------------------------------- module == function


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ssim_loss_is_one_minus_ssim(pair: tuple[torch.Tensor, torch.Tensor], reduction: str) -> None:
    preds, target = (t[..., :48, :56] * 255 for t in pair)
    loss = SSIMLoss(data_range=255.0, kernel_size=7, sigma=1.2, k1=0.02, k2=0.04, reduction=reduction)
    per_image = 1 - ssim(
        preds, target, data_range=255.0, kernel_size=7, sigma=1.2, k1=0.02, k2=0.04, reduction="none"
    )
    expected = {"mean": per_image.mean(), "sum": per_image.sum(), "none": per_image}[reduction]
    torch.testing.assert_close(loss(preds, target), expected)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ms_ssim_loss_is_one_minus_ms_ssim(pair: tuple[torch.Tensor, torch.Tensor], reduction: str) -> None:
    preds, target = pair
    loss = MSSSIMLoss(reduction=reduction)
    per_image = 1 - ms_ssim(preds, target, reduction="none")
    assert loss(preds, target).shape == ((2,) if reduction == "none" else ())
    expected = {"mean": per_image.mean(), "sum": per_image.sum(), "none": per_image}[reduction]
    torch.testing.assert_close(loss(preds, target), expected)


def test_ms_ssim_loss_custom_weights(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = (t[..., :64, :64] for t in pair)
    weights = (0.3, 0.7)
    loss = MSSSIMLoss(data_range=1.0, weights=weights, kernel_size=5, sigma=1.0)
    torch.testing.assert_close(
        loss(preds, target), 1 - ms_ssim(preds, target, weights=weights, kernel_size=5, sigma=1.0)
    )


@pytest.mark.parametrize("kind", ["l1", "l2", "charbonnier"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_pixel_loss_module_equals_function(
    pair: tuple[torch.Tensor, torch.Tensor], kind: str, reduction: str
) -> None:
    preds, target = (t[..., :16, :16] for t in pair)
    loss = PixelLoss(kind, eps=1e-2, reduction=reduction)
    torch.testing.assert_close(
        loss(preds, target), pixel_loss(preds, target, kind=kind, eps=1e-2, reduction=reduction)
    )


@pytest.mark.parametrize(
    "loss", [SSIMLoss(), MSSSIMLoss(), PixelLoss("l1"), PixelLoss("l2")], ids=["ssim", "ms_ssim", "l1", "l2"]
)
def test_loss_of_identical_images_is_zero_with_finite_gradient(
    pair: tuple[torch.Tensor, torch.Tensor], loss: torch.nn.Module
) -> None:
    _, target = pair
    preds = target.clone().requires_grad_(True)
    value = loss(preds, target)
    value.backward()
    assert abs(float(value.detach())) < 1e-6
    assert torch.isfinite(preds.grad).all()


def test_charbonnier_of_identical_images_is_eps(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, target = pair
    torch.testing.assert_close(PixelLoss("charbonnier", eps=1e-3)(target, target), torch.tensor(1e-3))


def test_losses_train_towards_target(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = (t[..., :32, :32] for t in pair)
    for loss in (SSIMLoss(), PixelLoss("charbonnier")):
        x = preds.clone().requires_grad_(True)
        before = loss(x, target)
        before.backward()
        with torch.no_grad():
            after = loss(x - 0.5 * x.grad / x.grad.abs().max() * 0.01, target)
        assert after < before


# ---------------------------------------------------------------------------------------------------- buffers


def test_window_and_weights_are_non_persistent_buffers() -> None:
    loss = MSSSIMLoss(weights=(0.5, 0.5))
    buffers = dict(loss.named_buffers())
    assert set(buffers) == {"window", "weights"}
    assert buffers["window"].shape == (11,)
    assert loss.state_dict() == {}
    assert dict(SSIMLoss().named_buffers()).keys() == {"window"}
    assert SSIMLoss().state_dict() == {}
    assert list(loss.parameters()) == []


def test_module_dtype_casts(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = (t[..., :40, :40] for t in pair)
    expected = SSIMLoss()(preds, target)
    torch.testing.assert_close(SSIMLoss().double()(preds.double(), target.double()).float(), expected)
    half = SSIMLoss().to(torch.bfloat16)  # a half-precision window is rebuilt in float32
    torch.testing.assert_close(half(preds, target), expected)
    ms_half = MSSSIMLoss(weights=(0.5, 0.5)).half()
    torch.testing.assert_close(ms_half(preds, target), MSSSIMLoss(weights=(0.5, 0.5))(preds, target))


def test_autocast_bfloat16(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preds, target = pair
    loss = MSSSIMLoss()
    expected = loss(preds, target)
    x = preds.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x, target)
    value.backward()
    assert value.dtype == torch.float32
    assert abs(float(value.detach()) - float(expected)) < 1e-3
    assert torch.isfinite(x.grad).all()


def test_repr() -> None:
    assert "kernel_size=11" in repr(SSIMLoss())
    assert "weights=(0.5, 0.5)" in repr(MSSSIMLoss(weights=[0.5, 0.5]))
    assert "kind='l2'" in repr(PixelLoss("l2"))


# ----------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls", [SSIMLoss, MSSSIMLoss])
def test_ssim_constructor_errors(cls) -> None:
    with pytest.raises(ValueError, match=r"`data_range` to be > 0, but got 0"):
        cls(data_range=0)
    with pytest.raises(ValueError, match=r"`data_range` to be > 0, but got -1"):
        cls(data_range=-1)
    with pytest.raises(ValueError, match=r"`kernel_size` to be an odd positive integer, but got 4"):
        cls(kernel_size=4)
    with pytest.raises(ValueError, match=r"`kernel_size` to be an odd positive integer, but got -3"):
        cls(kernel_size=-3)
    with pytest.raises(TypeError, match=r"`kernel_size` to be an integer, but got float 11.0"):
        cls(kernel_size=11.0)
    with pytest.raises(ValueError, match=r"`sigma` to be > 0, but got -1.5"):
        cls(sigma=-1.5)
    with pytest.raises(ValueError, match=r"`k1` to be > 0"):
        cls(k1=0)
    with pytest.raises(ValueError, match=r"`reduction` to be one of .* but got 'average'"):
        cls(reduction="average")


def test_ms_ssim_loss_weights_errors() -> None:
    with pytest.raises(
        ValueError, match=r"`weights` to be a non-empty sequence of positive numbers, but got \[\]"
    ):
        MSSSIMLoss(weights=[])
    with pytest.raises(ValueError, match=r"`weights` .* but got \(0.5, 0.0\)"):
        MSSSIMLoss(weights=(0.5, 0.0))


def test_pixel_loss_constructor_errors() -> None:
    with pytest.raises(
        ValueError, match=r"`kind` to be one of \('l1', 'l2', 'charbonnier'\), but got 'huber'"
    ):
        PixelLoss("huber")
    with pytest.raises(ValueError, match=r"`eps` to be > 0, but got -0.001"):
        PixelLoss("charbonnier", eps=-1e-3)
    with pytest.raises(ValueError, match=r"`reduction` to be one of .* but got 'batchmean'"):
        PixelLoss(reduction="batchmean")


def test_forward_input_errors() -> None:
    x = torch.rand(1, 3, 176, 176)
    with pytest.raises(ValueError, match="same shape"):
        SSIMLoss()(x, x[..., :100])
    with pytest.raises(ValueError, match="4-D"):
        PixelLoss()(x[0], x[0])
    with pytest.raises(ValueError, match="finite"):
        MSSSIMLoss()(x, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="= 160 pixels"):
        MSSSIMLoss()(x[..., :160], x[..., :160])
