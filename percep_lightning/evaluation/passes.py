"""Running a :class:`~percep_lightning.evaluation.plan.Plan`: the metrics built from the registry, one pass over
each set of pairs feeding every paired metric, one pass of each feature network over each folder feeding every
metric that holds it, and the values computed (synchronised across the processes of ``torchrun``).

The metrics are those of :mod:`percep_lightning.metrics` (the validation callback builds the same ones): a
paired metric's per-pair values come from its public ``per_image``, a distribution metric is fed through
:mod:`percep_lightning.metrics.feeding`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from percep_lightning.evaluation.distributed import World, all_gather_objects
from percep_lightning.evaluation.errors import EvaluationError
from percep_lightning.evaluation.files import ImageFiles, iter_batches
from percep_lightning.evaluation.plan import FLAGS, Plan
from percep_lightning.metrics.feeding import (
    extractor_groups,
    feed,
    forward,
    join_gathers,
    named_results,
    reads_logits,
    synced_compute,
)
from percep_lightning.metrics.fid import FrechetInceptionDistance
from percep_lightning.metrics.registry import BuildContext, build_metric

__all__ = ["Passes", "PerPair", "Recorder"]

PerPair = tuple[list[int], list[float]]
"""The dataset positions of a process's pairs and their values."""
Recorder = Callable[[Tensor, Tensor], None]
"""``recorder(features, indices)``: sees the FID Inception features of the TARGET folder (the cache)."""


def _float64(images: Tensor) -> Tensor:
    """[0, 1] float64 images; ``uint8`` is divided by 255 in float64 (not rounded through float32)."""
    return images.to(torch.float64) / 255 if images.dtype == torch.uint8 else images.to(torch.float64)


@dataclass
class Passes:
    """The passes of one evaluation on one process.

    Attributes:
        plan: what to compute.
        world: the processes (sharding and gathers).
        device: where the networks run.
        batch_size, num_workers, progress: how the files are read.
        resize: the FID Inception's resize mode.
    """

    plan: Plan
    world: World
    device: torch.device
    batch_size: int
    num_workers: int
    progress: bool
    resize: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    context: BuildContext | None = None

    def build(self) -> None:
        """The registry metrics (shared networks once, random ones seeded by name) and the user's, on the device."""
        self.context = BuildContext(self.plan.weights, resize=self.resize)
        for name, spec in self.plan.specs.items():
            if spec.feed != "derived":
                self.metrics[name] = build_metric(spec, self.context, self.plan.options[name])
        self.metrics.update(self.plan.user)
        for metric in self.metrics.values():
            metric.to(self.device)
            join_gathers(metric, self.device)

    def _files(self, role: str, names: list[str]) -> list[Path]:
        root = Path(self.plan.folders[role])
        return [root / name for name in names]

    def _batches(self, dataset: ImageFiles, folders: tuple[str, ...], description: str) -> Any:
        return iter_batches(
            dataset, batch_size=self.batch_size, num_workers=self.num_workers, folder_names=folders,
            progress=self.progress, description=description,
        )  # fmt: skip

    def paired(self, against: str) -> dict[str, PerPair]:
        """One pass over the pairs with ``against``: every paired metric's values, by dataset position."""
        pairs = self.plan.pairings[against]
        names = [
            n for n in self.plan.names if self.plan.kind(n) == "paired" and self.plan.against(n) == against
        ]
        shard = self.world.shard(len(pairs))
        files = zip(self._files("preds", [pairs[i][0] for i in shard]), self._files(against, [pairs[i][1] for i in shard]), strict=True)  # fmt: skip
        out: dict[str, PerPair] = {name: ([], []) for name in names}
        for batch in self._batches(
            ImageFiles(list(files), shard), ("PRED_DIR", FLAGS[against]), f"pairs vs {against}"
        ):
            preds, other = (_float64(x) for x in batch.images)
            for name in names:
                try:
                    values = self.metrics[name].per_image(preds, other)  # type: ignore[operator]
                except ValueError as err:
                    first = pairs[int(batch.indices[0])][0]
                    raise EvaluationError(
                        f"{name} on {first!r} and the same-sized pairs after it: {err}"
                    ) from err
                out[name][0].extend(batch.indices.tolist())
                out[name][1].extend(values.to(torch.float64).tolist())
        return out

    def features(self, fixed: set[str], recorders: Mapping[int, Recorder] | None = None) -> None:
        """One pass of each feature network over each folder its metrics read, feeding them all.

        Args:
            fixed: metrics whose real side is already fixed (TARGET statistics or the cache).
            recorders: by ``id`` of a network, what sees its features of TARGET (for the cache).
        """
        feature_metrics = {n: m for n, m in self.metrics.items() if self.plan.kind(n) == "features"}
        for extractor, names in extractor_groups(feature_metrics):
            by_role: dict[str, list[str]] = {"preds": list(names)}
            for name in names:
                against = self.plan.against(name)
                if against is not None and name not in fixed:
                    by_role.setdefault(against, []).append(name)
            for role, users in by_role.items():
                record = (recorders or {}).get(id(extractor)) if role == "target" else None
                self.folder_pass(extractor, role, [self.metrics[n] for n in users], record)

    def folder_pass(self, extractor: Any, role: str, users: list[Metric], record: Recorder | None) -> None:
        """One pass of ``extractor`` over the folder of ``role``, feeding ``users`` (``preds``: generated images)."""
        names = self.plan.listed[role]
        shard = self.world.shard(len(names))
        dataset = ImageFiles([(p,) for p in self._files(role, [names[i] for i in shard])], shard)
        logits = role == "preds" and any(reads_logits(m) for m in users)
        quantize = getattr(users[0], "quantize", "round")
        label = getattr(extractor, "identity", type(extractor).__name__).split(":")[0].replace("_", " ")
        for batch in self._batches(dataset, (FLAGS[role],), f"{label} {role}"):
            outputs = forward(extractor, batch.images[0], FLAGS[role], quantize, logits=logits)
            indices = batch.indices.to(self.device)
            feed(users, outputs, real=role != "preds", indices=indices)
            if record is not None:
                record(outputs.features, indices)

    def compute(self, name: str) -> dict[str, tuple[float, float | None]]:
        """A feature metric's ``{logged name: (value, spread or None)}``, synchronised (call it on every process).

        A value with a spread (KID, IS) is one entry under ``name``; a named tuple of values (PRDC) is one entry
        per field, under the registry entry's logged names (``precision``, ...) or ``{name}_{field}``.
        """
        result = synced_compute(self.metrics[name])
        if hasattr(result, "_fields"):
            spec = self.plan.specs.get(name)
            named = named_results(result, name, spec.logged if spec is not None else ())
            return {key: (float(value), None) for key, value in named.items()}
        if isinstance(result, tuple):
            return {name: (float(result[0]), float(result[1]))}
        return {name: (float(result), None)}

    def fix_target_statistics(self, mu: Tensor, sigma: Tensor) -> set[str]:
        """Compare ``fid`` with TARGET statistics from a file (its image count unknown); returns the fixed names."""
        fid = self.metrics.get("fid")
        if not isinstance(fid, FrechetInceptionDistance):
            return set()
        fid.set_real_statistics(mu, sigma, None)
        return {"fid"}


def gathered_values(world: World, per_pair: PerPair) -> Tensor:
    """Every process's per-pair values, in dataset order (call it on every process)."""
    parts = all_gather_objects(world, per_pair)
    indices = [i for part in parts for i in part[0]]
    values = [v for part in parts for v in part[1]]
    order = sorted(range(len(indices)), key=indices.__getitem__)
    return torch.tensor([values[k] for k in order], dtype=torch.float64)
