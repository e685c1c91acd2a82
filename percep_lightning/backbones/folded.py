"""Convolution + batch norm + ReLU blocks run as one convolution with a bias, for the frozen Inceptions.

Both Inception networks (the FID one and the art-trained one of ArtFID) are stacks of ``conv -> batch
norm -> ReLU`` blocks whose batch norms never train. In eval mode a batch norm is a per-channel affine
map, so it folds into the convolution before it: ``w' = w * s`` and ``b' = beta - mean * s`` with
``s = gamma / sqrt(var + eps)``. The convolution then writes the normalised output directly, and the
second full pass over every activation map (a tenth of the network's CPU time) disappears.

The official tensors (``conv.weight``, ``bn.*``) stay the module's state and the only thing in its
``state_dict``, so weight files load unchanged; the folded copies are non-persistent buffers, so
``module.to()`` moves them and changes their layout as any buffer. They are rebuilt from the official
tensors, in float64, after every load (a load-state-dict post hook) and at the first forward after a cast
(a block remembers the dtype it folded in: a float64 copy then has float64 accuracy, not a float32 fold
widened). Values equal the unfolded network to the module dtype's round-off.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from percep_lightning.backbones.base import MEMORY_FORMATS, preferred_memory_format

LayoutArg = Literal["auto", "channels_last", "contiguous"]
"""A frozen Inception's ``memory_format``: ``"auto"`` follows
:func:`~percep_lightning.backbones.preferred_memory_format`, the other two fix the layout."""


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm, ReLU, run as one folded convolution (see the module notes).

    Its children are named ``conv`` and ``bn``, as in pytorch-fid, torch-fidelity and torchvision
    (``BasicConv2d``), so their weight files load into it key for key.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        if conv.bias is not None:
            raise ValueError("Expected a convolution without bias (the batch norm holds the shift).")
        self.conv = conv
        self.bn = bn
        self.register_buffer("folded_weight", torch.empty(0), persistent=False)
        self.register_buffer("folded_bias", torch.empty(0), persistent=False)
        self.folded_dtype: torch.dtype | None = None  # the dtype of the last fold

    @classmethod
    def build(
        cls,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: Any = 0,
        eps: float = 1e-3,
    ) -> ConvBN:
        """A fresh block (batch-norm ``eps`` 1e-3 by default, TensorFlow's)."""
        return cls(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout, eps=eps),
        )

    def fold(self) -> None:
        """Rebuild the folded convolution from ``conv`` and ``bn`` (keeping their dtype, device and layout)."""
        # ordinary tensors even when the first forward after a cast runs under inference mode
        with torch.inference_mode(False), torch.no_grad():
            bn, weight = self.bn, self.conv.weight
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            folded = torch.empty_like(weight)  # same dtype, device and memory format as the convolution
            folded.copy_(weight.double() * scale.view(-1, 1, 1, 1))
            self.folded_weight = folded
            self.folded_bias = (bn.bias.double() - bn.running_mean.double() * scale).to(weight.dtype)
        self.folded_dtype = weight.dtype

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        if self.folded_dtype != conv.weight.dtype:  # cast since the last fold
            self.fold()
        y = F.conv2d(
            x, self.folded_weight, self.folded_bias, conv.stride, conv.padding, conv.dilation, conv.groups
        )
        return F.relu(y, inplace=True)


def check_layout(memory_format: object) -> None:
    """Raise a ValueError listing the choices unless ``memory_format`` is a :data:`LayoutArg`."""
    if memory_format not in ("auto", *MEMORY_FORMATS):
        raise ValueError(
            f"Expected `memory_format` to be one of {('auto', *MEMORY_FORMATS)}, but got {memory_format!r}."
        )


class FoldedBatchNorms(nn.Module):
    """Base of a frozen network built of :class:`ConvBN` blocks: keeps their folds current, picks the layout.

    Subclasses set ``self.memory_format`` (a :data:`LayoutArg`) and call :meth:`refold` once their weights
    are loaded; ``forward`` passes its network input through :meth:`in_layout`.
    """

    memory_format: LayoutArg = "auto"

    def refold(self) -> None:
        """Rebuild every block's folded convolution (after a load; a block refolds itself after a cast)."""
        for module in self.modules():
            if isinstance(module, ConvBN):
                module.fold()

    def watch_loads(self) -> None:
        """Refold after every later ``load_state_dict`` (casts refold at the next forward by themselves)."""
        self.register_load_state_dict_post_hook(_refold_after_load)

    def in_layout(self, x: Tensor) -> Tensor:
        """``x`` in the network's dtype and layout for its device (weights converted once, on first use)."""
        if self.memory_format == "auto":
            layout = preferred_memory_format(x.device)
        else:
            layout = MEMORY_FORMATS[self.memory_format]
        probe = next(m for m in self.modules() if isinstance(m, ConvBN) and m.conv.kernel_size != (1, 1))
        weight = probe.folded_weight
        if not weight.is_contiguous(memory_format=layout):
            with torch.inference_mode(False), torch.no_grad():
                self.to(memory_format=layout)
            weight = probe.folded_weight
        return x.to(weight.dtype).contiguous(memory_format=layout)


def _refold_after_load(module: FoldedBatchNorms, incompatible_keys: object) -> None:  # noqa: ARG001
    """The load-state-dict post hook of :meth:`FoldedBatchNorms.watch_loads` (a module-level function, so
    that the network pickles)."""
    module.refold()
