"""The one home of image input handling: range mapping, grey to RGB, ImageNet normalisation, checks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from _numerics import assert_float32_close

import percep_lightning
from percep_lightning.functional._checks import check_loss_inputs
from percep_lightning.functional._images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_images,
    check_min_size,
    imagenet_normalize,
    to_rgb,
)

PACKAGE = Path(percep_lightning.__file__).parent


@pytest.mark.parametrize(
    ("input_range", "unit_range"),
    [((0.0, 1.0), (0.0, 1.0)), ((-1.0, 1.0), (0.0, 1.0)), ((0.0, 255.0), (0.0, 1.0)), ((0.0, 1.0), (-1.0, 1.0)),
     ((-1.0, 1.0), (-1.0, 1.0)), ((0.0, 255.0), (-1.0, 1.0)), ((-2.0, 3.0), (-1.0, 1.0))],
)  # fmt: skip
def test_imagenet_normalize_equals_the_step_by_step_map_in_float64(input_range, unit_range):
    x = torch.linspace(*input_range, 3 * 101, dtype=torch.float64).view(1, 3, 101, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    (low, high), (unit_low, unit_high) = input_range, unit_range
    expected = ((x - low) / (high - low) * (unit_high - unit_low) + unit_low - mean) / std
    ours = imagenet_normalize(x, input_range, mean, std, torch.float64, unit_range=unit_range)
    torch.testing.assert_close(ours, expected, rtol=1e-14, atol=1e-14)
    ours32 = imagenet_normalize(
        x.float(), input_range, mean.float(), std.float(), torch.float32, unit_range=unit_range
    )
    assert_float32_close(
        ours32, expected, terms=4
    )  # a few roundings of one multiply-add and its coefficients


def test_imagenet_normalize_greyscale_and_dtype():
    grey = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    out = imagenet_normalize(grey * 2 - 1, (-1.0, 1.0), torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), torch.float32)  # fmt: skip
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 5, 5)
    torch.testing.assert_close(out.double(), (grey.expand(-1, 3, -1, -1) - mean) / std, rtol=1e-6, atol=1e-6)
    assert to_rgb(grey).data_ptr() == grey.data_ptr()  # a view, no copy


def test_checks_name_the_argument():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(
        ValueError, match=r"Expected `target` to be finite, but it contains NaN or Inf values"
    ):
        check_loss_inputs(x, torch.full_like(x, float("nan")), (0.0, 1.0), owner=None)
    with pytest.raises(
        ValueError, match=r"Expected non-empty `preds` and `target`, but got shape \(0, 3, 8, 8\)"
    ):
        check_loss_inputs(x[:0], x[:0], (0.0, 1.0), owner=None)
    with pytest.raises(
        ValueError, match=r"Expected float `images` to be in \[0, 1\], but got values in \[0, 255\]"
    ):
        check_images(x * 0 + torch.tensor([0.0, 255.0]).repeat(32)[:8], "images")
    with pytest.raises(TypeError, match=r"Expected `fake` to be uint8 in \[0, 255\] or floating point"):
        check_images(x.long(), "fake")
    with pytest.raises(
        ValueError, match=r"Expected `x` to be at least 9x9 pixels for a network, but got 8x8"
    ):
        check_min_size(x, "x", (9, 9), "a network")


def _assigned_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_imagenet_constants_have_one_home():
    owners = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if {"IMAGENET_MEAN", "IMAGENET_STD"} & _assigned_names(p)
    )
    assert owners == ["functional/_images.py"]


def test_backbones_export_only_what_users_call():
    from percep_lightning import backbones

    assert set(backbones.__all__) == {
        "ArtInception", "FIDInceptionV3", "InceptionFeatures", "LAYER_NAMES", "RESIZE_MODES", "ResizeMode",
        "TorchvisionFeatures", "WEIGHTS", "WeightsUnavailableError", "fetch", "preferred_memory_format",
        "FeatureExtractor", "ModuleExtractor", "as_extractor", "L2PoolVGG16", "DINOv2", "DINOv2Arch",
        "DINOV2_ARCHS", "CLIPImageEncoder",
    }  # fmt: skip
    for helper in ("HoldsFrozen", "FrozenBackbone", "layer_index", "resolve_state_dict", "frozen_device",
                   "resize_like_tensorflow1", "resize_like_clean_fid", "resize_shorter_side"):  # fmt: skip
        assert not hasattr(backbones, helper) or helper not in backbones.__all__
