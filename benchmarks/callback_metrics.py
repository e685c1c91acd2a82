"""Callback benchmarks: a FID + IS + KID validation epoch, and streaming LPIPS in the callback.

FID + IS + KID epoch. As the FID + IS epoch of :mod:`benchmarks.metrics` (a LightningModule replays N
generated and N real uint8 images; ``Trainer.validate`` runs once per epoch), with KID added:

* ours: :class:`~percep_lightning.callbacks.ImageMetricsCallback` with ``("fid", "is", "kid")``. Epoch 1
  runs the Inception once on the generated and once on the real images (one forward feeds FID, IS and
  KID); epoch 2 reuses the cached real statistics and real features: one pass on the generated images.
* torchmetrics: ``FrechetInceptionDistance``, ``InceptionScore`` and ``KernelInceptionDistance`` updated in
  a callback as their documentation shows (``fid.update(real, real=True)``, ``fid.update(fake, real=False)``,
  ``inception.update(fake)``, ``kid.update(real, real=True)``, ``kid.update(fake, real=False)``): five
  Inception passes, three networks, all loaded from the same weights file with ``antialias=False``.

KID uses subsets of all N images on both sides (torchmetrics refuses a ``subset_size`` above N). The FID
values are compared before timing; KID and IS are not (torchmetrics draws its subsets and splits with
``torch.randperm``, ours with torch-fidelity's ``RandomState(2020)``).

Streaming LPIPS. ``Trainer.validate`` on N (preds, target) float pairs: ours is
``ImageMetricsCallback(metrics=("lpips",))`` (step-output checks, the streaming ``metrics.LPIPS`` with its
float64 per-image sum); the floor is a bare callback running ``LPIPSLoss(reduction="none")`` on each batch
under ``inference_mode`` and summing, the same network work and nothing else. Both load one AlexNet file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from benchmarks.assets import Assets, image_pair
from benchmarks.config import Config
from benchmarks.harness import FLOOR, OURS, PEER, Bench, Contender, Env, Phase, Target
from benchmarks.metrics import EpochRig, _Pairs, _quiet_lightning, _trainer

OURS_EPOCH = "percep_lightning ImageMetricsCallback"
PEER_EPOCH = "torchmetrics FID + InceptionScore + KID"
OURS_LPIPS = "percep_lightning ImageMetricsCallback(lpips)"
FLOOR_LPIPS = "floor: LPIPSLoss forward in a bare callback"


def _torchmetrics_callback(weights: str, splits: int, subsets: int, subset_size: int) -> Any:
    from lightning.pytorch.callbacks import Callback
    from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    def network(output: str) -> Any:
        return NoTrainInceptionV3(
            "inception-v3-compat", [output], feature_extractor_weights_path=weights, antialias=False
        )

    class TorchmetricsFIDISKID(Callback):
        """torchmetrics' FID, IS and KID fed from validation_step outputs, reset at each epoch start."""

        def __init__(self) -> None:
            self.fid = FrechetInceptionDistance(feature_extractor_weights_path=weights, antialias=False)
            self.inception = InceptionScore(feature=network("logits_unbiased"), splits=splits)
            self.kid = KernelInceptionDistance(
                feature=network("2048"), subsets=subsets, subset_size=subset_size
            )

        def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            for metric in (self.fid, self.inception, self.kid):
                metric.to(pl_module.device)
                metric.reset()

        def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, *args: Any) -> None:
            self.fid.update(outputs["target"], real=True)
            self.fid.update(outputs["preds"], real=False)
            self.inception.update(outputs["preds"])
            self.kid.update(outputs["target"], real=True)
            self.kid.update(outputs["preds"], real=False)

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            is_mean, is_std = self.inception.compute()
            kid_mean, kid_std = self.kid.compute()
            pl_module.log("tm/fid", self.fid.compute().float())
            pl_module.log("tm/is", is_mean.float())
            pl_module.log("tm/kid", kid_mean.float())

    return TorchmetricsFIDISKID()


def build_kid_epoch(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    """Contenders of the FID + IS + KID validation epoch (their steps return phase times)."""

    def build(env: Env) -> list[Contender]:
        from percep_lightning.callbacks import ImageMetricsCallback

        rig = EpochRig(cfg, assets)
        options = {
            "is": {"splits": cfg.is_splits},
            "kid": {"subsets": cfg.kid_subsets, "subset_size": cfg.fid_images},
        }
        last: dict[str, list[Tensor]] = {}

        def ours_run() -> dict[str, float]:
            callback = ImageMetricsCallback(
                metrics=("fid", "is", "kid"), weights={"inception": rig.weights}, options=options
            )
            phases, last["ours"] = rig.ours(env, callback)
            return phases

        def peer_run() -> dict[str, float]:
            callback = _torchmetrics_callback(rig.weights, cfg.is_splits, cfg.kid_subsets, cfg.fid_images)
            phases, last["peer"] = rig.peer(env, callback)
            return phases

        return [
            Contender(OURS_EPOCH, OURS, ours_run, lambda: last["ours"]),
            Contender(PEER_EPOCH, PEER, peer_run, lambda: last["peer"]),
        ]

    return build


def kid_epoch_bench(cfg: Config, assets: Assets) -> Bench:
    n = cfg.fid_images
    workload = (
        f"{n} real + {n} generated {cfg.fid_size}x{cfg.fid_size} uint8 images, batch {cfg.fid_batch}; "
        f"KID: {cfg.kid_subsets} subsets of {n}"
    )
    return Bench(
        "fid_is_kid_epoch", "FID + IS + KID validation epoch", workload, build_kid_epoch(cfg, assets),
        reps=cfg.reps_epoch, warmup=0, rtol=(1e-3,), variants=False,
        phases=[
            Phase(
                "FID + IS + KID epoch 1", f"{workload}; ours: 2 Inception passes, torchmetrics: 5",
                {OURS_EPOCH: "1 epoch", PEER_EPOCH: "epoch"},
                (Target("FID + IS + KID epoch 1 <= 0.6x torchmetrics", PEER_EPOCH, 0.6),),
            ),
            Phase(
                "FID + IS + KID epoch 2 (cached real statistics and features)",
                f"{workload}; ours: 1 Inception pass, torchmetrics: 5 (it has no cache)",
                {OURS_EPOCH: "2 epoch", PEER_EPOCH: "epoch"},
                (Target("FID + IS + KID epoch 2 <= 0.3x torchmetrics", PEER_EPOCH, 0.3),),
            ),
            Phase(
                "FID + IS + KID epoch 1: compute phase", "on_validation_epoch_end (FID, IS and KID compute)",
                {OURS_EPOCH: "1 compute", PEER_EPOCH: "compute"},
            ),
        ],
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- streaming LPIPS


def _pairs_module_class() -> type:
    from lightning.pytorch import LightningModule

    class ReplayPairs(LightningModule):
        def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
            preds, target = batch
            return {"preds": preds, "target": target}

    return ReplayPairs


def _bare_lpips_callback(loss: Any) -> Any:
    from lightning.pytorch.callbacks import Callback

    class BareLPIPS(Callback):
        """The LPIPS forward of each batch and a running sum: the network work a streaming LPIPS must do."""

        def __init__(self) -> None:
            self.total = torch.zeros((), dtype=torch.float64)
            self.count = 0

        def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.total, self.count = torch.zeros((), dtype=torch.float64, device=pl_module.device), 0

        def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, *args: Any) -> None:
            with torch.inference_mode():
                distance = loss(outputs["preds"], outputs["target"]).flatten()
            self.total += distance.double().sum()
            self.count += distance.numel()

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            pl_module.log("bare/lpips", (self.total / self.count).float())

    return BareLPIPS()


def build_lpips_callback(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        from percep_lightning.callbacks import ImageMetricsCallback
        from percep_lightning.losses import LPIPSLoss

        _quiet_lightning()
        weights = str(assets.torchvision("alexnet"))
        preds, target = image_pair(cfg.fid_images, cfg.loss_size)
        loader = DataLoader(_Pairs(preds, target), batch_size=cfg.loss_batch, shuffle=False)
        module = _pairs_module_class()()
        root = str(assets.root / "lightning")
        last: dict[str, list[Tensor]] = {}
        callback = ImageMetricsCallback(metrics=("lpips",), weights={"alexnet": weights})
        ours_trainer = _trainer(env, [callback], root)
        callback.setup(ours_trainer, module, "validate")  # builds the network outside the timer
        bare = _bare_lpips_callback(LPIPSLoss("alex", weights=weights, reduction="none").to(env.device))
        bare_trainer = _trainer(env, [bare], root)

        def ours_run() -> None:
            logged = ours_trainer.validate(module, dataloaders=loader, verbose=False)[0]
            last["ours"] = [torch.as_tensor(logged["val/lpips"])]

        def bare_run() -> None:
            logged = bare_trainer.validate(module, dataloaders=loader, verbose=False)[0]
            last["bare"] = [torch.as_tensor(logged["bare/lpips"])]

        return [
            Contender(OURS_LPIPS, OURS, ours_run, lambda: last["ours"]),
            Contender(FLOOR_LPIPS, FLOOR, bare_run, lambda: last["bare"]),
        ]

    return build


def lpips_callback_bench(cfg: Config, assets: Assets) -> Bench:
    n, b, s = cfg.fid_images, cfg.loss_batch, cfg.loss_size
    return Bench(
        "lpips_callback", "Streaming LPIPS (alex) in the callback",
        f"Trainer.validate over {n} float pairs 3x{s}x{s}, batch {b}", build_lpips_callback(cfg, assets),
        reps=cfg.reps_heavy, warmup=cfg.warmup_heavy, rtol=(1e-6,), variants=False,
        targets=(Target("Streaming LPIPS in the callback <= 1.05x the bare LPIPS forward", FLOOR_LPIPS, 1.05),),
    )  # fmt: skip


def callback_benches(cfg: Config, assets: Assets) -> list[Bench]:
    return [kid_epoch_bench(cfg, assets), lpips_callback_bench(cfg, assets)]
