"""The art-trained Inception v3 of ArtFID (Wright & Ommer 2022), as StyleID's evaluation loads it.

``art_inception.pth`` holds a torchvision Inception v3 trunk fine-tuned on art with two classifier heads
(``fc1``/``fc2``) and two auxiliary heads (``AuxLogits1``/``AuxLogits2``). StyleID's
``evaluation/eval_artfid.py`` loads it with ``strict=False`` into such a network and takes the 2048-d
features after the global average pool of images read as ``Resize(512)`` (shorter side to 512 pixels,
Pillow bilinear with antialiasing, on the 8-bit image) then ``ToTensor`` (values in [0, 1]): no 299x299
resize and no normalisation. Unlike the FID Inception, this is torchvision's architecture (average pools
that count padding, an average pool in the last block).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from percep_lightning.backbones.base import FrozenBackbone
from percep_lightning.backbones.extractor import module_digest
from percep_lightning.backbones.folded import ConvBN, FoldedBatchNorms, LayoutArg, check_layout
from percep_lightning.backbones.weights import WeightsArg, resolve_state_dict
from percep_lightning.functional.inputs import check_int

ART_INCEPTION_SIZE = 512
"""StyleID resizes the shorter image side to this many pixels before the network."""

_TRUNK = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)  # fmt: skip
_HEADS = ("AuxLogits1", "AuxLogits2", "fc1", "fc2")


def resize_shorter_side(images: Tensor, size: int = ART_INCEPTION_SIZE) -> Tensor:
    """Resize 8-bit images as ``torchvision.transforms.Resize(size)`` does on a Pillow image.

    The shorter side becomes ``size`` and the longer ``int(size * long / short)``; Pillow's bilinear
    filter (antialiased when shrinking) runs on the ``uint8`` RGB image and the result stays ``uint8``.
    Images whose shorter side is already ``size`` are returned unchanged, as torchvision does.

    Args:
        images: ``(N, 3, H, W)`` ``uint8`` images.
        size: the length of the shorter side after resizing.

    Returns:
        ``(N, 3, H', W')`` ``uint8`` on the device of ``images``.

    Raises:
        TypeError: if ``images`` is not a ``uint8`` tensor.
        ValueError: if ``images`` is not ``(N, 3, H, W)`` or ``size < 1``.

    Example:
        >>> import torch
        >>> from percep_lightning.backbones.art_inception import resize_shorter_side
        >>> resize_shorter_side(torch.zeros(1, 3, 40, 60, dtype=torch.uint8), 20).shape
        torch.Size([1, 3, 20, 30])
    """
    if not isinstance(images, Tensor) or images.dtype != torch.uint8:
        raise TypeError(
            f"Expected `images` to be a uint8 tensor, but got {getattr(images, 'dtype', type(images))}."
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"Expected `images` of shape (N, 3, H, W), but got {tuple(images.shape)}.")
    if size < 1:
        raise ValueError(f"Expected `size` to be >= 1, but got {size}.")
    from PIL import Image

    height, width = images.shape[-2:]
    short, long = sorted((height, width))
    if short == size:
        return images
    new_long = int(size * long / short)
    new_height, new_width = (size, new_long) if height <= width else (new_long, size)
    pixels = images.detach().cpu().permute(0, 2, 3, 1).numpy()
    out = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(p), mode="RGB").resize(
                    (new_width, new_height), Image.BILINEAR
                )
            )
            for p in pixels
        ]
    )
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device)


class ArtInception(FoldedBatchNorms, FrozenBackbone):
    """The frozen art-trained Inception v3 of ArtFID, returning 2048-d pooled features.

    Args:
        weights: ``"default"`` (the official ``art_inception.pth`` from its published URL, cached), a path
            to a file in that format, a state dict, or ``None`` for random weights. As in StyleID the file
            is loaded non-strictly, but every key that is ignored (unexpected, or a head that is missing or
            shaped differently) is reported in one warning and kept in :attr:`ignored_keys`; a missing or
            mis-shaped trunk weight is an error, since the features would silently be random.
        resize: the shorter-side length the images are resized to first (StyleID: 512), or ``None`` to
            feed them at their own size.
        memory_format: ``"auto"`` (default: :func:`~percep_lightning.backbones.preferred_memory_format`'s
            rule for the input's device), ``"channels_last"`` or ``"contiguous"``. The batch norms are
            folded into their convolutions (:mod:`~percep_lightning.backbones.folded`); values agree with
            torchvision's network to float32 round-off.

    Shape:
        - Input: ``(N, 3, H, W)`` ``uint8`` pixels in [0, 255] (the resize works on 8-bit images, as
          StyleID's reading of image files does).
        - Output: ``(N, 2048)`` float32.

    Raises:
        ValueError: for a ``resize`` below 75 or a bad input shape.
        TypeError: for a ``resize`` that is neither None nor an integer, or a non-``uint8`` input.
        RuntimeError: if the weights lack trunk keys or have wrong shapes.

    Example:
        >>> import torch
        >>> from percep_lightning.backbones import ArtInception
        >>> net = ArtInception(weights=None, resize=96)
        >>> net(torch.zeros(1, 3, 96, 128, dtype=torch.uint8)).shape
        torch.Size([1, 2048])
    """

    def __init__(
        self,
        weights: WeightsArg = "default",
        resize: int | None = ART_INCEPTION_SIZE,
        memory_format: LayoutArg = "auto",
    ) -> None:
        super().__init__()
        check_layout(memory_format)
        self.memory_format = memory_format
        if resize is not None:
            resize = check_int(resize, "resize")
            if resize < 75:
                raise ValueError(
                    f"Expected `resize` to be None or an integer >= 75 (the network's smallest input), but got {resize}."
                )
        self.resize = resize
        reference = torchvision.models.Inception3(
            num_classes=1000, aux_logits=True, transform_input=False, init_weights=False
        )
        for name in _TRUNK:
            setattr(self, name, _folded(getattr(reference, name)))
        self.AuxLogits1 = reference.AuxLogits
        self.AuxLogits2 = copy.deepcopy(reference.AuxLogits)
        self.fc1 = nn.Linear(2048, 1000)
        self.fc2 = nn.Linear(2048, 1000)
        self.ignored_keys: list[str] = []

        state, source = resolve_state_dict("art_inception", weights)
        if state is None:
            # As for the FID Inception: He-normal keeps random features from collapsing through the depth,
            # so offline smoke runs still give varying numbers.
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        else:
            self._load(state, source)
        self.refold()
        self.watch_loads()
        self.freeze()

    def _load(self, state: Mapping[str, Tensor], source: str) -> None:
        expected = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        trunk = {k for k in expected if k.split(".")[0] in _TRUNK and not k.endswith("num_batches_tracked")}
        missing = sorted(trunk - set(state))
        wrong = sorted(k for k in trunk & set(state) if tuple(state[k].shape) != expected[k])
        if missing or wrong:
            lines = [f"Weights from {source} do not hold the art_inception trunk (art_inception.pth):"]
            if missing:
                lines.append(
                    f"  missing keys ({len(missing)}): {', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}"
                )
            lines += [
                f"  shape of {k}: expected {expected[k]}, got {tuple(state[k].shape)}" for k in wrong[:5]
            ]
            raise RuntimeError("\n".join(lines))
        usable = {k: v for k, v in state.items() if k in expected and tuple(v.shape) == expected[k]}
        self.load_state_dict(usable, strict=False)
        ignored = sorted(set(state) - set(usable))
        absent_heads = sorted(
            k
            for k in expected
            if k.split(".")[0] in _HEADS and k not in usable and not k.endswith("num_batches_tracked")
        )
        self.ignored_keys = ignored + absent_heads
        if self.ignored_keys:
            warnings.warn(
                f"art_inception weights from {source} loaded non-strictly (as StyleID does); the features do not "
                f"use the keys that were ignored: unexpected or mis-shaped {ignored[:6]}, heads left random "
                f"{absent_heads[:6]}" + (" ..." if len(self.ignored_keys) > 12 else "") + ".",
                UserWarning,
                stacklevel=3,
            )

    def preprocess(self, images: Tensor) -> Tensor:
        """Resize ``uint8`` images (shorter side to ``resize``) and scale them to [0, 1] (``ToTensor``)."""
        if not isinstance(images, Tensor) or images.dtype != torch.uint8:
            raise TypeError(f"Expected uint8 images, but got {getattr(images, 'dtype', type(images))}.")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected images of shape (N, 3, H, W), but got {tuple(images.shape)}.")
        if self.resize is not None:
            images = resize_shorter_side(images, self.resize)
        return images.to(torch.float32) / 255

    def forward(self, images: Tensor) -> Tensor:
        """Return the ``(N, 2048)`` pooled features of ``uint8`` images."""
        x = self.in_layout(self.preprocess(images))
        for name in _TRUNK:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3)).float()

    # ------------------------------------------------ the FeatureExtractor contract (backbones.extractor)
    num_features = 2048
    """The pooled feature size (StyleID's FID compares these features)."""
    input_format = "uint8"
    """``uint8`` pixels: the resize works on 8-bit images, as StyleID's reading of image files does."""

    @property
    def identity(self) -> str:
        """``"art_inception:<resize>:<sha256 of the weights>"`` (cache keys)."""
        return f"art_inception:{self.resize}:{module_digest(self)}"

    def extract_features(self, images: Tensor) -> Tensor:
        """The ``(N, 2048)`` pooled features of ``uint8`` images (the same as calling the network)."""
        return self(images)


def _folded(module: nn.Module) -> nn.Module:
    """``module`` with every torchvision ``BasicConv2d`` (conv, bn, ReLU) replaced by a folded :class:`ConvBN`
    holding the same ``conv`` and ``bn`` (the state-dict keys do not change)."""
    if isinstance(module, torchvision.models.inception.BasicConv2d):
        return ConvBN(module.conv, module.bn)
    for name, child in module.named_children():
        setattr(module, name, _folded(child))
    return module
