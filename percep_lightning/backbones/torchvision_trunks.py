"""Frozen torchvision trunks (VGG16/19, AlexNet, SqueezeNet 1.1) returning features by layer name."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torchvision
from torch import Tensor, nn

from percep_lightning.backbones.base import MEMORY_FORMATS, FrozenBackbone, preferred_memory_format
from percep_lightning.backbones.weights import WeightsArg, check_state_dict, resolve_state_dict
from percep_lightning.functional._images import check_min_size

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


MemoryFormatArg = Literal["auto", "measure", "channels_last", "contiguous"]
"""How a trunk lays out its weights and inputs: ``"auto"`` follows :func:`preferred_memory_format`'s rule,
``"measure"`` times both layouts once per process, the other two fix the layout."""
_MEASURED: dict[tuple[str, int, torch.dtype], torch.memory_format] = {}


class TorchvisionFeatures(FrozenBackbone):
    """A frozen torchvision ``features`` trunk, truncated after the deepest requested layer.

    ``forward`` returns a dict ``{name: feature map}`` in the order of ``layers``. A requested
    pre-activation (``conv*``) is kept intact: the ReLU right after it runs out of place, every other
    ReLU stays in place as in torchvision. :meth:`named_layers` hands the layers over by name, for a
    caller that runs them itself (after :meth:`prepare`).

    Args:
        arch: ``"vgg19"``, ``"vgg16"``, ``"alexnet"`` or ``"squeezenet1_1"``.
        layers: the names of the outputs, see :data:`LAYER_NAMES` (e.g. ``"relu3_1"`` for VGG).
        weights: ``"default"`` (torchvision's IMAGENET1K_V1 file), a path to a file in the same format
            (the full model's ``state_dict``), a state dict, or ``None`` for random weights.
        memory_format: the layout of the weights and inputs: ``"auto"`` (default) follows
            :func:`preferred_memory_format`'s rule for the input's device; ``"measure"`` times a forward
            and backward of this trunk in both layouts on the first CPU input and keeps the faster for
            the process; ``"channels_last"`` or ``"contiguous"`` fix it. The values do not depend on it
            beyond float rounding.

    Attributes:
        min_size: the smallest ``(H, W)`` input that reaches the deepest requested layer; smaller inputs
            raise a ValueError that names it.

    Raises:
        ValueError: for an unknown ``arch``, layer name or ``memory_format``, or no layers.
        RuntimeError: if the weights do not have the keys and shapes of the official file.

    Shape:
        - Input: ``(N, 3, H, W)``, already normalised the way the network was trained, at least
          :attr:`min_size`.
        - Output: one ``(N, C_l, H_l, W_l)`` map per requested layer.

    Example:
        >>> net = TorchvisionFeatures("vgg19", ["relu1_2", "relu2_1"], weights=None)
        >>> {k: tuple(v.shape) for k, v in net(torch.rand(1, 3, 32, 32)).items()}
        {'relu1_2': (1, 64, 32, 32), 'relu2_1': (1, 128, 16, 16)}
        >>> net.min_size
        (2, 2)
    """

    def __init__(
        self,
        arch: str,
        layers: Sequence[str],
        weights: WeightsArg = "default",
        *,
        memory_format: MemoryFormatArg = "auto",
    ) -> None:
        super().__init__()
        if isinstance(layers, str):
            layers = [layers]
        if not layers:
            raise ValueError("Expected `layers` to name at least one layer, but got none.")
        if memory_format not in ("auto", "measure", *MEMORY_FORMATS):
            raise ValueError(
                f"Expected `memory_format` to be one of {('auto', 'measure', *MEMORY_FORMATS)}, but got "
                f"{memory_format!r}."
            )
        self.arch = arch
        self.layer_names = tuple(layers)
        self.memory_format = memory_format
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
        self.deepest = LAYER_NAMES[arch][depth - 1]
        side = min_input_size(self.layers)
        self.min_size = (side, side)
        self.freeze()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Run the trunk and return the requested feature maps by name."""
        x = self.prepare(x, "x")
        found: dict[str, Tensor] = {}
        for i, layer in enumerate(self.layers):
            x = layer(x)
            name = self._wanted_at.get(i)
            if name is not None:
                found[name] = x
        return {name: found[name] for name in self.layer_names}

    def named_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """The trunk's layers in network order, each with its name from :data:`LAYER_NAMES`.

        For a caller that runs the trunk one layer at a time (after :meth:`prepare`), e.g. to reduce each
        requested map as soon as it exists. The ReLUs run in place except right after a requested layer.

        Example:
            >>> net = TorchvisionFeatures("vgg19", ["relu1_1"], weights=None)
            >>> [(name, type(layer).__name__) for name, layer in net.named_layers()]
            [('conv1_1', 'Conv2d'), ('relu1_1', 'ReLU')]
        """
        return zip(LAYER_NAMES[self.arch][: len(self.layers)], self.layers, strict=True)

    def prepare(self, x: Tensor, name: str = "x") -> Tensor:
        """Check the size of an input and put it (and the weights, on first use) in the chosen layout.

        Raises:
            ValueError: if ``x`` is smaller than :attr:`min_size`.
        """
        self.check_size(x, name)
        layout = self._layout(x)
        return x if x.is_contiguous(memory_format=layout) else x.contiguous(memory_format=layout)

    def check_size(self, images: Tensor, names: str | Sequence[str]) -> None:
        """Raise a ValueError naming ``names`` if ``images`` are smaller than :attr:`min_size`."""
        check_min_size(images, names, self.min_size, f"{self.arch} up to {self.deepest}")

    def _layout(self, x: Tensor) -> torch.memory_format:
        if self.memory_format in MEMORY_FORMATS:
            layout = MEMORY_FORMATS[self.memory_format]
        elif self.memory_format == "measure" and x.device.type == "cpu" and x.dtype in _MEASURED_DTYPES:
            layout = measured_memory_format(self, x.dtype)
        else:
            layout = preferred_memory_format(x.device)
        weight = self.layers[0].weight
        if not weight.is_contiguous(memory_format=layout):
            with torch.inference_mode(False), torch.no_grad():
                self.to(memory_format=layout)
        return layout


_MEASURED_DTYPES = (torch.float32, torch.float64)


def measured_memory_format(trunk: TorchvisionFeatures, dtype: torch.dtype) -> torch.memory_format:
    """The faster layout for ``trunk`` on the CPU, timed once per process, architecture, depth and dtype.

    The first call times a forward and backward of a small image through the trunk in each layout,
    interleaved, and keeps the faster for the rest of the process (each process of a multi-process run
    decides for itself). On a machine busy with other work the timing, and so the choice, is noisy.

    Example:
        >>> trunk = TorchvisionFeatures("alexnet", ["relu1"], weights=None)
        >>> measured_memory_format(trunk, torch.float32) in (torch.channels_last, torch.contiguous_format)
        True
    """
    key = (trunk.arch, len(trunk.layers), dtype)
    if key not in _MEASURED:
        _MEASURED[key] = _time_layouts(trunk, dtype)
    return _MEASURED[key]


def _time_layouts(trunk: TorchvisionFeatures, dtype: torch.dtype, rounds: int = 2) -> torch.memory_format:
    """Time a forward + backward of a ``(1, 3, S, S)`` probe in both layouts on the CPU; the faster wins.

    ``S`` is 64 (or the trunk's minimum size): big enough for oneDNN to pick the kernels it uses on
    training-size images, small enough to cost a fraction of a second once per process.
    """
    side = max(64, *trunk.min_size)
    layouts = (torch.contiguous_format, torch.channels_last)
    times: dict[torch.memory_format, list[float]] = {layout: [] for layout in layouts}
    # (also when called from a metric's inference-mode update: the copy must hold ordinary tensors)
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
        layers = copy.deepcopy(trunk.layers).to(dtype)
        for layer in layers.modules():
            if isinstance(layer, nn.ReLU):
                layer.inplace = False
        probe = torch.randn(1, 3, side, side, dtype=dtype, generator=torch.Generator().manual_seed(0))
        for round_ in range(rounds + 1):  # round 0 warms up oneDNN's kernel caches
            for layout in layouts if round_ % 2 else layouts[::-1]:
                layers.to(memory_format=layout)
                x = probe.contiguous(memory_format=layout).requires_grad_(True)
                start = time.perf_counter()
                layers(x).sum().backward()
                if round_:
                    times[layout].append(time.perf_counter() - start)
    return min(layouts, key=lambda layout: min(times[layout]))


def min_input_size(layers: nn.Module) -> int:
    """The smallest square input side for which every convolution and pooling of ``layers`` has output.

    Example:
        >>> import torchvision
        >>> min_input_size(torchvision.models.vgg19().features[:35])  # four 2x2 poolings before conv5_4
        16
    """
    for side in range(1, 4097):
        size = side
        for module in layers.modules():
            size = _output_side(module, size)
            if size < 1:
                break
        else:
            return side
    raise ValueError("Expected `layers` to accept some input up to 4096 pixels, but none fits.")


def _output_side(module: nn.Module, size: int) -> int:
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return size
    kernel, stride, padding = (
        _first(module.kernel_size),
        _first(module.stride),
        _first(module.padding),
    )
    dilation = _first(getattr(module, "dilation", 1))
    span = size + 2 * padding - dilation * (kernel - 1) - 1  # may be negative: then no window fits
    if getattr(module, "ceil_mode", False):
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding:  # the last window must start inside the input
            out -= 1
        return out
    return span // stride + 1


def _first(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value


def _reset(module: nn.Module) -> None:
    """Random initialisation for ``weights=None`` (torchvision's scheme for convolutions)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
