"""VGG perceptual and style loss (Johnson et al. 2016), with BasicSR's conventions and defaults."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from percep_lightning.backbones.base import HoldsFrozen
from percep_lightning.backbones.torchvision_trunks import MemoryFormatArg, TorchvisionFeatures, layer_index
from percep_lightning.backbones.weights import WeightsArg
from percep_lightning.functional._checks import (
    Reduction,
    check_choice,
    check_input_range,
    check_loss_inputs,
    check_reduction,
)
from percep_lightning.functional._images import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize
from percep_lightning.functional.inputs import check_real
from percep_lightning.functional.perceptual import CRITERIA, Criterion, l1_distance_then_relu, layer_distance

__all__ = ["DEFAULT_LAYER_WEIGHTS", "VGGPerceptualLoss"]

DEFAULT_LAYER_WEIGHTS: dict[str, float] = {
    "conv1_2": 0.1,
    "conv2_2": 0.1,
    "conv3_4": 1.0,
    "conv4_4": 1.0,
    "conv5_4": 1.0,
}
"""Real-ESRGAN's perceptual layers (BasicSR ``train_realesrgan_x4plus.yml``): features before the ReLU."""

_ARCHS = ("vgg19", "vgg16")


class VGGPerceptualLoss(HoldsFrozen, nn.Module):
    """Perceptual (feature) loss plus an optional style (Gram) loss on a frozen torchvision VGG.

    .. math::
        \\mathcal{L} = \\lambda_p \\sum_l w_l\\, \\mathrm{crit}(\\phi_l(\\hat y), \\phi_l(y))
        + \\lambda_s \\sum_l v_l\\, \\mathrm{crit}(G(\\phi_l(\\hat y)), G(\\phi_l(y)))

    where :math:`\\phi_l` are VGG feature maps of the ImageNet-normalised images, :math:`G` the Gram
    matrix :math:`F F^\\top / (c h w)` (computed in float32) and ``crit`` is ``"l1"`` (mean absolute),
    ``"l2"`` (mean squared) or ``"fro"`` (Frobenius norm), exactly as BasicSR's ``PerceptualLoss``, which
    returns the two terms separately (their weighted sum is returned here; the terms are in :attr:`parts`).

    Layer names follow the block_conv convention of :data:`~percep_lightning.backbones.LAYER_NAMES`:
    ``"conv3_4"`` is before its ReLU, ``"relu3_4"`` after. The default is Real-ESRGAN's
    (:data:`DEFAULT_LAYER_WEIGHTS`, pre-activation features as ESRGAN recommends); BasicSR's ESRGAN
    configs use ``{"conv5_4": 1.0}``. Layers of weight 0 are not computed and the trunk stops after the
    deepest layer in use. The target goes through the network under ``torch.no_grad()`` (it is a
    constant: it builds no graph even if it requires grad), then ``preds``, and each layer's term is taken
    as soon as ``preds``' map exists (the trunk runs layer by layer, through
    :meth:`~percep_lightning.backbones.TorchvisionFeatures.named_layers`), so a requested pre-activation
    costs no copy: the ReLU after it still runs in place (unless the style term needs that layer). With
    ``criterion="l1"`` such a layer's distance, the ReLU and the max pooling after it form one autograd
    node that allocates no full-size temporary
    (:func:`~percep_lightning.functional.perceptual.l1_distance_then_relu`).

    Args:
        layer_weights: ``{layer: weight}`` of the perceptual term; ``None`` for :data:`DEFAULT_LAYER_WEIGHTS`.
        criterion: ``"l1"``, ``"l2"`` or ``"fro"``.
        perceptual_weight: :math:`\\lambda_p`; 0 skips the perceptual term.
        style_weight: :math:`\\lambda_s`; 0 (the default) skips the style term.
        style_layer_weights: ``{layer: weight}`` of the style term; ``None`` uses ``layer_weights``.
        input_range: the ``(low, high)`` pixel range of the inputs, mapped to [0, 1] before the ImageNet
            mean/std normalisation (``(-1, 1)`` for tanh outputs).
        arch: ``"vgg19"`` (default) or ``"vgg16"``.
        weights: the torchvision ``state_dict`` of the network: ``"default"`` (IMAGENET1K_V1, cached or
            downloaded once), a file path, a state dict, or ``None`` (random, with a warning).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per image, ``(N,)``). For ``criterion="fro"``,
            ``"mean"`` is BasicSR's single norm over the whole batch, see
            :mod:`percep_lightning.functional.perceptual`.
        memory_format: the trunk's layout: ``"auto"`` (the rule of
            :func:`~percep_lightning.backbones.preferred_memory_format` for the device), ``"measure"``
            (both timed once per process on the CPU), ``"channels_last"`` or ``"contiguous"``.

    Attributes:
        parts: after each forward, the detached unweighted values: ``"perceptual"`` and ``"style"`` (the
            layer-weighted sums before :math:`\\lambda_p`, :math:`\\lambda_s`) and ``"perceptual/<layer>"``,
            ``"style/<layer>"`` (one layer's criterion), for the terms in use.

    Raises:
        ValueError: for an unknown layer (the message lists the valid names), ``criterion``, ``arch`` or
            ``reduction``, negative or non-finite weights, no layer to compute, or a bad ``input_range``;
            in the forward, images smaller than the deepest layer needs (16x16 for ``conv5_4``).
        RuntimeError: if ``weights`` does not hold the official VGG keys and shapes.

    Shape:
        - preds, target: ``(N, 3, H, W)`` or ``(N, 1, H, W)`` (grayscale, repeated to 3 channels), at
          least ``2^k`` pixels a side for a deepest layer after ``k`` poolings.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; float32 (float64 for a float64 module).

    Example:
        >>> import torch
        >>> from percep_lightning.losses.perceptual import VGGPerceptualLoss
        >>> loss = VGGPerceptualLoss({"relu2_2": 1.0}, style_weight=1.0, weights=None)
        >>> loss(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)).shape
        torch.Size([])
        >>> sorted(loss.parts)
        ['perceptual', 'perceptual/relu2_2', 'style', 'style/relu2_2']
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float] | None = None,
        *,
        criterion: Criterion = "l1",
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        style_layer_weights: Mapping[str, float] | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
        arch: Literal["vgg19", "vgg16"] = "vgg19",
        weights: WeightsArg = "default",
        reduction: Reduction = "mean",
        memory_format: MemoryFormatArg = "auto",
    ) -> None:
        super().__init__()
        check_choice(criterion, "criterion", CRITERIA)
        check_choice(arch, "arch", _ARCHS)
        check_reduction(reduction)
        self.criterion = criterion
        self.arch = arch
        self.reduction = reduction
        self.input_range = check_input_range(input_range)
        self.perceptual_weight = _check_weight(perceptual_weight, "perceptual_weight")
        self.style_weight = _check_weight(style_weight, "style_weight")
        layer_weights = DEFAULT_LAYER_WEIGHTS if layer_weights is None else layer_weights
        self.layer_weights = _check_layer_weights(layer_weights, "layer_weights", arch)
        self.style_layer_weights = (
            dict(self.layer_weights)
            if style_layer_weights is None
            else _check_layer_weights(style_layer_weights, "style_layer_weights", arch)
        )
        # Only what contributes is computed: zero-weight terms and layers are dropped here.
        self._perceptual_layers = _active(self.layer_weights) if self.perceptual_weight else {}
        self._style_layers = _active(self.style_layer_weights) if self.style_weight else {}
        used = sorted({*self._perceptual_layers, *self._style_layers}, key=lambda n: layer_index(arch, n))
        if not used:
            raise ValueError(
                "Expected at least one layer with a non-zero weight in a term with a non-zero weight, but "
                f"got perceptual_weight={perceptual_weight}, layer_weights={dict(self.layer_weights)}, "
                f"style_weight={style_weight}, style_layer_weights={dict(self.style_layer_weights)}."
            )
        # A pre-activation only the perceptual term reads is reduced before the ReLU after it runs, so
        # that ReLU stays in place; the style term's Gram matrix saves its input for the backward.
        self._consumed = {name for name in self._perceptual_layers if name.startswith("conv")} - set(
            self._style_layers
        )
        self._hold("vgg", TorchvisionFeatures(arch, used, weights=weights, memory_format=memory_format))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.parts: dict[str, Tensor] = {}

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        """The weighted sum of the perceptual and style terms; see the class docstring."""
        check_loss_inputs(preds, target, self.input_range, owner=self)
        trunk: TorchvisionFeatures = self._held("vgg")  # type: ignore[assignment]
        trunk.check_size(preds, ("preds", "target"))
        dtype = trunk.layers[0].weight.dtype
        with torch.no_grad():
            y = imagenet_normalize(target, self.input_range, self.mean, self.std, dtype)
        x = imagenet_normalize(preds, self.input_range, self.mean, self.std, dtype)
        terms = (
            ("perceptual", self._perceptual_layers, self.perceptual_weight),
            ("style", self._style_layers, self.style_weight),
        )
        per_layer: dict[str, dict[str, Tensor]] = {"perceptual": {}, "style": {}}

        def fuse(name: str, p: Tensor, t: Tensor, pool: nn.MaxPool2d | None) -> Tensor:
            per_layer["perceptual"][name], after = self._l1_then_relu(p, t, pool)
            return after

        # An L1 pre-activation only the perceptual term reads: distance, ReLU and pooling in one node.
        walk = _walk_pair(trunk, x, y, consumed=self._consumed, fuse=fuse if self.criterion == "l1" else None)
        for name, p, t in walk:
            for term, layers, _ in terms:
                if name in layers:
                    per_layer[term][name] = layer_distance(
                        p, t, criterion=self.criterion, reduction=self.reduction, gram=term == "style"
                    )

        parts: dict[str, Tensor] = {}
        total: Tensor | None = None
        for term, layers, weight in terms:
            if not layers:
                continue
            value = sum(per_layer[term][name] * w for name, w in layers.items())
            parts[term] = value.detach()
            parts.update({f"{term}/{name}": per_layer[term][name].detach() for name in layers})
            total = value * weight if total is None else total + value * weight
        self.parts = parts
        return total

    def _l1_then_relu(
        self, preds: Tensor, target: Tensor, pool: nn.MaxPool2d | None
    ) -> tuple[Tensor, Tensor]:
        """One layer's L1 term, reduced, and the pre-activation after its ReLU (and ``pool``)."""
        exact = preds.dtype in (torch.float32, torch.float64) and target.dtype == preds.dtype
        if exact and preds.stride() == target.stride():
            values, after = l1_distance_then_relu(preds, target, pool=pool)
        else:  # half-precision maps (autocast), compared in float32, or odd strides; then ReLU and pooling
            values = layer_distance(preds, target, criterion="l1", reduction="none")
            after = torch.relu_(preds) if pool is None else pool(torch.relu_(preds))
        if self.reduction == "none":
            return values, after
        return (values.mean() if self.reduction == "mean" else values.sum()), after

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, criterion={self.criterion!r}, layer_weights={self.layer_weights}, "
            f"perceptual_weight={self.perceptual_weight}, style_weight={self.style_weight}, "
            f"style_layer_weights={self.style_layer_weights}, input_range={self.input_range}, "
            f"reduction={self.reduction!r}"
        )


_Fuse = Callable[[str, Tensor, Tensor, "nn.MaxPool2d | None"], Tensor]
"""``fuse(name, preds_features, target_features, pool)`` of :func:`_walk_pair`."""


def _walk_pair(
    trunk: TorchvisionFeatures,
    preds: Tensor,
    target: Tensor,
    *,
    consumed: Collection[str] = (),
    fuse: _Fuse | None = None,
) -> Iterator[tuple[str, Tensor, Tensor]]:
    """Run ``target`` (under ``no_grad``), then ``preds`` (with autograd) through ``trunk``, pair by pair.

    The order of :class:`VGGPerceptualLoss`'s forward, built on the trunk's
    :meth:`~percep_lightning.backbones.TorchvisionFeatures.named_layers`. Yields ``(name, preds_features,
    target_features)`` for each requested layer, in network order, as soon as ``preds``' map exists, so a
    caller that reduces each pair on the spot (a feature distance) frees ``preds``' side as it goes.
    ``target`` runs first, keeping only its requested maps (the same peak memory as a caller that saves its
    maps for the backward; running the two passes one after the other is faster on the CPU than
    interleaving them).

    A requested layer named in ``consumed`` is a pair the caller uses up before it resumes the iterator,
    which saves memory traffic:

    * its ``target_features`` are the caller's to overwrite, e.g. with what its backward needs (``target``
      went on from a copy: a ReLU followed by a max pooling ran as the pooling then the ReLU, which is the
      same);
    * the ReLU right after it runs in place on ``preds_features``, as torchvision's does, so the caller
      must not have saved ``preds_features`` for its backward;
    * or, with ``fuse``, a consumed layer followed by a ReLU is not yielded: ``fuse(name, preds_features,
      target_features, pool)`` takes it and returns the map after that ReLU and, when ``pool`` is not
      ``None``, after the max pooling ``pool`` that follows the ReLU (not requested itself), so that the
      caller can run its reduction, the ReLU and the pooling as one autograd node (as
      :func:`~percep_lightning.functional.perceptual.l1_distance_then_relu` does).

    Args:
        trunk: the frozen VGG.
        preds: ``(N, 3, H, W)`` input that gradients flow to.
        target: the other input (a constant), same shape.
        consumed: requested layers whose pair the caller uses up before resuming.
        fuse: takes over the consumed layers followed by a ReLU, see above.

    Example:
        >>> net = TorchvisionFeatures("vgg19", ["conv1_2", "relu2_1"], weights=None)
        >>> x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
        >>> [(name, tuple(a.shape)) for name, a, b in _walk_pair(net, x, y, consumed={"conv1_2"})]
        [('conv1_2', (1, 64, 16, 16)), ('relu2_1', (1, 128, 8, 8))]
    """
    x, y = trunk.prepare(preds, "preds"), trunk.prepare(target, "target")
    names, layers = zip(*trunk.named_layers(), strict=True)
    wanted = {i: name for i, name in enumerate(names) if name in trunk.layer_names}
    early = {i for i, name in wanted.items() if name in consumed}
    y_maps = _target_maps(layers, wanted, y, early)
    x_done = -1  # the last layer ``x`` has been through
    for i, layer in enumerate(layers):
        if i > x_done:
            x = torch.relu_(x) if i - 1 in early and isinstance(layer, nn.ReLU) else layer(x)
            x_done = i
        name = wanted.get(i)
        if name is None:
            continue
        if i in early and fuse is not None and _relu_follows(layers, i):
            pool = _pool_after_relu(layers, wanted, i)
            x = fuse(name, x, y_maps.pop(name), pool)
            x_done = i + 1 + (pool is not None)
        else:
            yield name, x, y_maps.pop(name)


@torch.no_grad()
def _target_maps(
    layers: Sequence[nn.Module], wanted: dict[int, str], y: Tensor, early: set[int]
) -> dict[str, Tensor]:
    """``y``'s requested maps; each one of a layer in ``early`` is left for the caller to overwrite."""
    maps: dict[str, Tensor] = {}
    done = -1
    for i, layer in enumerate(layers):
        if i > done:
            y, done = layer(y), i
        name = wanted.get(i)
        if name is None:
            continue
        maps[name] = y
        if i in early and i + 1 < len(layers):  # go on from a copy
            pool = _pool_after_relu(layers, wanted, i)
            if pool is not None:
                y, done = pool(y).relu_(), i + 2  # max pooling commutes with the ReLU
            elif isinstance(layers[i + 1], nn.ReLU):
                y, done = torch.relu(y), i + 1
    return maps


def _relu_follows(layers: Sequence[nn.Module], i: int) -> bool:
    return i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)


def _pool_after_relu(layers: Sequence[nn.Module], wanted: dict[int, str], i: int) -> nn.MaxPool2d | None:
    """The max pooling right after the (not requested) ReLU after layer ``i``, if that is what follows."""
    if i + 2 >= len(layers) or i + 1 in wanted or not _relu_follows(layers, i):
        return None
    pool = layers[i + 2]
    return pool if isinstance(pool, nn.MaxPool2d) else None


def _check_weight(value: float, name: str) -> float:
    value = check_real(value, name)
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"Expected `{name}` to be a finite number >= 0, but got {value}.")
    return value


def _check_layer_weights(layer_weights: Mapping[str, float], name: str, arch: str) -> dict[str, float]:
    if not isinstance(layer_weights, Mapping):
        raise TypeError(
            f"Expected `{name}` to be a mapping {{layer: weight}}, but got {type(layer_weights).__name__}."
        )
    checked = {}
    for layer, weight in layer_weights.items():
        layer_index(arch, str(layer))  # unknown names raise, listing the valid ones
        checked[str(layer)] = _check_weight(weight, f"{name}[{layer!r}]")
    return checked


def _active(layer_weights: dict[str, float]) -> dict[str, float]:
    return {name: w for name, w in layer_weights.items() if w != 0}
