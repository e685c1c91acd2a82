"""The one input module: non-tensor input is a TypeError naming the argument in every public function and loss,
and the integer and bool option checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from percep_lightning import functional
from percep_lightning.functional.inputs import check_bool, check_int, check_tensors
from percep_lightning.losses import MSSSIMLoss, PixelLoss, SSIMLoss

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
