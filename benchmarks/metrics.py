"""Metric benchmarks: a FID + IS validation epoch under Lightning, the FID compute, the CFSD update.

Validation epoch. A LightningModule replays N generated and N real uint8 images from its validation
dataloader (no generator runs: only the metric work is timed) and ``Trainer.validate`` runs once per epoch:

* ours: :class:`~percep_lightning.callbacks.ImageMetricsCallback` with FID and IS. Epoch 1 runs the
  Inception once on the generated and once on the real images (one forward feeds both FID and IS);
  epoch 2, with the real statistics cached from epoch 1, only on the generated images.
* torchmetrics: ``FrechetInceptionDistance`` and ``InceptionScore`` updated in a callback as their
  documentation shows: ``fid.update(real, real=True)``, ``fid.update(fake, real=False)``,
  ``inception.update(fake)``: three Inception passes, and two networks in memory. Both are given the same
  weights file (``feature_extractor_weights_path``) and ``antialias=False`` (torch-fidelity's resize, as ours).

Each repetition builds fresh metrics (outside the timer; both sides load the weights file there) and times
``trainer.validate``. Two marker callbacks around the metric callback split the time into the update
phase (the batches) and the compute phase (``on_validation_epoch_end``).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.assets import Assets, image_pair, uint8_pair
from benchmarks.config import Config
from benchmarks.harness import OURS, PEER, Bench, Contender, Env, Phase, Target
from benchmarks.losses import CFSD_ARCH, CFSD_DEPTH, StyleIDCFSD, trunk

# ----------------------------------------------------------------------------------------- Lightning epoch


class _Pairs(Dataset):
    def __init__(self, fake: Tensor, real: Tensor) -> None:
        self.fake, self.real = fake, real

    def __len__(self) -> int:
        return self.fake.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.fake[index], self.real[index]


def _module_class() -> type:
    from lightning.pytorch import LightningModule

    class Replay(LightningModule):
        """Returns the generated and real images of each batch, as a generator's validation_step would."""

        def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
            fake, real = batch
            return {"preds": fake, "target": real}

    return Replay


def _marks() -> tuple[Any, Any, dict[str, float]]:
    """Two callbacks recording the epoch start, the end of the batches, and the end of the metric compute."""
    from lightning.pytorch.callbacks import Callback

    stamps: dict[str, float] = {}

    def stamp(name: str) -> None:
        stamps[name], stamps[f"{name} cpu"] = time.perf_counter(), time.process_time()

    class Before(Callback):
        def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            stamp("start")

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            _sync(pl_module.device)
            stamp("updated")

    class After(Callback):
        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            _sync(pl_module.device)
            stamp("computed")

    return Before(), After(), stamps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _torchmetrics_callback(weights: str, splits: int) -> Any:
    from lightning.pytorch.callbacks import Callback
    from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
    from torchmetrics.image.inception import InceptionScore

    class TorchmetricsFIDIS(Callback):
        """torchmetrics' FID and IS fed from validation_step outputs, reset at each epoch start."""

        def __init__(self) -> None:
            self.fid = FrechetInceptionDistance(feature_extractor_weights_path=weights, antialias=False)
            network = NoTrainInceptionV3(
                "inception-v3-compat",
                ["logits_unbiased"],
                feature_extractor_weights_path=weights,
                antialias=False,
            )
            self.inception = InceptionScore(feature=network, splits=splits)

        def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            for metric in (self.fid, self.inception):
                metric.to(pl_module.device)
                metric.reset()

        def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, *args: Any) -> None:
            self.fid.update(outputs["target"], real=True)
            self.fid.update(outputs["preds"], real=False)
            self.inception.update(outputs["preds"])

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            is_mean, is_std = self.inception.compute()
            pl_module.log("tm/fid", self.fid.compute().float())
            pl_module.log("tm/is", is_mean.float())
            pl_module.log("tm/is_std", is_std.float())

    return TorchmetricsFIDIS()


def _trainer(env: Env, callbacks: list[Any], root: str) -> Any:
    from lightning.pytorch import Trainer

    return Trainer(
        accelerator="gpu" if env.device.type == "cuda" else "cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
        default_root_dir=root,
    )  # fmt: skip


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
    warnings.filterwarnings("ignore", message=".*FID statistics from .* samples.*")
    warnings.filterwarnings("ignore", message=".*random weights.*")
    warnings.filterwarnings("ignore", message=".*`training_step`.*")


def _state_bytes(metrics: Sequence[Any]) -> int:
    total = 0
    for metric in metrics:
        for value in metric.metric_state.values():
            tensors = value if isinstance(value, list) else [value]
            total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))
    return total


def _param_bytes(modules: Sequence[nn.Module]) -> int:
    seen: dict[int, int] = {}
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def validate_phases(
    env: Env, trainer: Any, module: Any, loader: DataLoader, stamps: dict[str, float], prefix: str
) -> tuple[dict[str, float], dict]:
    """Run ``trainer.validate`` once; return its wall and CPU times (whole epoch, update and compute phases
    from the :func:`_marks` stamps, keys prefixed by ``prefix``) and the logged values."""
    _sync(env.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    logged = trainer.validate(module, dataloaders=loader, verbose=False)[0]
    _sync(env.device)
    phases = {
        f"{prefix}epoch": time.perf_counter() - start,
        f"{prefix}epoch cpu": time.process_time() - cpu_start,
    }
    for phase, first, last in (("update", "start", "updated"), ("compute", "updated", "computed")):
        phases[f"{prefix}{phase}"] = stamps[last] - stamps[first]
        phases[f"{prefix}{phase} cpu"] = stamps[f"{last} cpu"] - stamps[f"{first} cpu"]
    return phases, logged


class EpochRig:
    """What the validation-epoch rows share: the Inception weights file, a loader of N generated and N real
    uint8 images, the module that replays them, and the Lightning root; and the two ways of running them."""

    def __init__(self, cfg: Config, assets: Assets) -> None:
        _quiet_lightning()
        self.weights = str(assets.inception())
        fake, real = uint8_pair(cfg.fid_images, cfg.fid_size)
        self.loader = DataLoader(_Pairs(fake, real), batch_size=cfg.fid_batch, shuffle=False)
        self.module = _module_class()()
        self.root = str(assets.root / "lightning")

    def _trainer(self, env: Env, callback: Any) -> tuple[Any, dict[str, float]]:
        before, after, stamps = _marks()
        return _trainer(env, [before, callback, after], self.root), stamps

    def ours(self, env: Env, callback: Any) -> tuple[dict[str, float], list[Tensor]]:
        """Two epochs of our callback (the second reads the cached real side): the phase times, keyed
        ``"1 ..."`` and ``"2 ..."``, and the two logged FIDs."""
        trainer, stamps = self._trainer(env, callback)
        callback.setup(
            trainer, self.module, "validate"
        )  # builds the Inception outside the timer, as peers do
        phases1, logged1 = validate_phases(env, trainer, self.module, self.loader, stamps, "1 ")
        phases2, logged2 = validate_phases(env, trainer, self.module, self.loader, stamps, "2 ")
        return {**phases1, **phases2}, [
            torch.as_tensor(logged1["val/fid"]),
            torch.as_tensor(logged2["val/fid"]),
        ]

    def peer(self, env: Env, callback: Any) -> tuple[dict[str, float], list[Tensor]]:
        """One epoch of a torchmetrics callback (without a cache every epoch is this one): the phase times
        and its logged FID, twice (against our two)."""
        trainer, stamps = self._trainer(env, callback)
        phases, logged = validate_phases(env, trainer, self.module, self.loader, stamps, "")
        return phases, [torch.as_tensor(logged["tm/fid"])] * 2


def build_epoch(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    """Contenders of the validation-epoch benchmark (their steps return phase times)."""

    def build(env: Env) -> list[Contender]:
        from percep_lightning.backbones import FIDInceptionV3
        from percep_lightning.callbacks import ImageMetricsCallback
        from percep_lightning.metrics import FrechetInceptionDistance, InceptionScore

        rig = EpochRig(cfg, assets)
        weights = rig.weights
        memory: dict[str, str] = {}
        last: dict[str, list[Tensor]] = {}

        def ours_run() -> dict[str, float]:
            callback = ImageMetricsCallback(
                metrics=("fid", "is"),
                weights={"inception": weights},
                options={"is": {"splits": cfg.is_splits}},
            )
            phases, last["ours"] = rig.ours(env, callback)
            return phases

        def peer_run() -> dict[str, float]:
            callback = _torchmetrics_callback(weights, cfg.is_splits)
            phases, last["peer"] = rig.peer(env, callback)
            if "peer" not in memory:
                metrics = (callback.fid, callback.inception)
                memory["peer"] = (
                    f"state {_state_bytes(metrics) / 2**20:.1f} MiB after the epoch, "
                    f"{_param_bytes([callback.fid.inception, callback.inception.inception]) / 2**20:.0f} MiB of "
                    "Inception weights (two networks)"
                )
            return phases

        def ours_memory() -> str:
            # The callback's metrics are the public FrechetInceptionDistance and InceptionScore sharing one
            # network; their state after N images is measured on standalone instances fed the same counts.
            backbone = FIDInceptionV3(weights)
            fid = FrechetInceptionDistance(backbone=backbone)
            inception = InceptionScore(backbone=backbone, splits=cfg.is_splits)
            features = torch.rand(cfg.fid_images, 2048)
            fid.update_features(features, real=True)
            fid.update_features(features, real=False)
            inception.update_logits(torch.rand(cfg.fid_images, 1008), torch.arange(cfg.fid_images))
            return (
                f"state {_state_bytes([fid, inception]) / 2**20:.1f} MiB after the epoch (+ {2048 * 2049 * 8 / 2**20:.0f}"
                f" MiB of cached real statistics), {_param_bytes([backbone]) / 2**20:.0f} MiB of Inception weights "
                "(one network)"
            )

        # The FID values are compared (ours epoch 1, ours epoch 2 from the cache, torchmetrics). IS is not:
        # torchmetrics shuffles with torch.randperm, torch-fidelity (and ours) with RandomState(2020).
        return [
            Contender(
                "percep_lightning ImageMetricsCallback", OURS, ours_run, lambda: last["ours"], note=ours_memory
            ),
            Contender(
                "torchmetrics FID + InceptionScore", PEER, peer_run, lambda: last["peer"],
                note=lambda: memory.get("peer", ""),
            ),
        ]  # fmt: skip

    return build


def epoch_bench(cfg: Config, assets: Assets) -> Bench:
    ours, peer = "percep_lightning ImageMetricsCallback", "torchmetrics FID + InceptionScore"
    n = cfg.fid_images
    workload = f"{n} real + {n} generated {cfg.fid_size}x{cfg.fid_size} uint8 images, batch {cfg.fid_batch}"
    return Bench(
        "fid_is_epoch", "FID + IS validation epoch", workload, build_epoch(cfg, assets), reps=cfg.reps_epoch,
        warmup=0, rtol=(1e-3,), variants=False,
        phases=[
            Phase(
                "FID + IS epoch 1", f"{workload}; ours: 2 Inception passes, torchmetrics: 3",
                {ours: "1 epoch", peer: "epoch"},
                (Target("FID + IS epoch 1 <= 0.65x torchmetrics", peer, 0.65),),
            ),
            Phase(
                "FID + IS epoch 2 (cached real statistics)",
                f"{workload}; ours: 1 Inception pass, torchmetrics: 3 (it has no cache)",
                {ours: "2 epoch", peer: "epoch"},
                (Target("FID + IS epoch 2 <= 0.35x torchmetrics", peer, 0.35),),
            ),
            Phase("FID + IS epoch 1: update phase", "epoch start and the batches", {ours: "1 update", peer: "update"}),
            Phase("FID + IS epoch 2: update phase", "epoch start and the batches", {ours: "2 update", peer: "update"}),
            Phase(
                "FID + IS epoch 1: compute phase", "on_validation_epoch_end (FID + IS compute, 2048-d)",
                {ours: "1 compute", peer: "compute"},
            ),
        ],
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- Inception forward


def build_inception_forward(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    """One forward of the FID Inception (both heads) on a uint8 batch: ours and torch-fidelity's network."""

    def build(env: Env) -> list[Contender]:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        from percep_lightning.backbones import FIDInceptionV3

        weights = str(assets.inception())
        images, _ = uint8_pair(cfg.fid_batch, cfg.fid_size)
        images = images.to(env.device)
        ours = FIDInceptionV3(weights).to(env.device)
        fidelity = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=weights
        ).to(env.device)
        last: dict[str, list[Tensor]] = {}

        def ours_step() -> None:
            with torch.inference_mode():
                out = ours(images)
            last["ours"] = [out.pool3, out.logits_unbiased]

        def fidelity_step() -> None:
            with torch.inference_mode():
                last["fidelity"] = list(fidelity(images))

        return [
            Contender("percep_lightning FIDInceptionV3", OURS, ours_step, lambda: last["ours"]),
            Contender(
                "torch-fidelity FeatureExtractorInceptionV3", PEER, fidelity_step, lambda: last["fidelity"]
            ),
        ]

    return build


def inception_forward_bench(cfg: Config, assets: Assets) -> Bench:
    return Bench(
        "inception_forward", "FID Inception forward (pool3 + logits)",
        f"{cfg.fid_batch} uint8 {cfg.fid_size}x{cfg.fid_size} images, TF1 resize to 299; ours: batch norms folded "
        "and the device's layout rule", build_inception_forward(cfg, assets), reps=cfg.reps_heavy,
        warmup=cfg.warmup_heavy, rtol=(1e-4,), variants=False,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- FID compute


def _synthetic_statistics(dim: int, samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """Mean and covariance of ``samples`` ReLU'd random projections (non-negative like pool3 features)."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / math.sqrt(dim)
    x = (torch.randn(samples, dim, generator=generator, dtype=torch.float64) @ mixing + 0.1 * seed).relu()
    mu = x.mean(dim=0)
    centred = x - mu
    return mu, centred.T @ centred / (samples - 1)


def build_fid_compute(cfg: Config) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        from torch_fidelity.metric_fid import fid_statistics_to_metric
        from torchmetrics.image.fid import _compute_fid

        from percep_lightning.functional import frechet_distance

        def contenders(dim: int, samples: int) -> list[Contender]:
            mu1, sigma1 = _synthetic_statistics(dim, samples, 1)
            mu2, sigma2 = _synthetic_statistics(dim, samples, 2)
            mu1, sigma1, mu2, sigma2 = (t.to(env.device) for t in (mu1, sigma1, mu2, sigma2))
            numpy_stats = [
                {"mu": m.cpu().numpy(), "sigma": s.cpu().numpy()} for m, s in ((mu1, sigma1), (mu2, sigma2))
            ]

            last: dict[str, Tensor] = {}

            def ours() -> None:
                last["ours"] = frechet_distance(mu1, sigma1, mu2, sigma2)

            def torchmetrics() -> None:
                last["torchmetrics"] = _compute_fid(mu1, sigma1, mu2, sigma2)

            def fidelity() -> None:
                value = fid_statistics_to_metric(*numpy_stats, verbose=False)["frechet_inception_distance"]
                last["fidelity"] = torch.tensor(value)

            return [
                Contender("percep_lightning frechet_distance", OURS, ours, lambda: [last["ours"]]),
                Contender("torchmetrics _compute_fid", PEER, torchmetrics, lambda: [last["torchmetrics"]]),
                Contender(
                    "torch-fidelity fid_statistics_to_metric", PEER, fidelity, lambda: [last["fidelity"]]
                ),
            ]

        for c in contenders(64, 256):  # warm-up at a small size (each full-size run takes seconds)
            c.step()
        return contenders(cfg.fid_dim, cfg.fid_samples)

    return build


def fid_compute_bench(cfg: Config) -> Bench:
    return Bench(
        "fid_compute", f"FID compute, {cfg.fid_dim}-d", f"float64 statistics of {cfg.fid_samples} samples each "
        "(full-rank covariances); warm-up at 64-d", build_fid_compute(cfg), reps=cfg.reps_fid, warmup=0, rtol=(1e-6,),
        variants=False,
        targets=(Target(f"FID compute ({cfg.fid_dim}-d) <= 1.0x torchmetrics", "torchmetrics _compute_fid", 1.0),),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- KID compute


def _synthetic_features(dim: int, samples: int, seed: int) -> Tensor:
    """``samples`` ReLU'd random projections (non-negative like pool3 features), float32."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator) / math.sqrt(dim)
    return (torch.randn(samples, dim, generator=generator) @ mixing + 0.1 * seed).relu()


def build_kid_compute(cfg: Config) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

        from percep_lightning.functional import kernel_inception_distance

        real = _synthetic_features(2048, cfg.kid_samples, 1).to(env.device)
        fake = _synthetic_features(2048, cfg.kid_samples, 2).to(env.device)
        options = {"subsets": cfg.kid_subsets, "subset_size": cfg.kid_subset_size}
        last: dict[str, Tensor] = {}

        def ours() -> None:
            last["ours"] = kernel_inception_distance(real, fake, **options)[0]

        def fidelity() -> None:
            value = kid_features_to_metric(
                fake, real, kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size, kid_kernel="poly",
                kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=2020,
                verbose=False,
            )[KEY_METRIC_KID_MEAN]  # fmt: skip
            last["fidelity"] = torch.tensor(value, dtype=torch.float64)

        return [
            Contender("percep_lightning kernel_inception_distance", OURS, ours, lambda: [last["ours"]]),
            Contender("torch-fidelity kid_features_to_metric", PEER, fidelity, lambda: [last["fidelity"]]),
        ]

    return build


def kid_compute_bench(cfg: Config) -> Bench:
    n, subsets, size = cfg.kid_samples, cfg.kid_subsets, cfg.kid_subset_size
    return Bench(
        "kid_compute", "KID compute, 2048-d", f"{n} real + {n} generated float32 features, {subsets} subsets of "
        f"{size} (float64 here, float32 numpy in torch-fidelity)", build_kid_compute(cfg), reps=cfg.reps_fid,
        warmup=0, rtol=(1e-3,), variants=False,
        targets=(Target("KID compute <= 1.0x torch-fidelity", "torch-fidelity kid_features_to_metric", 1.0),),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- CFSD update


def build_cfsd_update(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        from percep_lightning.metrics import CFSD

        preds, target = image_pair(1, cfg.cfsd_size)
        preds, target = env.tensor(preds), env.tensor(target)
        ours = CFSD(weights=str(assets.torchvision(CFSD_ARCH))).to(env.device)
        reference = StyleIDCFSD(trunk(assets, CFSD_ARCH, CFSD_DEPTH, env), env)

        last: list[Tensor] = []

        def ours_step() -> None:
            ours.reset()  # a state reset costs a few microseconds; the timing is the update
            ours.update(preds, target)

        def reference_step() -> None:
            with torch.no_grad():
                last[:] = [reference(preds, target)]

        return [
            Contender("percep_lightning CFSD.update", OURS, ours_step, lambda: [ours.compute()]),
            Contender("StyleID full-matrix CFSD (no grad)", PEER, reference_step, lambda: list(last)),
        ]

    return build


def metric_benches(cfg: Config, assets: Assets) -> list[Bench]:
    side = cfg.cfsd_size
    return [
        epoch_bench(cfg, assets),
        inception_forward_bench(cfg, assets),
        fid_compute_bench(cfg),
        kid_compute_bench(cfg),
        Bench(
            "cfsd_update", "CFSD metric update", f"1 pair, 1x3x{side}x{side}", build_cfsd_update(cfg, assets),
            reps=cfg.reps_heavy, warmup=cfg.warmup_heavy, rtol=(1e-4,), variants=False,
        ),
    ]  # fmt: skip
