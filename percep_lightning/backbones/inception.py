"""The FID Inception network: TensorFlow's 2015-12-05 Inception v3 graph, ported to PyTorch.

This is the network every published FID and Inception Score comes from (pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``, the same file torch-fidelity and torchmetrics load). It
differs from torchvision's Inception v3 in three places, all reproduced here: average pools that do not
count padding, a max pool in the last block, and a 1008-way classifier.

The reference implementations agree on the network but not on how an image reaches 299x299, and the
published numbers differ by that alone. ``resize`` chooses one of them (see :data:`RESIZE_MODES`):

* ``"tensorflow"``: torch-fidelity (and the TensorFlow FID code of the original papers): TensorFlow 1.x
  bilinear resize (no half-pixel offset, no antialiasing) of ``[0, 255]`` pixels, then
  ``(x - 128) / 128``.
* ``"pytorch_fid"``: pytorch-fid: pixels as float in [0, 1], ``F.interpolate(bilinear,
  align_corners=False)``, then ``2 x - 1``.
* ``"clean"``: clean-fid (Parmar et al. 2022): each channel as a float32 Pillow image resized with
  antialiased bicubic filtering (``make_resizer("PIL", False, "bicubic", (299, 299))``), values kept
  unquantised in [0, 255], then ``(x - 128) / 128``.
* ``"bilinear"``: the pytorch-fid resize with torch-fidelity's ``(x - 128) / 128`` scaling; kept for
  compatibility with earlier versions of this package, it reproduces no published number (its features
  are about 0.3% from pytorch-fid's): prefer ``"pytorch_fid"``.

One forward pass returns both the 2048-d pool3 features (FID) and the classifier logits without the
bias (the "logits_unbiased" that Inception Score uses).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from percep_lightning.backbones.base import FrozenBackbone
from percep_lightning.backbones.extractor import module_digest
from percep_lightning.backbones.folded import ConvBN, FoldedBatchNorms, LayoutArg, check_layout
from percep_lightning.backbones.weights import WeightsArg, check_state_dict, resolve_state_dict

INCEPTION_SIZE = 299
ResizeMode = Literal["tensorflow", "pytorch_fid", "clean", "bilinear"]
RESIZE_MODES: tuple[str, ...] = ("tensorflow", "pytorch_fid", "clean", "bilinear")
"""The accepted ``resize`` values, in the order the documentation lists them."""


def check_resize(resize: object) -> None:
    """Raise a ValueError listing :data:`RESIZE_MODES` unless ``resize`` is one of them.

    Example:
        >>> from percep_lightning.backbones.inception import check_resize
        >>> check_resize("clean")
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"Expected `resize` to be one of {RESIZE_MODES}, but got {resize!r}.")


class InceptionFeatures(NamedTuple):
    """Outputs of :class:`FIDInceptionV3`.

    Attributes:
        pool3: ``(N, 2048)`` average-pooled features of the last block (FID).
        logits_unbiased: ``(N, 1008)`` classifier logits without the bias (Inception Score).
    """

    pool3: Tensor
    logits_unbiased: Tensor


def _avg_pool_same(x: Tensor) -> Tensor:
    # TensorFlow's average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _MixedA(nn.Module):
    """35x35 block (Mixed_5b/5c/5d)."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN.build(cin, 64, 1)
        self.branch5x5_1 = ConvBN.build(cin, 48, 1)
        self.branch5x5_2 = ConvBN.build(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN.build(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN.build(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN.build(96, 96, 3, padding=1)
        self.branch_pool = ConvBN.build(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool_same(x)),
            ],
            1,
        )


class _ReductionA(nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN.build(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN.build(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN.build(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN.build(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class _MixedC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..6e)."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        self.branch1x1 = ConvBN.build(cin, 192, 1)
        self.branch7x7_1 = ConvBN.build(cin, c7, 1)
        self.branch7x7_2 = ConvBN.build(c7, c7, row[0], padding=row[1])
        self.branch7x7_3 = ConvBN.build(c7, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = ConvBN.build(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN.build(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_3 = ConvBN.build(c7, c7, row[0], padding=row[1])
        self.branch7x7dbl_4 = ConvBN.build(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_5 = ConvBN.build(c7, 192, row[0], padding=row[1])
        self.branch_pool = ConvBN.build(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool_same(x))], 1)


class _ReductionB(nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN.build(cin, 192, 1)
        self.branch3x3_2 = ConvBN.build(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN.build(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN.build(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN.build(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN.build(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1
        )


class _MixedE(nn.Module):
    """8x8 block with split 3x3 branches (Mixed_7b with an average pool, Mixed_7c with a max pool)."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN.build(cin, 320, 1)
        self.branch3x3_1 = ConvBN.build(cin, 384, 1)
        self.branch3x3_2a = ConvBN.build(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN.build(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN.build(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN.build(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN.build(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN.build(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN.build(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        # The ported graph uses a max pool in the very last block, where the paper has an average pool.
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_same(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(bd),
                self.branch3x3dbl_3b(bd),
                self.branch_pool(pooled),
            ],
            1,
        )


def resize_like_tensorflow1(x: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """Bilinear resize exactly as TensorFlow 1.x ``tf.image.resize_bilinear`` (align_corners=False).

    The source coordinate of output pixel ``i`` is ``i * in / out`` (no half-pixel offset); the two
    neighbours ``floor`` and ``min(floor + 1, in - 1)`` are blended linearly. This is the resize under
    which the FID Inception graph was exported, and the one torch-fidelity reproduces.

    Args:
        x: ``(N, C, H, W)`` floating-point images.
        size: the output height and width.

    Returns:
        ``(N, C, size, size)`` in the dtype of ``x``.
    """
    height, width = x.shape[-2:]
    if (height, width) == (size, size):
        return x

    def taps(n_in: int) -> tuple[Tensor, Tensor, Tensor]:
        # TensorFlow's float32 scale; positions in the images' dtype (float32 as TensorFlow and
        # torch-fidelity; a float64 input gets torch-fidelity's float64 positions)
        src = torch.arange(size, dtype=x.dtype, device=x.device) * torch.tensor(
            n_in / size, dtype=torch.float32, device=x.device
        )
        lo = src.long()
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo, hi, src - lo.to(x.dtype)

    ylo, yhi, dy = taps(height)
    xlo, xhi, dx = taps(width)
    # advanced indexing gathers the same values as `index_select`, an order of magnitude faster on the CPU
    top, bottom = x[..., ylo, :], x[..., yhi, :]
    top_l, top_r = top[..., xlo], top[..., xhi]
    bot_l, bot_r = bottom[..., xlo], bottom[..., xhi]
    upper = top_l + (top_r - top_l) * dx
    lower = bot_l + (bot_r - bot_l) * dx
    return upper + (lower - upper) * dy.view(-1, 1)


def resize_like_clean_fid(x: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """Resize as clean-fid does: each channel a float32 Pillow image, antialiased bicubic, clipped to [0, 255].

    This is ``cleanfid.resize.make_resizer("PIL", False, "bicubic", (size, size))``: Pillow's ``"F"`` mode
    keeps the values unquantised, and its bicubic filter widens with the downscaling factor (antialiasing).
    It runs on the CPU through NumPy; the result comes back on the device of ``x``.

    Args:
        x: ``(N, C, H, W)`` floating-point images with values in [0, 255].
        size: the output height and width.

    Returns:
        ``(N, C, size, size)`` float32 on the device of ``x``.

    Example:
        >>> import torch
        >>> from percep_lightning.backbones.inception import resize_like_clean_fid
        >>> resize_like_clean_fid(torch.full((1, 3, 40, 30), 7.0), size=20).unique()
        tensor([7.])
    """
    from PIL import Image

    planes = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty((*planes.shape[:2], size, size), dtype=np.float32)
    for index in np.ndindex(*planes.shape[:2]):
        plane = Image.fromarray(np.ascontiguousarray(planes[index]), mode="F")
        out[index] = np.asarray(plane.resize((size, size), resample=Image.BICUBIC))
    return torch.from_numpy(out.clip(0, 255)).to(x.device)


class FIDInceptionV3(FoldedBatchNorms, FrozenBackbone):
    """The frozen FID Inception v3, returning pool3 features and unbiased logits in one pass.

    Args:
        weights: ``"default"`` (``pt_inception-2015-12-05-6726825d.pth``, from the cache or downloaded),
            a path to a file in that format (pytorch-fid / torch-fidelity), a state dict, or ``None``
            for random weights.
        resize: how images reach 299x299 and [-1, 1] (see the module notes): ``"tensorflow"`` (default,
            torch-fidelity and the TensorFlow FID papers), ``"pytorch_fid"`` (pytorch-fid), ``"clean"``
            (clean-fid) or ``"bilinear"`` (the pytorch-fid resize with ``(x - 128) / 128`` scaling, for
            compatibility; prefer ``"pytorch_fid"``).
        memory_format: the layout of the weights and activations: ``"auto"`` (default) follows
            :func:`~percep_lightning.backbones.preferred_memory_format`'s rule for the input's device
            (channels-last on CUDA and AVX-512 CPUs), or ``"channels_last"`` / ``"contiguous"``. Values
            agree across layouts to float32 round-off.

    The batch norms are folded into their convolutions (:mod:`~percep_lightning.backbones.folded`), from the official tensors,
    whenever the weights are loaded or cast.

    Shape:
        - Input: ``(N, 3, H, W)`` pixel values in [0, 255], ``uint8`` or floating point.
        - Output: :class:`InceptionFeatures` of ``(N, 2048)`` and ``(N, 1008)`` float32 tensors.

    Raises:
        ValueError: for an unknown ``resize`` or a badly shaped input.
        RuntimeError: if the weights do not have the keys and shapes of the official file.
    """

    def __init__(
        self,
        weights: WeightsArg = "default",
        resize: ResizeMode = "tensorflow",
        memory_format: LayoutArg = "auto",
    ) -> None:
        super().__init__()
        check_resize(resize)
        check_layout(memory_format)
        self.resize = resize
        self.memory_format = memory_format
        self.Conv2d_1a_3x3 = ConvBN.build(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN.build(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN.build(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN.build(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN.build(80, 192, 3)
        self.Mixed_5b = _MixedA(192, pool_features=32)
        self.Mixed_5c = _MixedA(256, pool_features=64)
        self.Mixed_5d = _MixedA(288, pool_features=64)
        self.Mixed_6a = _ReductionA(288)
        self.Mixed_6b = _MixedC(768, c7=128)
        self.Mixed_6c = _MixedC(768, c7=160)
        self.Mixed_6d = _MixedC(768, c7=160)
        self.Mixed_6e = _MixedC(768, c7=192)
        self.Mixed_7a = _ReductionB(768)
        self.Mixed_7b = _MixedE(1280, max_pool=False)
        self.Mixed_7c = _MixedE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

        state, source = resolve_state_dict("inception_fid", weights)
        if state is None:
            self._variance_preserving_init()
        else:
            check_state_dict(self, state, source, "inception_fid")
            self.load_state_dict(state, strict=True)
        self.refold()
        self.watch_loads()
        self.freeze()

    def _variance_preserving_init(self) -> None:
        # PyTorch's default convolution init shrinks activations at every layer; through 94 layers the
        # pool3 features of a random network collapse to ~1e-9 and FID/IS of random weights stop moving.
        # He-normal (fan_in, ReLU) keeps their scale, so offline smoke runs still give varying numbers.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def preprocess(self, images: Tensor) -> Tensor:
        """Resize ``[0, 255]`` images to 299x299 and scale them to [-1, 1] as the ``resize`` mode's reference."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected images of shape (N, 3, H, W), but got {tuple(images.shape)}.")
        # float32 as the references (float64 for a network cast to float64, e.g. as a reference itself)
        x = images.to(torch.float64 if self.fc.weight.dtype == torch.float64 else torch.float32)
        if self.resize == "tensorflow":
            return (resize_like_tensorflow1(x) - 128) / 128
        if self.resize == "clean":
            return (resize_like_clean_fid(x) - 128) / 128
        if self.resize == "pytorch_fid":
            # pytorch-fid reads images as float in [0, 1] and interpolates even at 299x299 (an identity).
            x = F.interpolate(
                x / 255, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
            )
            return 2 * x - 1
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return (x - 128) / 128

    def forward(self, images: Tensor) -> InceptionFeatures:
        """Return the pool3 features and unbiased logits of ``images`` (values in [0, 255])."""
        x = self.preprocess(images)
        x = self.in_layout(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
            self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ):  # fmt: skip
            x = block(x)
        pool3 = x.mean(dim=(2, 3))
        logits = pool3 @ self.fc.weight.T
        return InceptionFeatures(pool3.float(), logits.float())

    # ------------------------------------------------ the FeatureExtractor contract (backbones.extractor)
    num_features = 2048
    """The pool3 feature size: FID, KID and FID-infinity compare these features."""
    input_format = "uint8"
    """Pixel values in [0, 255] (float images are quantised by the metric first)."""

    @property
    def identity(self) -> str:
        """``"fid_inception_v3:<resize>:<sha256 of the weights>"`` (cache keys)."""
        return f"fid_inception_v3:{self.resize}:{module_digest(self)}"

    def extract_features(self, images: Tensor) -> Tensor:
        """The ``(N, 2048)`` pool3 features of ``images`` (values in [0, 255])."""
        return self(images).pool3
