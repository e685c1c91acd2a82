"""The callback's cache and resume policy for real statistics: when FID's and KID's real side comes from the
store instead of an Inception pass, how the key is formed, how a changed evaluation set is noticed, and what an
epoch that computed fresh statistics hands to the store (:class:`~percep_lightning.callbacks.real_stats.RealStatsStore`).

Only the registry's ``fid`` and ``kid`` on the FID Inception use it; a user's own metrics always run their pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from percep_lightning.callbacks.real_stats import (
    RealStats,
    RealStatsStore,
    qualname,
    real_stats_key,
    weights_digest,
)
from percep_lightning.callbacks.sample_plan import SamplePlan
from percep_lightning.functional.fid import feature_statistics, feature_sums
from percep_lightning.metrics.feeding import fix_real_side, synced_compute
from percep_lightning.metrics.fid import FrechetInceptionDistance
from percep_lightning.metrics.kid import KernelInceptionDistance

__all__ = ["CachedEpoch", "RealStatsCache"]

CACHED = ("fid", "kid")
"""The registry metrics whose real side the store can hold."""


@dataclass
class CachedEpoch:
    """An epoch's caching: its key (``None``: no caching), whether the real side came from the store, and the
    checksum of the target images seen (to notice a changed evaluation set)."""

    key: str | None = None
    reused: bool = False
    fingerprint: Tensor | None = None


class RealStatsCache:
    """Reuse FID's and KID's real statistics across epochs and resumes while the evaluation set is unchanged.

    Args:
        real_stats: ``True`` (files in the run's folder at checkpoint time), a folder shared by runs, or
            ``False`` (recompute every epoch).
        warn: ``warn(message)``, the callback's once-per-run warning.
    """

    def __init__(self, real_stats: bool | str | os.PathLike[str], warn: Callable[[str], None]) -> None:
        self.enabled = real_stats is not False
        self.store = RealStatsStore(None if isinstance(real_stats, bool) else real_stats)
        self.warn = warn
        self.metrics: dict[str, Metric] = {}
        self.inception: Any = None
        self.inception_weights: Any = "default"
        self.digest: str | None = None
        self.switched_off = False

    def setup(
        self, metrics: Mapping[str, Metric], inception: Any, inception_weights: Any, trainer: Trainer
    ) -> None:
        """Hold the cached metrics and the shared Inception; hash its weights once, on rank zero."""
        self.metrics = {name: metrics[name] for name in CACHED if name in metrics}
        self.inception, self.inception_weights = inception, inception_weights
        if self.metrics and self.inception is not None and self.enabled and trainer.is_global_zero:
            self.digest = weights_digest(inception_weights, inception)

    def begin(
        self,
        trainer: Trainer,
        loader: Any,
        plan: SamplePlan,
        device: torch.device,
        key_options: Mapping[str, Any],
    ) -> CachedEpoch:
        """The epoch's caching; fixes FID's and KID's real side from the store when it holds this set."""
        epoch = CachedEpoch()
        if not self.metrics:
            return epoch
        epoch.fingerprint = torch.zeros(3, dtype=torch.long, device=device)
        fid = self.metrics.get("fid")
        if isinstance(fid, FrechetInceptionDistance):
            fid.clear_real_statistics()
        if not self._allowed(plan):
            return epoch
        key = self._key(loader, key_options) if trainer.is_global_zero else None
        epoch.key = trainer.strategy.broadcast(key, src=0)
        found = self.store.lookup(epoch.key, trainer)
        if found is not None and (found.features is not None or "kid" not in self.metrics):
            self._restore(found, trainer)
            epoch.reused = True
        return epoch

    def see_targets(self, epoch: CachedEpoch, targets: Tensor) -> None:
        """Add ``uint8`` target images to the epoch's checksum."""
        if epoch.fingerprint is not None:
            x = targets.to(torch.long)
            count = torch.tensor(x.shape[0], device=x.device)
            epoch.fingerprint += torch.stack([count, x.sum(), (x * x).sum()]).to(epoch.fingerprint.device)

    def compute(self, name: str, metric: Metric, epoch: CachedEpoch, fresh: dict[str, Any]) -> Any:
        """A metric's synchronised result; FID and KID computed fresh leave their real side in ``fresh``."""
        if name not in self.metrics or epoch.key is None or epoch.reused:
            return synced_compute(metric)
        with metric.sync_context(dist_sync_fn=metric.dist_sync_fn):
            if isinstance(metric, FrechetInceptionDistance):
                mu, sigma, n = metric.real_statistics()
                metric.set_real_statistics(
                    mu, sigma, n
                )  # compute() below reuses them instead of rebuilding them
                fresh.update(mu=mu.detach().cpu(), sigma=sigma.detach().cpu(), num_samples=int(n))
            elif isinstance(metric, KernelInceptionDistance):
                fresh["features"] = metric.ordered_features(real=True).detach().cpu()
            return metric.compute()

    def end(self, trainer: Trainer, epoch: CachedEpoch, fresh: Mapping[str, Any]) -> None:
        """Check the reused statistics against the images seen, or hand fresh ones to the store."""
        if epoch.key is None:
            return
        fingerprint = trainer.strategy.reduce(epoch.fingerprint, reduce_op="sum").cpu()  # type: ignore[arg-type]
        if epoch.reused:
            self._check(trainer, fingerprint)
        else:
            self.store.remember(_entry(epoch.key, fresh, fingerprint.tolist()), trainer)

    # ------------------------------------------------------------------ steps

    def _allowed(self, plan: SamplePlan) -> bool:
        if not self.enabled or self.switched_off:
            return False
        if plan.shuffled and plan.keep is not None:
            self.warn(
                "ImageMetricsCallback: the evaluation sampler shuffles and `max_samples` keeps a subset, so the real "
                "images change every epoch; their statistics are not cached."
            )
            return False
        return True

    def _key(self, loader: Any, options: Mapping[str, Any]) -> str:
        extractor = options.get("extractor")
        target = options["target"] if extractor is None else f"{options['target']} of {qualname(extractor)}"
        fields = {key: value for key, value in options.items() if key not in ("extractor", "target")}
        return real_stats_key(
            weights=self.digest or weights_digest(self.inception_weights, self.inception),
            dataset=getattr(loader, "dataset", None),
            options={"resize": self.inception.resize, **fields, "target": target},
        )

    def _restore(self, found: RealStats, trainer: Trainer) -> None:
        """Fix the real sides of FID and KID from the store (KID: this process's share of the features)."""
        fix_real_side(
            self.metrics, found.mu, found.sigma, found.num_samples, found.features,
            rank=int(trainer.global_rank), world_size=int(trainer.world_size),
        )  # fmt: skip

    def _check(self, trainer: Trainer, fingerprint: Tensor) -> None:
        """Switch caching off when the target images differ from those the cached statistics came from."""
        entry = self.store.entry
        if entry is not None and not torch.equal(fingerprint, torch.as_tensor(entry.fingerprint)):
            rank_zero_warn(
                "ImageMetricsCallback: the target images differ from those the cached real FID statistics were "
                f"computed from (e.g. random augmentation); epoch {trainer.current_epoch}'s FID/KID used the "
                "cached statistics. Caching is switched off for the rest of this run; pass "
                "`real_stats=False` if the evaluation set changes between epochs."
            )
            self.switched_off = True
            self.store.forget()


def _entry(key: str, fresh: Mapping[str, Any], fingerprint: list[int]) -> RealStats:
    """The store entry of an epoch; without FID its mean and covariance come from KID's features."""
    features = fresh.get("features")
    if "mu" in fresh:
        mu, sigma, n = fresh["mu"], fresh["sigma"], fresh["num_samples"]
    else:
        total, outer, n = feature_sums(features.to(torch.float64))
        mu, sigma = feature_statistics(total, outer, n)
    return RealStats(key, mu, sigma, int(n), fingerprint, features)
