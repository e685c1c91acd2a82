"""Every loss, backbone and Inception metric pickles, and the copy computes what the original does.

``pickle`` is how ``torch.save(module)``, ``copy.deepcopy`` fallbacks and multi-process data loaders and
spawn-based launchers move objects: a lambda or local function stored on a module, or registered as one of
its hooks, breaks all of them.
"""

from __future__ import annotations

import functools
import pickle
import warnings

import pytest
import torch
from _stub_extractor import StubExtractor
from torch import nn

from percep_lightning import backbones, losses, metrics
from percep_lightning.backbones import ArtInception, FIDInceptionV3, TorchvisionFeatures


def _quietly(build):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights (weights=None) warn
        return build()


LOSSES = {
    "CFSDLoss": lambda: losses.CFSDLoss(weights=None),
    "CompositeLoss": lambda: losses.CompositeLoss(
        {"pixel": losses.PixelLoss(), "lpips": functools.partial(losses.LPIPSLoss, "squeeze", weights=None)},
        weights={"lpips": 0.0},  # a term not built yet (a factory) must pickle too
    ),
    "DISTSLoss": lambda: losses.DISTSLoss(weights=None),
    "LPIPSLoss": lambda: losses.LPIPSLoss("alex", weights=None),
    "MSSSIMLoss": lambda: losses.MSSSIMLoss(kernel_size=3),
    "PixelLoss": lambda: losses.PixelLoss("charbonnier"),
    "SSIMLoss": lambda: losses.SSIMLoss(),
    "VGGPerceptualLoss": lambda: losses.VGGPerceptualLoss(style_weight=1.0, weights=None),
}

_TINY_CLIP = {
    "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 28,
    "patch_size": 14, "projection_dim": 8,
}  # fmt: skip

BACKBONES = {
    "ArtInception": (lambda: ArtInception(weights=None, resize=75), torch.uint8),
    "FIDInceptionV3": (lambda: FIDInceptionV3(weights=None), torch.uint8),
    "DINOv2": (lambda: backbones.DINOv2(backbones.DINOv2Arch(32, 2, 2), weights=None), torch.uint8),
    "CLIPImageEncoder": (lambda: backbones.CLIPImageEncoder(weights=None, config=_TINY_CLIP), torch.uint8),
    "L2PoolVGG16": (lambda: backbones.L2PoolVGG16(weights=None), None),
    "ModuleExtractor": (lambda: backbones.ModuleExtractor(StubExtractor()), None),
    "TorchvisionFeatures": (lambda: TorchvisionFeatures("vgg16", ["conv1_2", "relu2_2"], weights=None), None),
}


def _round_trip(obj):
    return pickle.loads(pickle.dumps(obj))


def _module_classes(package, base: type) -> set[str]:
    return {
        name
        for name in package.__all__
        if isinstance(getattr(package, name), type) and issubclass(getattr(package, name), base)
    }


def test_every_public_loss_and_backbone_class_is_covered():
    assert _module_classes(losses, nn.Module) == set(LOSSES)
    assert _module_classes(backbones, nn.Module) == set(BACKBONES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_pickles_and_the_copy_gives_the_same_values_and_gradients(name):
    loss = _quietly(LOSSES[name])
    copy = _round_trip(loss)
    g = torch.Generator().manual_seed(0)
    preds, target = torch.rand(2, 3, 48, 48, generator=g), torch.rand(2, 3, 48, 48, generator=g)
    results = []
    for module in (loss, copy):
        x = preds.clone().requires_grad_(True)
        value = module(x, target.clone())
        value.backward()
        results.append((value.detach(), x.grad))
    (value, grad), (copy_value, copy_grad) = results
    torch.testing.assert_close(copy_value, value, rtol=0, atol=0)
    torch.testing.assert_close(copy_grad, grad, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_pickles_and_the_copy_gives_the_same_features(name):
    build, dtype = BACKBONES[name]
    net = _quietly(build)
    copy = _round_trip(net)
    g = torch.Generator().manual_seed(0)
    if dtype == torch.uint8:
        images = torch.randint(0, 256, (1, 3, 75, 75), dtype=torch.uint8, generator=g)
    else:
        images = torch.rand(1, 3, 32, 32, generator=g)
    with torch.inference_mode():
        expected, got = net(images), copy(images)
    for a, b in zip(_tensors(got), _tensors(expected), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _tensors(output: object) -> list[torch.Tensor]:
    """The tensors of a backbone's output: a tensor, a dict of them or a named tuple of them."""
    if isinstance(output, torch.Tensor):
        return [output]
    return list(output.values()) if isinstance(output, dict) else list(output)


def test_unpickled_inception_still_refolds_after_a_load():
    net = _quietly(lambda: FIDInceptionV3(weights=None))
    other = _quietly(lambda: FIDInceptionV3(weights=None))  # other random weights
    copy = _round_trip(net)
    copy.load_state_dict(other.state_dict())
    images = torch.randint(
        0, 256, (1, 3, 75, 75), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        torch.testing.assert_close(copy(images).pool3, other(images).pool3, rtol=0, atol=0)


METRICS = {
    "FrechetInceptionDistance": (
        lambda: metrics.FrechetInceptionDistance(weights=None),
        lambda metric, images: (metric.update(images[:2], real=True), metric.update(images[2:], real=False)),
    ),
    "FrechetDistance": (
        lambda: metrics.FrechetDistance(
            StubExtractor(), infinity=True, infinity_min_samples=2, infinity_num_points=2
        ),
        lambda metric, images: (metric.update(images[:2], real=True), metric.update(images[2:], real=False)),
    ),
    "KernelDistance": (
        lambda: metrics.KernelDistance(StubExtractor(), subsets=3, subset_size=2),
        lambda metric, images: (metric.update(images[:2], real=True), metric.update(images[2:], real=False)),
    ),
    "InceptionScore": (
        lambda: metrics.InceptionScore(weights=None, splits=2),
        lambda metric, images: metric.update(images),
    ),
    "KernelInceptionDistance": (
        lambda: metrics.KernelInceptionDistance(weights=None, subsets=3, subset_size=2),
        lambda metric, images: (metric.update(images[:2], real=True), metric.update(images[2:], real=False)),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METRICS))
def test_inception_metric_pickles_with_its_state_and_the_copy_goes_on_alike(name):
    build, update = METRICS[name]
    metric = _quietly(build)
    g = torch.Generator().manual_seed(0)
    first, second = (torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g) for _ in range(2))
    update(metric, first)
    copy = _round_trip(metric)
    for m in (metric, copy):
        update(m, second)  # the unpickled Inception runs as the original
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FID of 4 images: a rank-deficient covariance
        values = _tensors(copy.compute()), _tensors(metric.compute())
    for a, b in zip(*values, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
