"""The callback's cache and resume policy for real statistics: when the real side of the registry's distribution
metrics on one network (FID and KID on the FID Inception; FD-DINOv2, KD-DINOv2 and PRDC on DINOv2; CMMD on CLIP)
comes from the store instead of a pass of that network, how the key is formed, how a changed evaluation set is
noticed, and what an epoch that computed fresh statistics hands to the store
(:class:`~percep_lightning.callbacks.real_stats.RealStatsStore`). The callback holds one per network.

A user's own metric objects always run their pass.
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
from percep_lightning.metrics.feature_set import FeatureSetMetric
from percep_lightning.metrics.feeding import fix_real_side, synced_compute
from percep_lightning.metrics.frechet import FrechetDistance

__all__ = ["CachedEpoch", "RealStatsCache", "RealStatsCaches", "cached_groups"]

INCEPTION = "inception"


@dataclass
class CachedEpoch:
    """An epoch's caching: its key (``None``: no caching), whether the real side came from the store, and the
    checksum of the target images seen (to notice a changed evaluation set)."""

    key: str | None = None
    reused: bool = False
    fingerprint: Tensor | None = None


class RealStatsCache:
    """Reuse the real statistics of one network's metrics across epochs and resumes while the evaluation set is
    unchanged.

    Args:
        real_stats: ``True`` (files in the run's folder at checkpoint time), a folder shared by runs, or
            ``False`` (recompute every epoch).
        warn: ``warn(message)``, the callback's once-per-run warning.
        network: the network's name (``"inception"``, ``"dinov2_vitl14"``, ``"clip_vit_l14_336"``).
    """

    def __init__(
        self, real_stats: bool | str | os.PathLike[str], warn: Callable[[str], None], network: str = INCEPTION
    ) -> None:
        self.enabled = real_stats is not False
        self.store = RealStatsStore(None if isinstance(real_stats, bool) else real_stats)
        self.warn = warn
        self.network_name = network
        self.metrics: dict[str, Metric] = {}
        self.network: Any = None
        self.network_weights: Any = "default"
        self.digest: str | None = None
        self.switched_off = False

    def setup(
        self, metrics: Mapping[str, Metric], network: Any, network_weights: Any, trainer: Trainer
    ) -> None:
        """Hold the cached metrics and their shared network; hash its weights once, on rank zero."""
        self.metrics = dict(metrics)
        self.network, self.network_weights = network, network_weights
        if self.metrics and self.network is not None and self.enabled and trainer.is_global_zero:
            self.digest = self._weights_digest()

    def _weights_digest(self) -> str:
        """The FID Inception's by its weights file (the key earlier versions wrote); another network's identity
        (its preprocessing and the SHA-256 of its weights)."""
        if self.network_name == INCEPTION:
            return weights_digest(self.network_weights, self.network)
        return str(self.network.identity)

    def begin(
        self,
        trainer: Trainer,
        loader: Any,
        plan: SamplePlan,
        device: torch.device,
        key_options: Mapping[str, Any],
    ) -> CachedEpoch:
        """The epoch's caching; fixes the metrics' real side from the store when it holds this set."""
        epoch = CachedEpoch()
        if not self.metrics:
            return epoch
        epoch.fingerprint = torch.zeros(3, dtype=torch.long, device=device)
        for metric in self.metrics.values():
            if isinstance(metric, FrechetDistance):
                metric.clear_real_statistics()
        if not self._allowed(plan):
            return epoch
        key = self._key(loader, key_options) if trainer.is_global_zero else None
        epoch.key = trainer.strategy.broadcast(key, src=0)
        found = self.store.lookup(epoch.key, trainer)
        needs_features = any(isinstance(m, FeatureSetMetric) for m in self.metrics.values())
        if found is not None and (found.features is not None or not needs_features):
            self._restore(found, trainer)
            epoch.reused = True
        return epoch

    def compute(self, name: str, metric: Metric, epoch: CachedEpoch, fresh: dict[str, Any]) -> Any:
        """A metric's synchronised result; one computed fresh leaves its real side in ``fresh`` (a Fréchet distance
        its mean and covariance, a feature-set metric its features)."""
        if name not in self.metrics or epoch.key is None or epoch.reused:
            return synced_compute(metric)
        with metric.sync_context(dist_sync_fn=metric.dist_sync_fn):
            if isinstance(metric, FrechetDistance):
                mu, sigma, n = metric.real_statistics()
                metric.set_real_statistics(
                    mu, sigma, n
                )  # compute() below reuses them instead of rebuilding them
                fresh.update(mu=mu.detach().cpu(), sigma=sigma.detach().cpu(), num_samples=int(n))
            elif isinstance(metric, FeatureSetMetric) and "features" not in fresh:
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
        own = (
            {"resize": self.network.resize}
            if self.network_name == INCEPTION
            else {"network": self.network_name}
        )
        return real_stats_key(
            weights=self.digest or self._weights_digest(),
            dataset=getattr(loader, "dataset", None),
            options={**own, **fields, "target": target},
        )

    def _restore(self, found: RealStats, trainer: Trainer) -> None:
        """Fix the metrics' real sides from the store (feature-set metrics: this process's share of the features)."""
        fix_real_side(
            self.metrics, found.mu, found.sigma, found.num_samples, found.features,
            rank=int(trainer.global_rank), world_size=int(trainer.world_size),
        )  # fmt: skip

    def _check(self, trainer: Trainer, fingerprint: Tensor) -> None:
        """Switch caching off when the target images differ from those the cached statistics came from."""
        entry = self.store.entry
        if entry is not None and not torch.equal(fingerprint, torch.as_tensor(entry.fingerprint)):
            rank_zero_warn(
                "ImageMetricsCallback: the target images differ from those the cached real statistics were "
                f"computed from (e.g. random augmentation); epoch {trainer.current_epoch}'s "
                f"{'/'.join(self.metrics)} used the cached statistics. Caching is switched off for the rest of "
                "this run; pass "
                "`real_stats=False` if the evaluation set changes between epochs."
            )
            self.switched_off = True
            self.store.forget()


def _entry(key: str, fresh: Mapping[str, Any], fingerprint: list[int]) -> RealStats:
    """The store entry of an epoch; without a Fréchet distance its mean and covariance come from the features."""
    features = fresh.get("features")
    if "mu" in fresh:
        mu, sigma, n = fresh["mu"], fresh["sigma"], fresh["num_samples"]
    else:
        total, outer, n = feature_sums(features.to(torch.float64))
        mu, sigma = feature_statistics(total, outer, n)
    return RealStats(key, mu, sigma, int(n), fingerprint, features)


class RealStatsCaches:
    """One :class:`RealStatsCache` per network whose registry metrics compare generated with target images.

    The FID Inception's cache is always there (its checkpoint state is the callback's, as before); the others
    (DINOv2, CLIP) are made in :meth:`setup` for the metrics that use them, and their states go under
    ``"networks"``.

    Args:
        real_stats: as :class:`RealStatsCache`.
        warn: the callback's once-per-run warning.
    """

    def __init__(self, real_stats: bool | str | os.PathLike[str], warn: Callable[[str], None]) -> None:
        self.real_stats = real_stats
        self.warn = warn
        self.caches: dict[str, RealStatsCache] = {INCEPTION: RealStatsCache(real_stats, warn)}
        self._pending: dict[str, Mapping[str, Any]] = {}
        self._run_directory: str | None = None

    def setup(
        self,
        groups: Mapping[str, tuple[Any, dict[str, Metric]]],
        weights: Mapping[str, Any],
        trainer: Trainer,
    ) -> None:
        """Give each network's cache its metrics: ``groups`` is ``{network name: (network, metrics by name)}``."""
        for network in groups:
            if network not in self.caches:
                self.caches[network] = RealStatsCache(self.real_stats, self.warn, network)
                if network in self._pending:
                    self.caches[network].store.load_state_dict(self._pending.pop(network))
                if self._run_directory is not None:
                    self.caches[network].store.set_run_directory(self._run_directory)
        for network, cache in self.caches.items():
            net, metrics = groups.get(network, (None, {}))
            cache.setup(metrics, net, weights.get(network, "default"), trainer)

    def set_run_directory(self, path: str) -> None:
        self._run_directory = path
        for cache in self.caches.values():
            cache.store.set_run_directory(path)

    @property
    def cached(self) -> bool:
        """Whether any network's real statistics are held."""
        return any(cache.store.entry is not None for cache in self.caches.values())

    def begin(self, *args: Any) -> dict[str, CachedEpoch]:
        """Each cache's :meth:`RealStatsCache.begin` (same arguments)."""
        return {network: cache.begin(*args) for network, cache in self.caches.items()}

    def see_targets(self, epochs: Mapping[str, CachedEpoch], targets: Tensor) -> None:
        """Add ``uint8`` target images to the checksum of every network's epoch that keeps one (computed once)."""
        keeping = [epoch for epoch in epochs.values() if epoch.fingerprint is not None]
        if not keeping:
            return
        x = targets.to(torch.long)
        checksum = torch.stack([torch.tensor(x.shape[0], device=x.device), x.sum(), (x * x).sum()])
        for epoch in keeping:
            epoch.fingerprint += checksum.to(epoch.fingerprint.device)  # type: ignore[operator]

    def fixed(self, epochs: Mapping[str, CachedEpoch]) -> list[str]:
        """The metrics whose real side came from the store this epoch."""
        return [name for network, c in self.caches.items() if epochs[network].reused for name in c.metrics]

    def compute(
        self, name: str, metric: Metric, epochs: Mapping[str, CachedEpoch], fresh: dict[str, Any]
    ) -> Any:
        """A metric's synchronised result through the cache of its network (``fresh`` is per network)."""
        for network, cache in self.caches.items():
            if name in cache.metrics:
                return cache.compute(name, metric, epochs[network], fresh.setdefault(network, {}))
        return synced_compute(metric)

    def end(self, trainer: Trainer, epochs: Mapping[str, CachedEpoch], fresh: Mapping[str, Any]) -> None:
        for network, cache in self.caches.items():
            cache.end(trainer, epochs[network], fresh.get(network, {}))

    def persist(self, is_global_zero: bool) -> None:
        for cache in self.caches.values():
            cache.store.persist(is_global_zero)

    def state_dict(self) -> dict[str, Any]:
        """The FID Inception store's state, plus ``"networks"``: the other stores' (when there are any)."""
        state = self.caches[INCEPTION].store.state_dict()
        others = {network: c.store.state_dict() for network, c in self.caches.items() if network != INCEPTION}
        if others:
            state["networks"] = others
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.caches[INCEPTION].store.load_state_dict(state)
        for network, own in dict(state.get("networks") or {}).items():
            if network in self.caches:
                self.caches[network].store.load_state_dict(own)
            else:
                self._pending[network] = own


def cached_groups(metric_set: Any, networks: Mapping[str, Any]) -> dict[str, tuple[Any, dict[str, Metric]]]:
    """``{network name: (network, metrics)}`` of the registry metrics that compare generated with target images
    on a registry network (``caches_real`` entries logged under their own name)."""
    groups: dict[str, tuple[Any, dict[str, Metric]]] = {}
    by_id = {id(network): name for name, network in networks.items()}
    for name in metric_set.registry_names(metric_set.names):
        entry = metric_set.entries[name]
        network = by_id.get(id(getattr(entry.metric, "extractor", None)))
        if entry.spec.caches_real and entry.spec.against == "target" and network is not None:
            groups.setdefault(network, (networks[network], {}))[1][name] = entry.metric
    return groups
