"""Inputs of the benchmarks: official-format weight files with random weights, and real photographs.

Pretrained weights cannot be downloaded here, and the timing does not depend on their values. Each file is
the reference package's own network with random weights (seed 0), saved as its ``state_dict`` in the
official format, and the same file is loaded into percep_lightning and into every peer, so the values
compared before timing must agree exactly as they would with the published weights.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torchvision

_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CFSD_FEATURE_SCALE = 40.0


class Assets:
    """Weight files made on first use in a temporary folder (deleted by :meth:`close`)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="percep_bench_")
        self.root = Path(self._dir.name)
        self._made: dict[str, Path] = {}

    def close(self) -> None:
        self._dir.cleanup()

    def torchvision(self, arch: str) -> Path:
        """A ``torchvision.models.<arch>()`` state dict with random weights (classifier tensors stored as
        zero-stride views: the feature losses never read them, and the file stays small).

        ``"vgg19-cfsd"`` is VGG19 with conv1_1 multiplied by :data:`CFSD_FEATURE_SCALE`. Every later layer
        is positively homogeneous (ReLU, max pool, zero biases at initialisation), so all features scale by
        that factor: the CFSD similarity logits then spread over about one unit per row as with pretrained
        weights. With plain random weights they are ~1e-5 apart, the CFSD is ~1e-9 and float32 round-off
        dominates any implementation's value.
        """
        if arch not in self._made:
            base = arch.split("-")[0]
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = getattr(torchvision.models, base)(weights=None)
            state = {
                k: v if k.startswith("features.") else torch.zeros((), dtype=v.dtype).expand(v.shape)
                for k, v in model.state_dict().items()
            }
            if arch == "vgg19-cfsd":
                state["features.0.weight"] = state["features.0.weight"] * CFSD_FEATURE_SCALE
            path = self.root / f"{arch}-random.pth"
            torch.save(state, path)
            self._made[arch] = path
        return self._made[arch]

    def state_dict(self, arch: str) -> dict[str, torch.Tensor]:
        return torch.load(self.torchvision(arch), map_location="cpu", weights_only=True)

    def inception(self) -> Path:
        """The FID Inception in the pytorch-fid / torch-fidelity file format, random convolutions.

        The network is torch-fidelity's own ``FeatureExtractorInceptionV3``; its BatchNorm statistics are
        set from one pass over real photographs so activations stay in a realistic range through its 94
        layers (otherwise features and FID values degenerate).
        """
        if "inception" not in self._made:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

            with torch.random.fork_rng():
                torch.manual_seed(0)
                with _torch_fidelity_without_download():
                    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
            x = (photos(3, 299).float() - 128) / 128
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.reset_running_stats()
                    m.momentum = None  # cumulative average over the calibration pass
            net.train()
            with torch.no_grad():
                for name in _INCEPTION_BLOCKS:
                    x = getattr(net, name)(x)
            path = self.root / "pt_inception-random.pth"
            torch.save(net.state_dict(), path)
            self._made["inception"] = path
        return self._made["inception"]


_INCEPTION_BLOCKS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)  # fmt: skip


@contextlib.contextmanager
def _torch_fidelity_without_download() -> Iterator[None]:
    """Let torch-fidelity build its Inception with random weights instead of downloading them."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    with (
        mock.patch.object(tfi, "load_state_dict_from_url", return_value={}),
        mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", return_value=None),
    ):
        yield


@functools.cache
def _photo(name: str, size: int) -> np.ndarray:
    """A scikit-image bundled photograph as uint8 ``(size, size, 3)``: centre square crop, then resize."""
    from skimage import data
    from skimage.transform import resize

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    image = image[top : top + s, left : left + s]
    out = resize(image, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def photos(n: int, size: int) -> torch.Tensor:
    """``(n, 3, size, size)`` uint8 photographs; beyond the four bundled ones, flipped and rolled copies."""
    out = []
    for i in range(n):
        image = _photo(_PHOTOS[i % len(_PHOTOS)], size)
        k = i // len(_PHOTOS)
        if k % 2:
            image = image[:, ::-1]
        if k >= 2:
            image = np.roll(image, shift=7 * (k // 2), axis=(0, 1))
        out.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    return torch.stack(out)


def image_pair(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float ``(preds, target)`` in [0, 1]: photographs and a blurred, noisy version of them (seeded)."""
    target = photos(n, size).float() / 255
    generator = torch.Generator().manual_seed(0)
    blurred = torchvision.transforms.functional.gaussian_blur(target, kernel_size=5, sigma=1.0)
    preds = (blurred + 0.05 * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    return preds, target


def uint8_pair(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fake, real)`` uint8 images for the FID / IS benchmarks (fake: blurred, noisy real)."""
    preds, target = image_pair(n, size)
    return (preds * 255).round().to(torch.uint8), (target * 255).round().to(torch.uint8)
