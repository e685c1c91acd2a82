"""Shared fixtures: official-format weight files with random weights, and real photographs.

Pretrained weights are never downloaded in tests. Instead each fixture builds the reference
package's own network with random weights, saves its ``state_dict`` in the official file format,
and the tests load that one file into percep_lightning and into the reference implementation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision


@pytest.fixture(autouse=True)
def _no_network_and_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs with an empty torch hub cache, so ``"default"`` weights never come from disk."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("PERCEP_LIGHTNING_DOWNLOAD_TIMEOUT", "2")
    yield


def _small_classifier(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Store classifier tensors as zero-stride views: same keys and shapes, a few bytes on disk.

    The feature losses never read the classifier; this keeps a VGG19 file at 80 MB instead of 550 MB.
    """
    return {
        k: (v if k.startswith("features.") else torch.zeros((), dtype=v.dtype).expand(v.shape))
        for k, v in state.items()
    }


@pytest.fixture(scope="session")
def torchvision_weights(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``torchvision_weights(arch)`` -> path of a torchvision ``state_dict`` file with random weights.

    ``arch`` is ``"vgg19"``, ``"vgg16"``, ``"alexnet"`` or ``"squeezenet1_1"``; the file is made once
    per session from ``torchvision.models.<arch>()`` seeded with 0.
    """
    directory = tmp_path_factory.mktemp("torchvision_weights")
    made: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch not in made:
            torch.manual_seed(0)
            model = getattr(torchvision.models, arch)(weights=None)
            path = directory / f"{arch}-random.pth"
            torch.save(_small_classifier(model.state_dict()), path)
            made[arch] = path
        return made[arch]

    return make


@contextlib.contextmanager
def _torch_fidelity_without_download() -> Iterator[None]:
    """Let torch-fidelity build its Inception with random weights instead of downloading them."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    with (
        mock.patch.object(tfi, "load_state_dict_from_url", return_value={}),
        mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", return_value=None),
    ):
        yield


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of an FID Inception file in the official format (pytorch-fid / torch-fidelity), random weights.

    The network is torch-fidelity's own ``FeatureExtractorInceptionV3`` with random convolutions; its
    BatchNorm statistics are then set from one batch of real photographs so activations stay in a
    realistic range through all 94 layers.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(0)
    with _torch_fidelity_without_download():
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    images = torch.from_numpy(np.stack([_photo(name, 299) for name in ("astronaut", "coffee", "chelsea")]))
    x = (images.permute(0, 3, 1, 2).float() - 128) / 128
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    net.train()
    with torch.no_grad():
        _calibration_forward(net, x)
    path = tmp_path_factory.mktemp("inception_weights") / "pt_inception-random.pth"
    torch.save(net.state_dict(), path)
    return path


def _calibration_forward(net: torch.nn.Module, x: torch.Tensor) -> None:
    names = [
        "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
        "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
        "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
    ]  # fmt: skip
    for name in names:
        x = getattr(net, name)(x)


def _photo(name: str, size: int) -> np.ndarray:
    """A scikit-image bundled photograph as uint8 (size, size, 3): centre square crop, then resize."""
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


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


@pytest.fixture(scope="session")
def photos() -> Callable[..., torch.Tensor]:
    """``photos(n, size, dtype=torch.float32)`` -> ``(n, 3, size, size)`` real photographs.

    Float images are in [0, 1]; ``dtype=torch.uint8`` gives [0, 255]. Images cycle through
    scikit-image's bundled photographs, so ``n`` may exceed their number (repeats are flipped).
    """

    def make(n: int, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = []
        for i in range(n):
            image = _photo(PHOTOS[i % len(PHOTOS)], size)
            if (i // len(PHOTOS)) % 2:
                image = image[:, ::-1]
            out.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        batch = torch.stack(out)
        return batch if dtype == torch.uint8 else batch.to(dtype) / 255

    return make


def pytest_configure(config: pytest.Config) -> None:
    # Keep CPU tests deterministic and light on the 2-core CI machine.
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def art_inception_weights(
    tmp_path_factory: pytest.TempPathFactory, photos: Callable[..., torch.Tensor]
) -> Path:
    """An ``art_inception.pth``-format file: a random torchvision Inception3 trunk with the file's two
    classifier heads (``fc1``/``fc2``) and two auxiliary heads (``AuxLogits1``/``AuxLogits2``).

    Its BatchNorm statistics are set from one batch of photographs so that activations stay in a realistic
    range through the network (as for the FID Inception file).
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torchvision.models.Inception3(num_classes=1000, aux_logits=True, init_weights=False)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration pass
    net.train()
    x = photos(4, 128)
    trunk = [
        name for name, _ in net.named_children() if name not in ("AuxLogits", "avgpool", "dropout", "fc")
    ]
    with torch.no_grad():
        for name in trunk:
            x = getattr(net, name)(x)
    state = {}
    for key, value in net.state_dict().items():
        head, _, rest = key.partition(".")
        if head in ("AuxLogits", "fc"):
            for k in ("1", "2"):
                state[f"{head}{k}.{rest}"] = value.clone()
        else:
            state[key] = value
    path = tmp_path_factory.mktemp("art_inception") / "art_inception.pth"
    torch.save(state, path)
    return path
