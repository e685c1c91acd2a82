"""Torchvision trunks: loading official-format files, named outputs, freezing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from percep_lightning.backbones import LAYER_NAMES, TorchvisionFeatures
from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.torchvision_trunks import layer_index


def _torchvision_model(arch, path):
    model = getattr(torchvision.models, arch)(weights=None)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


@pytest.mark.parametrize(
    ("arch", "layers"),
    [
        ("vgg19", ["conv1_1", "relu1_2", "conv3_4", "relu3_1", "relu4_4", "pool4"]),
        ("vgg16", ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]),
        ("alexnet", ["relu1", "relu2", "relu3", "relu4", "relu5"]),
        ("squeezenet1_1", ["relu1", "fire3", "fire5", "fire6", "fire7", "fire8", "fire9"]),
    ],
)
def test_named_outputs_equal_torchvision(arch, layers, torchvision_weights, photos):
    path = torchvision_weights(arch)
    # torchvision's layout, for bit-equal outputs (the layout choice itself is tested below)
    ours = TorchvisionFeatures(arch, layers, weights=path, memory_format="contiguous")
    reference = _torchvision_model(arch, path).features
    x = photos(2, 64)
    out = ours(x)
    assert list(out) == layers
    # Walk torchvision's own trunk (with its in-place ReLUs) and clone every output.
    expected = {}
    h = x
    for i, layer in enumerate(reference):
        h = layer(h)
        expected[i] = h.clone()
    for name in layers:
        torch.testing.assert_close(out[name], expected[layer_index(arch, name)], rtol=0, atol=0)


def test_pre_activation_not_overwritten_by_inplace_relu(torchvision_weights, photos):
    net = TorchvisionFeatures("vgg19", ["conv3_4", "relu3_4"], weights=torchvision_weights("vgg19"))
    out = net(photos(1, 32) - 0.5)
    assert (out["conv3_4"] < 0).any()
    torch.testing.assert_close(out["relu3_4"], out["conv3_4"].clamp_min(0))


def test_truncated_after_deepest_layer():
    net = TorchvisionFeatures("vgg19", ["relu2_1"], weights=None)
    assert len(net.layers) == layer_index("vgg19", "relu2_1") + 1


def test_vgg19_layer_indices_follow_reference_convention():
    names = LAYER_NAMES["vgg19"]
    assert names.index("relu3_1") == 11
    assert names.index("relu3_4") == 17
    assert names.index("pool3") == 18
    assert names.index("relu5_4") == 35
    assert names.index("pool5") == 36
    assert len(names) == len(torchvision.models.vgg19().features)


def test_unknown_layer_lists_valid_names():
    with pytest.raises(
        ValueError, match=r"Unknown layer 'relu9_9' for vgg19; valid names are: conv1_1, relu1_1"
    ):
        TorchvisionFeatures("vgg19", ["relu9_9"], weights=None)
    with pytest.raises(ValueError, match=r"Expected `arch` to be one of"):
        TorchvisionFeatures("resnet50", ["relu1"], weights=None)


def test_wrong_keys_name_the_file(torchvision_weights, tmp_path):
    state = torch.load(torchvision_weights("alexnet"), weights_only=True)
    state["features.99.weight"] = torch.zeros(1)
    del state["features.0.bias"]
    bad = tmp_path / "bad-alexnet.pth"
    torch.save(state, bad)
    with pytest.raises(RuntimeError, match=r"bad-alexnet\.pth(.|\n)*missing keys \(1\): features\.0\.bias"):
        TorchvisionFeatures("alexnet", ["relu1"], weights=bad)
    with pytest.raises(RuntimeError, match=r"unexpected keys \(1\): features\.99\.weight"):
        TorchvisionFeatures("alexnet", ["relu1"], weights=bad)


def test_wrong_shapes_name_the_file(torchvision_weights, tmp_path):
    # a VGG16 file handed to a VGG19 trunk
    with pytest.raises(RuntimeError, match=r"vgg16-random\.pth do not match the official vgg19 format"):
        TorchvisionFeatures("vgg19", ["relu1_1"], weights=torchvision_weights("vgg16"))
    state = torch.load(torchvision_weights("alexnet"), weights_only=True)
    state["features.0.weight"] = torch.zeros(64, 3, 3, 3)
    bad = tmp_path / "reshaped.pth"
    torch.save(state, bad)
    with pytest.raises(
        RuntimeError, match=r"shape of features\.0\.weight: expected \(64, 3, 11, 11\), got \(64, 3, 3, 3\)"
    ):
        TorchvisionFeatures("alexnet", ["relu1"], weights=bad)


def test_missing_file_and_bad_type(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        TorchvisionFeatures("vgg19", ["relu1_1"], weights=tmp_path / "nope.pth")
    with pytest.raises(
        TypeError, match=r"Expected `weights` to be 'default', a path, a state dict or None, but got list"
    ):
        TorchvisionFeatures("vgg19", ["relu1_1"], weights=[3])
    with pytest.raises(
        ValueError, match=r"Expected `weights` of the vgg19 backbone .* but got the number 3\."
    ):
        TorchvisionFeatures("vgg19", ["relu1_1"], weights=3)  # a loss weight put where the file belongs
    not_weights = tmp_path / "garbage.pth"
    not_weights.write_bytes(b"not a torch file")
    with pytest.raises(RuntimeError, match=r"Could not read weights file .*garbage\.pth"):
        TorchvisionFeatures("vgg19", ["relu1_1"], weights=not_weights)


def test_random_weights_warn():
    from percep_lightning.backbones import weights as w

    w._warned_random.discard("squeezenet1_1")
    with pytest.warns(UserWarning, match=r"random weights .* not comparable to published numbers"):
        TorchvisionFeatures("squeezenet1_1", ["relu1"], weights=None)


class _Owner(HoldsFrozen, nn.Module):
    def __init__(self, trunk):
        super().__init__()
        self.head = nn.Conv2d(3, 3, 1)
        self._hold("trunk", trunk)

    def forward(self, x):
        return self._held("trunk")(self.head(x))["relu1_1"].mean()


def test_frozen_eval_hidden_from_parameters_and_checkpoints(torchvision_weights):
    trunk = TorchvisionFeatures("vgg19", ["relu1_1"], weights=torchvision_weights("vgg19"))
    owner = _Owner(trunk)
    owner.train()
    assert not trunk.training
    assert all(not p.requires_grad for p in trunk.parameters())
    assert [n for n, _ in owner.named_parameters()] == ["head.weight", "head.bias"]
    assert set(owner.state_dict()) == {"head.weight", "head.bias"}
    owner(torch.rand(1, 3, 8, 8)).backward()
    assert owner.head.weight.grad is not None
    assert all(p.grad is None for p in trunk.parameters())


def test_to_reaches_held_backbone():
    owner = _Owner(TorchvisionFeatures("vgg19", ["relu1_1"], weights=None))
    owner.to(torch.float64)
    assert next(owner._held("trunk").parameters()).dtype == torch.float64
    owner.to(memory_format=torch.channels_last)
    assert owner._held("trunk").layers[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_min_size_is_where_torchvision_stops_working():
    for arch, layer in (
        ("vgg19", "pool5"),
        ("vgg16", "relu4_3"),
        ("alexnet", "relu5"),
        ("squeezenet1_1", "fire9"),
    ):
        net = TorchvisionFeatures(arch, [layer], weights=None, memory_format="contiguous")
        side = net.min_size[0]
        reference = getattr(torchvision.models, arch)().features[: layer_index(arch, layer) + 1].eval()
        reference(torch.zeros(1, 3, side, side))
        with pytest.raises(RuntimeError):
            reference(torch.zeros(1, 3, side - 1, side))
        with pytest.raises(
            ValueError, match=rf"Expected `x` to be at least {side}x{side} pixels for {arch} up to"
        ):
            net(torch.zeros(1, 3, side - 1, side))


def test_named_layers_are_the_forward_run_layer_by_layer(torchvision_weights, photos):
    net = TorchvisionFeatures(
        "vgg19", ["conv1_2", "relu2_1"], weights=torchvision_weights("vgg19"), memory_format="contiguous"
    )
    names = [name for name, _ in net.named_layers()]
    assert names == list(LAYER_NAMES["vgg19"][: layer_index("vgg19", "relu2_1") + 1])
    x = net.prepare(photos(1, 16))
    expected, found = net(x), {}
    for name, layer in net.named_layers():
        x = layer(x)
        if name in net.layer_names:
            found[name] = x.clone()  # (the trunk's own ReLUs run in place except after a requested layer)
    for name in net.layer_names:
        torch.testing.assert_close(found[name], expected[name], rtol=0, atol=0)


def test_measured_layout_is_decided_once_per_process_and_works_under_inference_mode():
    code = (
        "import time, warnings, torch\n"
        "warnings.simplefilter('ignore')\n"
        "from percep_lightning.backbones import TorchvisionFeatures\n"
        "from percep_lightning.backbones.torchvision_trunks import measured_memory_format\n"
        "net = TorchvisionFeatures('alexnet', ['relu2'], weights=None, memory_format='measure')\n"
        "with torch.inference_mode():\n"
        "    net(torch.rand(1, 3, 64, 64))\n"  # the first use decides, inside inference mode
        "x = torch.rand(1, 3, 64, 64, requires_grad=True)\n"
        "net(x)['relu2'].sum().backward()\n"
        "first = measured_memory_format(net, torch.float32)\n"
        "start = time.perf_counter()\n"
        "again = measured_memory_format(TorchvisionFeatures('alexnet', ['relu2'], weights=None), torch.float32)\n"
        "assert again is first and time.perf_counter() - start < 1.0\n"
        "assert first in (torch.channels_last, torch.contiguous_format)\n"
        "assert net.layers[0].weight.is_contiguous(memory_format=first)\n"
        "print('ok', x.grad.shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok torch.Size([1, 3, 64, 64])")


def test_default_layout_follows_the_device_rule():
    from percep_lightning.backbones import preferred_memory_format

    assert preferred_memory_format(torch.device("cuda")) is torch.channels_last
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    expected = torch.channels_last if avx512 else torch.contiguous_format
    assert preferred_memory_format(torch.device("cpu")) is expected
    net = TorchvisionFeatures("alexnet", ["relu1"], weights=None)
    net(torch.rand(1, 3, 64, 64))
    assert net.layers[0].weight.is_contiguous(memory_format=expected)
