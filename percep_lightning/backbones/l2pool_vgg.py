"""The DISTS trunk: torchvision's VGG16 ``features`` with every max pooling replaced by L2 pooling.

Ding et al. (TPAMI 2020) replace VGG16's 2x2 max poolings, which alias, by an L2 pooling: the square
root of a low-pass filtered square, ``sqrt(g * x^2 + 1e-12)`` with ``g`` the 3x3 outer product of the
inner taps of a 5-point Hann window, ``(1/4, 1/2, 1/4)``, normalised to sum 1, stride 2 and padding 1.
The convolutions are torchvision's, loaded from the official VGG16 file (the one LPIPS ``net="vgg"``
reads, :data:`~percep_lightning.backbones.weights.WEIGHTS` ``"vgg16"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from percep_lightning.backbones.base import MEMORY_FORMATS, FrozenBackbone, preferred_memory_format
from percep_lightning.backbones.folded import LayoutArg, check_layout
from percep_lightning.backbones.weights import WeightsArg, check_state_dict, resolve_state_dict
from percep_lightning.functional._images import check_min_size

__all__ = ["DISTS_LAYERS", "L2Pool2d", "L2PoolVGG16", "l2_pool_window"]

DISTS_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
"""The VGG16 outputs DISTS compares, in network order."""
_OUTPUT_INDEX = (3, 8, 15, 22, 29)  # their positions in torchvision's vgg16().features
_POOL_INDEX = (4, 9, 16, 23)  # the max poolings that L2 pooling replaces
_DEPTH = 30  # features[:30] ends at relu5_3 (the fifth max pooling is never used)
L2_POOL_EPS = 1e-12
"""Added under the square root of the L2 pooling (the reference's constant)."""


def l2_pool_window(dtype: torch.dtype = torch.float32) -> Tensor:
    """The 3x3 L2-pooling window: the outer product of ``hann(5)[1:-1]`` with itself, normalised to sum 1.

    ``hann(5) = (0, 1/2, 1, 1/2, 0)``, so the window is ``(1, 2, 1)^T (1, 2, 1) / 16`` (exact in binary).

    Example:
        >>> l2_pool_window() * 16
        tensor([[1., 2., 1.],
                [2., 4., 2.],
                [1., 2., 1.]])
    """
    taps = torch.hann_window(5, periodic=False, dtype=torch.float64)[1:-1]
    window = torch.outer(taps, taps)
    return (window / window.sum()).to(dtype)


class L2Pool2d(nn.Module):
    """L2 pooling over each channel: ``sqrt(conv(x^2, window, stride 2, padding 1) + 1e-12)``.

    The output side is ``ceil(side / 2)``, so every input size has an output.

    Args:
        channels: the number of channels (the window is applied depthwise).

    Shape:
        - Input: ``(N, channels, H, W)``.
        - Output: ``(N, channels, ceil(H / 2), ceil(W / 2))``.

    Example:
        >>> pool = L2Pool2d(2)
        >>> pool(torch.ones(1, 2, 5, 4)).shape
        torch.Size([1, 2, 3, 2])
    """

    window: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        window = l2_pool_window().expand(channels, 1, 3, 3).contiguous()
        self.register_buffer("window", window, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        window = self.window.to(x.dtype)
        if torch.is_grad_enabled() and x.requires_grad:
            return _L2Pool.apply(x, window)
        return _l2_pool(x, window)  # no graph (the target's pass)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def _l2_pool(x: Tensor, window: Tensor) -> Tensor:
    filtered = F.conv2d(x * x, window, stride=2, padding=1, groups=window.shape[0])
    return filtered.add_(L2_POOL_EPS).sqrt_()


class _L2Pool(torch.autograd.Function):
    """L2 pooling with its backward written out: ``dx = x * conv_transpose(g / out)``.

    Autograd through the formula would save ``x^2`` (a full-size map) for the convolution and run the
    square's backward as two products and a sum; here ``x`` (kept by the layers around it anyway) and the
    pooled output are saved, and the backward is one transposed convolution and one product.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, window: Tensor) -> Tensor:
        out = _l2_pool(x, window)
        ctx.save_for_backward(x, window, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        x, window, out = ctx.saved_tensors  # type: ignore[attr-defined]
        # d sqrt(s + eps) / ds = 1 / (2 out) and d s / dx = 2 x (window^T *): the factors 2 cancel
        spread = torch.nn.grad.conv2d_input(
            x.shape, window.to(grad.dtype), grad / out, stride=2, padding=1, groups=window.shape[0]
        )
        return spread.mul_(x), None


def _pooled_side(side: int) -> int:
    return (side - 1) // 2 + 1


class L2PoolVGG16(FrozenBackbone):
    """Frozen torchvision VGG16 ``features[:30]`` with L2 pooling, returning the five DISTS feature maps.

    Args:
        weights: ``"default"`` (torchvision's IMAGENET1K_V1 ``vgg16-397923af.pth``, cached or downloaded
            once; offline, the error names the file and ``percep-lightning weights download vgg16``), a
            path to a file in that format (the full model's ``state_dict``), a state dict, or ``None``
            (random, with a warning).
        memory_format: the layout of the weights and inputs: ``"auto"`` (default) follows
            :func:`~percep_lightning.backbones.preferred_memory_format`; ``"channels_last"`` or
            ``"contiguous"`` fix it. The values do not depend on it beyond float rounding.

    Attributes:
        min_size: ``(17, 17)``: the smallest input whose relu5_3 map is at least 2x2, so that every
            stage has a spatial variance (the texture term) to compare. The convolutions themselves run
            on any size.

    Raises:
        ValueError: for an unknown ``memory_format``.
        RuntimeError: if the weights do not have the keys and shapes of the official VGG16 file.

    Shape:
        - Input: ``(N, 3, H, W)``, ImageNet-normalised, at least :attr:`min_size`.
        - Output: ``{name: (N, C, H_l, W_l)}`` for the names of :data:`DISTS_LAYERS`, with ``C`` 64, 128,
          256, 512, 512 and ``H_l = ceil(H / 2^l)`` (``l`` = 0 to 4).

    Example:
        >>> net = L2PoolVGG16(weights=None)
        >>> {k: tuple(v.shape) for k, v in net(torch.rand(1, 3, 20, 20)).items()}
        {'relu1_2': (1, 64, 20, 20), 'relu2_2': (1, 128, 10, 10), 'relu3_3': (1, 256, 5, 5), 'relu4_3': (1, 512, 3, 3), 'relu5_3': (1, 512, 2, 2)}
    """

    arch = "vgg16"

    def __init__(self, weights: WeightsArg = "default", *, memory_format: LayoutArg = "auto") -> None:
        super().__init__()
        check_layout(memory_format)
        self.memory_format = memory_format
        with torch.device("meta"):
            reference = torchvision.models.vgg16(weights=None)
        state, source = resolve_state_dict(self.arch, weights)
        if state is not None:
            check_state_dict(reference, state, source, self.arch)
        layers = reference.features[:_DEPTH].to_empty(device="cpu")
        if state is None:
            _initialise(layers)
        else:
            prefix = "features."
            layers.load_state_dict(
                {
                    k[len(prefix) :]: v
                    for k, v in state.items()
                    if k.startswith(prefix) and int(k[len(prefix) :].split(".")[0]) < _DEPTH
                },
                strict=True,
            )
        for i in _POOL_INDEX:
            layers[i] = L2Pool2d(layers[i - 2].out_channels)
        self.layers = layers
        side = 1
        while _pooled_side(_pooled_side(_pooled_side(_pooled_side(side)))) < 2:
            side += 1
        self.min_size = (side, side)
        self.freeze()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Run the trunk on ImageNet-normalised images and return the five maps by name."""
        x = self.prepare(x, "x")
        found: dict[str, Tensor] = {}
        outputs = dict(zip(_OUTPUT_INDEX, DISTS_LAYERS, strict=True))
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in outputs:
                found[outputs[i]] = x
        return found

    def prepare(self, x: Tensor, name: str = "x") -> Tensor:
        """Check the size of an input and put it (and the weights, on first use) in the chosen layout.

        Raises:
            ValueError: if ``x`` is smaller than :attr:`min_size`.
        """
        self.check_size(x, name)
        if self.memory_format == "auto":
            layout = preferred_memory_format(x.device)
        else:
            layout = MEMORY_FORMATS[self.memory_format]
        if not self.layers[0].weight.is_contiguous(memory_format=layout):
            with torch.inference_mode(False), torch.no_grad():
                self.to(memory_format=layout)
        return x if x.is_contiguous(memory_format=layout) else x.contiguous(memory_format=layout)

    def check_size(self, images: Tensor, names: str | tuple[str, ...]) -> None:
        """Raise a ValueError naming ``names`` if ``images`` are smaller than :attr:`min_size`."""
        check_min_size(images, names, self.min_size, "DISTS (relu5_3 of VGG16 at least 2x2)")


def _initialise(module: nn.Module) -> None:
    """Random initialisation for ``weights=None`` (torchvision's scheme for VGG's convolutions)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
