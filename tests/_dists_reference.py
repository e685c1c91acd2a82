"""The official DISTS (``DISTS_pytorch`` 0.1, package ``dists-pytorch``) built offline from a torchvision file.

``DISTS_pytorch.DISTS()`` calls ``torchvision.models.vgg16(pretrained=True)`` (a download) and reads its
alpha/beta from ``sys.prefix/weights.pt`` (where the wheel's data files land, not always writable or
present). Here its VGG16 comes from a local torchvision ``state_dict`` file and its alpha/beta from the
package's own copy, ``DISTS_pytorch/weights.pt``; nothing else of its code is changed.
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path
from unittest import mock

import pytest
import torch
import torchvision

DISTS_pt = pytest.importorskip("DISTS_pytorch.DISTS_pt")


def official_weights_file() -> Path:
    """The alpha/beta file inside the installed ``DISTS_pytorch`` package."""
    return Path(str(resources.files("DISTS_pytorch") / "weights.pt"))


def official_dists(vgg16_path: str | Path) -> torch.nn.Module:
    """``DISTS_pytorch.DISTS()`` with the VGG16 of ``vgg16_path`` and the package's alpha/beta, in eval mode."""
    vgg = torchvision.models.vgg16(weights=None)
    vgg.load_state_dict(torch.load(vgg16_path, map_location="cpu", weights_only=True))
    with mock.patch.object(DISTS_pt.models, "vgg16", lambda *args, **kwargs: vgg), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DISTS_pt.DISTS(load_weights=False)
    state = torch.load(official_weights_file(), map_location="cpu", weights_only=True)
    model.alpha.data, model.beta.data = state["alpha"], state["beta"]
    return model.eval()
