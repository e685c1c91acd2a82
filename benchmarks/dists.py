"""DISTS loss benchmark: forward + backward of ``DISTSLoss`` against the official code, piq and torchmetrics.

Every contender loads the same random VGG16 file (torchvision's format) and the same alpha/beta (the
official ``DISTS_pytorch/weights.pt``, which torchmetrics ships unchanged). None of the peers can be built
offline as published: the official code and torchmetrics call torchvision's ``vgg16`` with pretrained
weights, piq also downloads its alpha/beta file; those calls are replaced by the local files, nothing else.
The floor is the bare torchvision VGG16 ``features[:30]`` (max pooling, no statistics).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from importlib import resources
from unittest import mock

import torch
import torchvision
from torch import Tensor, nn

from benchmarks.assets import Assets
from benchmarks.config import Config
from benchmarks.harness import OURS, PEER, Bench, Contender, Env, Target
from benchmarks.losses import _imagenet, _pair, floor_contenders, frozen, loss_contender, trunk

DISTS_TARGET = 0.8  # ours / the fastest of official, piq and torchmetrics, wall-time medians
DISTS_DEPTH = 30  # VGG16 features[:30]: relu5_3


def _vgg16(assets: Assets) -> nn.Module:
    model = torchvision.models.vgg16(weights=None)
    model.load_state_dict(assets.state_dict("vgg16"))
    return model


def official_alpha_beta() -> dict[str, Tensor]:
    """The official alpha/beta file of the installed ``DISTS_pytorch`` package."""
    path = resources.files("DISTS_pytorch") / "weights.pt"
    with resources.as_file(path) as file:
        return torch.load(file, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def official_dists(assets: Assets) -> nn.Module:
    """``DISTS_pytorch.DISTS()`` on the benchmark's VGG16 file, with the package's alpha/beta."""
    from DISTS_pytorch import DISTS_pt

    vgg = _vgg16(assets)
    with mock.patch.object(DISTS_pt.models, "vgg16", lambda *a, **k: vgg), _quiet():
        model = DISTS_pt.DISTS(load_weights=False)
    state = official_alpha_beta()
    model.alpha.data, model.beta.data = state["alpha"], state["beta"]
    return model


def torchmetrics_dists(assets: Assets) -> nn.Module:
    """torchmetrics' ``DISTSNetwork`` (what ``deep_image_structure_and_texture_similarity`` builds per call)."""
    from torchmetrics.functional.image import dists as tm

    vgg = _vgg16(assets)
    with mock.patch.object(tm, "vgg16", lambda *a, **k: vgg), _quiet():
        return tm.DISTSNetwork()


def piq_dists(assets: Assets) -> nn.Module:
    """``piq.DISTS()`` on the benchmark's VGG16 file, with the official alpha/beta instead of its download."""
    import piq
    from piq import perceptual

    vgg = _vgg16(assets)
    with (
        mock.patch.object(perceptual, "vgg16", lambda *a, **k: vgg),
        mock.patch.object(torch.hub, "load_state_dict_from_url", lambda *a, **k: official_alpha_beta()),
        _quiet(),
    ):
        return piq.DISTS()


def build_dists(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        from percep_lightning.losses import DISTSLoss

        preds, target = _pair(env, cfg.loss_batch, cfg.loss_size)
        ours = env.module(DISTSLoss(weights=str(assets.torchvision("vgg16"))))
        official = frozen(official_dists(assets), env)
        tm = frozen(torchmetrics_dists(assets), env)
        piq_loss = frozen(piq_dists(assets), env)
        return [
            loss_contender(env, "percep_lightning DISTSLoss", OURS, ours, preds, target),
            loss_contender(
                env,
                "DISTS_pytorch 0.1 (official)",
                PEER,
                lambda x, y: official(x, y, require_grad=True, batch_average=True),
                preds,
                target,
            ),
            loss_contender(
                env,
                "torchmetrics DISTS network",
                PEER,
                lambda x, y: tm(x, y, require_grad=True).mean(),
                preds,
                target,
            ),
            loss_contender(env, "piq DISTS", PEER, piq_loss, preds, target),
            *floor_contenders(
                env,
                f"VGG16 features[:{DISTS_DEPTH}]",
                trunk(assets, "vgg16", DISTS_DEPTH, env),
                _imagenet(env),
                preds,
                target,
            ),
        ]

    return build


def dists_benches(cfg: Config, assets: Assets) -> list[Bench]:
    batch = f"{cfg.loss_batch}x3x{cfg.loss_size}x{cfg.loss_size}"
    return [
        Bench(
            "dists", "DISTS", f"fwd+bwd, {batch}", build_dists(cfg, assets), reps=cfg.reps_backbone,
            warmup=cfg.warmup_heavy, rtol=(1e-4, 2e-2),
            targets=(Target(f"DISTS <= {DISTS_TARGET}x fastest peer", "fastest peer", DISTS_TARGET),),
        ),
    ]  # fmt: skip
