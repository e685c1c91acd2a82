"""Frozen torchvision trunks (VGG16/19, AlexNet, SqueezeNet 1.1) returning features by layer name."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import Tensor, nn

from percep_lightning.backbones.base import FrozenBackbone
from percep_lightning.backbones.weights import WeightsArg, check_state_dict, resolve_state_dict

_VGG_BLOCKS = {
    # convolutions per block
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}


def _vgg_layer_names(arch: str) -> tuple[str, ...]:
    names: list[str] = []
    for block, convs in enumerate(_VGG_BLOCKS[arch], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


LAYER_NAMES: dict[str, tuple[str, ...]] = {
    "vgg16": _vgg_layer_names("vgg16"),
    "vgg19": _vgg_layer_names("vgg19"),
    "alexnet": (
        "conv1",
        "relu1",
        "pool1",
        "conv2",
        "relu2",
        "pool2",
        "conv3",
        "relu3",
        "conv4",
        "relu4",
        "conv5",
        "relu5",
        "pool5",
    ),  # fmt: skip
    "squeezenet1_1": (
        "conv1",
        "relu1",
        "pool1",
        "fire2",
        "fire3",
        "pool3",
        "fire4",
        "fire5",
        "pool5",
        "fire6",
        "fire7",
        "fire8",
        "fire9",
    ),  # fmt: skip
}
"""Canonical names of ``torchvision.models.<arch>().features[i]``, in order (index = position)."""


def layer_index(arch: str, name: str) -> int:
    """Index of layer ``name`` in ``torchvision.models.<arch>().features``.

    Raises:
        ValueError: if ``arch`` or ``name`` is unknown; the message lists the valid names.
    """
    if arch not in LAYER_NAMES:
        raise ValueError(f"Expected `arch` to be one of {tuple(LAYER_NAMES)}, but got {arch!r}.")
    names = LAYER_NAMES[arch]
    if name not in names:
        raise ValueError(f"Unknown layer {name!r} for {arch}; valid names are: {', '.join(names)}.")
    return names.index(name)


class TorchvisionFeatures(FrozenBackbone):
    """A frozen torchvision ``features`` trunk, truncated after the deepest requested layer.

    ``forward`` returns a dict ``{name: feature map}`` in the order of ``layers``. A requested
    pre-activation (``conv*``) is kept intact: the ReLU right after it runs out of place, every other
    ReLU stays in place as in torchvision.

    Args:
        arch: ``"vgg19"``, ``"vgg16"``, ``"alexnet"`` or ``"squeezenet1_1"``.
        layers: the names of the outputs, see :data:`LAYER_NAMES` (e.g. ``"relu3_1"`` for VGG).
        weights: ``"default"`` (torchvision's IMAGENET1K_V1 file), a path to a file in the same format
            (the full model's ``state_dict``), a state dict, or ``None`` for random weights.

    Raises:
        ValueError: for an unknown ``arch``, an unknown layer name, or no layers.
        RuntimeError: if the weights do not have the keys and shapes of the official file.

    Shape:
        - Input: ``(N, 3, H, W)``, already normalised the way the network was trained.
        - Output: one ``(N, C_l, H_l, W_l)`` map per requested layer.

    Example:
        >>> net = TorchvisionFeatures("vgg19", ["relu1_2", "relu2_1"], weights=None)
        >>> {k: tuple(v.shape) for k, v in net(torch.rand(1, 3, 32, 32)).items()}
        {'relu1_2': (1, 64, 32, 32), 'relu2_1': (1, 128, 16, 16)}
    """

    def __init__(self, arch: str, layers: Sequence[str], weights: WeightsArg = "default") -> None:
        super().__init__()
        if isinstance(layers, str):
            layers = [layers]
        if not layers:
            raise ValueError("Expected `layers` to name at least one layer, but got none.")
        self.arch = arch
        self.layer_names = tuple(layers)
        self._index = {name: layer_index(arch, name) for name in self.layer_names}
        depth = max(self._index.values()) + 1

        with torch.device("meta"):
            reference = getattr(torchvision.models, arch)(weights=None)
        state, source = resolve_state_dict(arch, weights)
        if state is not None:
            check_state_dict(reference, state, source, arch)

        self.layers = reference.features[:depth].to_empty(device="cpu")
        if state is None:
            _reset(self.layers)
        else:
            prefix = "features."
            self.layers.load_state_dict(
                {
                    k[len(prefix) :]: v
                    for k, v in state.items()
                    if k.startswith(prefix) and int(k[len(prefix) :].split(".")[0]) < depth
                },
                strict=True,
            )
        wanted = set(self._index.values())
        for i, layer in enumerate(self.layers):
            if isinstance(layer, nn.ReLU):
                layer.inplace = (i - 1) not in wanted
        self._wanted_at = {i: name for name, i in self._index.items()}
        self.freeze()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Run the trunk and return the requested feature maps by name."""
        found: dict[str, Tensor] = {}
        for i, layer in enumerate(self.layers):
            x = layer(x)
            name = self._wanted_at.get(i)
            if name is not None:
                found[name] = x
        return {name: found[name] for name in self.layer_names}


def _reset(module: nn.Module) -> None:
    """Random initialisation for ``weights=None`` (torchvision's scheme for convolutions)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
