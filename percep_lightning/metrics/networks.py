"""The networks the registry's metrics share: their names, the feature spaces a distribution metric can
select, and :class:`BuildContext`, which builds each network once (random weights from a seed of its own name).
Imports no torch until a network is built."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from percep_lightning.backbones.weights import WeightsArg

__all__ = ["FEATURE_SPACES", "LPIPS_TRUNKS", "NETWORKS", "STYLEID_SIZE", "BuildContext", "seeded"]

STYLEID_SIZE = 512
NETWORKS: tuple[str, ...] = (
    "inception", "art_inception", "alexnet", "vgg16", "vgg19", "squeezenet1_1", "dinov2_vitl14", "clip_vit_l14_336",
)  # fmt: skip
"""The networks whose weights the builders read from :attr:`BuildContext.weights` (the FID Inception, StyleID's
art Inception, the torchvision trunks of LPIPS, DISTS and CFSD, DINOv2 ViT-L/14 and CLIP ViT-L/14 at 336 px)."""
FEATURE_SPACES: Mapping[str, str] = {
    "dinov2": "dinov2_vitl14",
    "inception": "inception",
    "clip": "clip_vit_l14_336",
}
"""The feature spaces a distribution metric's ``features`` option selects, and the network of each."""


@dataclass
class BuildContext:
    """What builders share: weights by network name, the shared options, and the networks built so far.

    Attributes:
        weights: network name -> weights (``"default"``, a path, a state dict, ``None``), or an already built
            extractor module for that network (e.g. a shared ``FIDInceptionV3``); missing names are
            ``"default"``.
        resize: the FID Inception's resize mode.
        quantize: how float images become ``uint8`` for ``uint8`` extractors.
    """

    weights: Mapping[str, Any] = field(default_factory=dict)
    resize: str = "tensorflow"
    quantize: str = "round"
    networks: dict[str, Any] = field(default_factory=dict)

    def weights_of(self, name: str) -> WeightsArg:
        """The weights given for network ``name`` (``"default"`` when none were)."""
        return self.weights.get(name, "default")

    def network(self, key: str, build: Callable[[], Any]) -> Any:
        """The network stored under ``key``, built once with ``build()`` (or given in :attr:`weights`).

        Random weights come from a seed of the key's own, so they do not depend on which metrics are built
        or in which order, and every process holds the same network.
        """
        from percep_lightning.backbones.extractor import FeatureExtractor

        if key not in self.networks:
            given = self.weights.get(key.split(":")[0])
            if isinstance(given, FeatureExtractor):
                self.networks[key] = given
            else:
                with seeded(key):
                    self.networks[key] = build()
        return self.networks[key]

    def inception(self) -> Any:
        """The shared FID Inception."""
        from percep_lightning.backbones.inception import FIDInceptionV3

        return self.network(
            "inception", lambda: FIDInceptionV3(self.weights_of("inception"), resize=self.resize)
        )

    def dinov2(self) -> Any:
        """The shared DINOv2 ViT-L/14 (dgm-eval's preprocessing)."""
        from percep_lightning.backbones.dinov2 import DINOv2

        return self.network("dinov2_vitl14", lambda: DINOv2("vitl14", self.weights_of("dinov2_vitl14")))

    def clip(self) -> Any:
        """The shared CLIP ViT-L/14 image encoder at 336 px (CMMD's preprocessing)."""
        from percep_lightning.backbones.clip import CLIPImageEncoder

        return self.network("clip_vit_l14_336", lambda: CLIPImageEncoder(self.weights_of("clip_vit_l14_336")))

    def features(self, space: str) -> Any:
        """The shared network of a feature space of :data:`FEATURE_SPACES`."""
        return {"dinov2": self.dinov2, "inception": self.inception, "clip": self.clip}[space]()

    def art_inception(self, size: int | None) -> Any:
        """The shared art Inception resizing the shorter side to ``size``."""
        from percep_lightning.backbones.art_inception import ArtInception

        return self.network(
            f"art_inception:{size}", lambda: ArtInception(self.weights_of("art_inception"), resize=size)
        )


LPIPS_TRUNKS: Mapping[str, str] = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
"""The torchvision trunk (a network of :data:`NETWORKS`) of each LPIPS ``net``."""


@contextlib.contextmanager
def seeded(name: str) -> Iterator[None]:
    """Seed torch's CPU generator from ``name`` inside the block, restoring its state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(name.encode()))
        yield
