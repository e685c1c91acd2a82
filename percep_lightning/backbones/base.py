"""Frozen feature extractors and the way losses and metrics hold them.

A pretrained backbone inside a loss must not be trained, must not be handed to the user's optimizer,
and must not bloat the user's checkpoints. Two pieces do that:

* :class:`FrozenBackbone`: ``requires_grad=False`` on every parameter and ``train()`` that always
  leaves it in eval mode (BatchNorm statistics and dropout never change).
* :class:`HoldsFrozen`: a mixin for the loss or metric that owns one. The backbone is kept outside
  the module tree (not a registered child), so ``parameters()``, ``state_dict()`` and therefore
  Lightning checkpoints and optimizers never see it, while ``.to(device)``, ``.cuda()``,
  ``.half()`` and ``.to(memory_format=...)`` still reach it through ``_apply``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


class FrozenBackbone(nn.Module):
    """Base class of the pretrained trunks: frozen parameters, always in eval mode."""

    def freeze(self) -> FrozenBackbone:
        """Disable gradients and switch to eval mode; returns ``self``."""
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> FrozenBackbone:  # noqa: ARG002 (frozen: mode is ignored)
        """Stay in eval mode whatever ``mode`` is (the parent's ``.train()`` must not unfreeze it)."""
        return super().train(False)


class HoldsFrozen:
    """Mixin for an ``nn.Module`` that owns frozen backbones without registering them as children.

    Use :meth:`_hold` in ``__init__`` and :meth:`_held` to get the backbone back. Subclasses that need
    the backbone to stay in float32 whatever dtype the parent is cast to set ``_frozen_keep_float32``.

    The holder's ``_apply`` (what ``.to()``, ``.cuda()``, ``.half()`` and torchmetrics' ``set_dtype`` call)
    is also the one place where tensors named in ``_float64_attributes`` are moved: they change device
    only, never dtype, and on a device without float64 (MPS) they stay where they are. Metrics keep their
    float64 running sums there (:class:`~percep_lightning.metrics._images.Float64Sums`).
    """

    _frozen_keep_float32: bool = False
    _float64_attributes: tuple[str, ...] = ()

    def _hold(self, name: str, backbone: nn.Module) -> None:
        held = self.__dict__.setdefault("_frozen_modules", {})
        held[name] = backbone

    def _held(self, name: str) -> nn.Module:
        return self.__dict__["_frozen_modules"][name]

    def _apply(self, fn: Callable[[Tensor], Tensor], *args: Any, **kwargs: Any) -> Any:
        aside = {name: getattr(self, name) for name in self._float64_attributes}
        for name, value in aside.items():
            # a float32 stand-in takes whatever `fn` does (a float64 tensor cannot even go to MPS)
            setattr(self, name, torch.zeros(0, device=value.device))
        result = super()._apply(fn, *args, **kwargs)  # type: ignore[misc]
        if aside:
            device = fn(torch.zeros(0, device=next(iter(aside.values())).device)).device
            for name, value in aside.items():
                setattr(self, name, value if device.type == "mps" else value.to(device))
        for backbone in self.__dict__.get("_frozen_modules", {}).values():
            backbone._apply(fn)
            if self._frozen_keep_float32:
                backbone.float()
        return result


MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
"""The fixed layouts a backbone's ``memory_format`` argument names."""


def preferred_memory_format(device: torch.device) -> torch.memory_format:
    """The layout the backbones use on ``device`` by default (``memory_format="auto"``).

    The rule, from the side-by-side runs in ``benchmarks/README.md`` (one table per CPU kind):

    * CUDA: channels-last (cuDNN's tensor-core kernels read NHWC).
    * CPU with AVX-512 (``torch.backends.cpu.get_cpu_capability()``): channels-last. On the Intel Xeon
      machines measured, oneDNN's channels-last convolutions, pooling and the losses' channel reductions
      beat the default layout for VGG, AlexNet and SqueezeNet, and for the FID Inception (about 30% less
      CPU time per image).
    * other CPUs (AVX2 and below): torchvision's default layout. On an AMD EPYC run channels-last AlexNet
      was the slower; whether that follows the instruction set is not established, so pass
      ``memory_format`` to override.
    * other devices: the default layout.

    A rule, not a measurement, so that the layout (and float rounding) does not depend on what else
    the machine was doing at start-up. ``memory_format="measure"`` times both layouts instead, once per
    process, network and dtype (:func:`~percep_lightning.backbones.torchvision_trunks.measured_memory_format`).

    Example:
        >>> preferred_memory_format(torch.device("cuda"))
        torch.channels_last
    """
    if device.type == "cuda":
        return torch.channels_last
    if device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return torch.channels_last
    return torch.contiguous_format
