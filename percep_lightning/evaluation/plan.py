"""The plan of an evaluation, made before any network is built: which metrics (registry names and the user's
own metric objects) with which options, which folders and files, which pairs, which weights files.

Every check that can fail on bad input runs here, so a mistake costs no network pass: unknown names or
options, a folder a metric needs but was not given, unreadable or unpaired files, too few images, and
unavailable weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor
from torchmetrics import Metric

from percep_lightning.evaluation.errors import EvaluationError
from percep_lightning.evaluation.files import list_images
from percep_lightning.evaluation.pairing import pair_files
from percep_lightning.evaluation.table import resolve_metrics
from percep_lightning.metrics.feature_set import FeatureSetMetric
from percep_lightning.metrics.frechet import FrechetDistance
from percep_lightning.metrics.paired import PerImageMean
from percep_lightning.metrics.registry import METRICS, MetricSpec, resolve_options

__all__ = ["FLAGS", "Plan", "folder_args", "make_plan", "resolve_weights"]

FLAGS = {"preds": "PRED_DIR", "target": "TARGET", "content": "--content", "style": "--style"}
"""How the command line names the folder of each role."""
WEIGHTS_ALIASES = {"inception": "inception_fid"}
"""``--weights`` names that differ from the keys of :data:`~percep_lightning.backbones.WEIGHTS`."""


@dataclass
class Plan:
    """What an evaluation computes, on which files.

    Attributes:
        specs: the registry metrics by name (derived ones and what they require included), in output order.
        user: the user's metric objects by name (compared with TARGET).
        options: each registry metric's resolved options.
        folders: the folder (or TARGET ``.npz``) of each role, ``None`` where not given.
        listed: the image files of each folder read.
        pairings: ``(pred file, other file)`` pairs for each role a paired metric compares with.
        target_stats: ``(mu, sigma)`` when TARGET is a statistics file.
        weights: network name -> weights file path, or ``None`` for random weights.
        weights_record: what the JSON output records of the weights.
    """

    specs: dict[str, MetricSpec]
    user: dict[str, Metric]
    options: dict[str, dict[str, Any]]
    folders: dict[str, Any]
    listed: dict[str, list[str]] = field(default_factory=dict)
    pairings: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    target_stats: tuple[Tensor, Tensor] | None = None
    weights: dict[str, Any] = field(default_factory=dict)
    weights_record: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Every metric's name, in output order."""
        return [*self.specs, *self.user]

    def kind(self, name: str) -> str:
        """``"paired"``, ``"features"`` or ``"derived"``."""
        if name in self.user:
            return "paired" if isinstance(self.user[name], PerImageMean) else "features"
        spec = self.specs[name]
        return "paired" if spec.paired else ("derived" if spec.feed == "derived" else "features")

    def against(self, name: str) -> str | None:
        """The role a metric compares the predictions with (``None``: the predictions alone)."""
        return "target" if name in self.user else self.specs[name].against


def make_plan(
    folders: Mapping[str, Any],
    metrics: Sequence[str] | Mapping[str, str | Metric] | str | None,
    preset: str | None,
    options: Mapping[str, Mapping[str, Any]],
    *,
    pair_by: str,
    recursive: bool,
    weights: Mapping[str, Any],
) -> Plan:
    """Check the request and the files and return the :class:`Plan` (no network is built).

    Raises:
        EvaluationError: for bad input (see :func:`~percep_lightning.evaluation.evaluate`).
        WeightsUnavailableError: when default weights are neither cached nor downloadable.
    """
    specs, user = _metrics(metrics, preset)
    check_weights_names(weights)
    plan = Plan(specs, user, _options(specs, options), dict(folders))
    plan.target_stats = _check_folders_given(plan)
    plan.listed = {
        role: list_images(
            path, recursive=recursive, name=f"{FLAGS[role]} ({'pred' if role == 'preds' else role})"
        )
        for role, path in plan.folders.items()
        if path is not None and not (role == "target" and plan.target_stats is not None)
    }
    for against in dict.fromkeys(plan.against(n) for n in plan.names if plan.kind(n) == "paired"):
        plan.pairings[against] = pair_files(  # type: ignore[index]
            plan.listed["preds"],
            plan.listed[against],
            by=pair_by,
            names=("PRED_DIR", FLAGS[against]),  # type: ignore[index]
        )
    _check_counts(plan)
    plan.weights, plan.weights_record = resolve_weights(plan, weights)
    return plan


def _metrics(
    metrics: Sequence[str] | Mapping[str, str | Metric] | str | None, preset: str | None
) -> tuple[dict[str, MetricSpec], dict[str, Metric]]:
    """Registry entries (the preset's and the named ones) and the user's metric objects, by name."""
    user: dict[str, Metric] = {}
    names: list[str] | None = None
    if isinstance(metrics, Mapping):
        names = []
        for name, value in metrics.items():
            if isinstance(value, str):
                if value != name:
                    raise EvaluationError(
                        f"Metric {name!r}: registry metrics keep their names, got {value!r}."
                    )
                names.append(value)
            elif isinstance(value, (FrechetDistance, FeatureSetMetric, PerImageMean)):
                user[str(name)] = value
            else:
                raise EvaluationError(
                    f"Metric {name!r}: expected a registry name, a FrechetDistance / KernelDistance / CMMD / PRDC "
                    f"(compared with TARGET) or a per-image metric, but got {type(value).__name__}."
                )
    else:
        names = metrics  # type: ignore[assignment]
    specs = (
        {spec.name: spec for spec in resolve_metrics(names, preset)} if names or preset or not user else {}
    )
    clash = sorted(set(specs) & set(user))
    if clash:
        raise EvaluationError(
            f"Metric names {clash} are registry metrics; name your own metrics differently."
        )
    return specs, user


def _options(
    specs: Mapping[str, MetricSpec], given: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    unknown = sorted(set(given) - set(METRICS))
    if unknown:
        raise EvaluationError(
            f"Unknown metric {unknown[0]!r} in `options`; expected some of {', '.join(METRICS)}."
        )
    try:
        return {name: resolve_options(spec, given.get(name)) for name, spec in specs.items()}
    except (TypeError, ValueError) as err:
        raise EvaluationError(str(err)) from err


def _check_folders_given(plan: Plan) -> tuple[Tensor, Tensor] | None:
    """Check every metric has its folder; load TARGET statistics when TARGET is an ``.npz`` file."""
    derived_last = sorted(plan.names, key=lambda name: plan.kind(name) == "derived")
    for name in derived_last:
        for role in plan.specs[name].roles[1:] if name in plan.specs else ("target",):
            if plan.folders[role] is None:
                what = (
                    plan.specs[name].description if name in plan.specs else "your metric compares with TARGET"
                )
                raise EvaluationError(f"Metric {name!r} needs {FLAGS[role]}: {what}.")
    target = plan.folders["target"]
    if target is None or not str(target).lower().endswith(".npz"):
        return None
    if not Path(target).is_file():
        raise EvaluationError(f"TARGET {str(target)!r} does not exist.")
    others = [n for n in plan.names if plan.against(n) == "target" and n != "fid"]
    if others:
        verb = "needs" if len(others) == 1 else "need"
        raise EvaluationError(
            f"TARGET {str(target)!r} is a statistics file; {', '.join(others)} {verb} a folder of images "
            "(only fid works from statistics)."
        )
    from percep_lightning.metrics.stats_io import load_stats

    try:
        mu, sigma = load_stats(target)
    except (ValueError, OSError) as err:
        raise EvaluationError(str(err)) from err
    if tuple(mu.shape) != (2048,):
        raise EvaluationError(
            f"TARGET {str(target)!r} holds statistics of {tuple(mu.shape)[0]}-d features; FID needs the 2048-d "
            "pool3 statistics of the FID Inception (as written by `percep-lightning stats` or pytorch-fid)."
        )
    return mu, sigma


def _check_counts(plan: Plan) -> None:
    for name in plan.names:
        if plan.kind(name) == "derived":
            continue
        spec = plan.specs.get(name)
        least = spec.min_images(plan.options[name]) if spec is not None else 2
        against = plan.against(name)
        roles = ["preds"] if plan.kind(name) == "paired" or against is None else ["preds", against]
        for role in roles:
            if role == "target" and plan.target_stats is not None:
                continue
            n = len(plan.listed[role])
            if n < least:
                why = f" (one per split, --is-splits {least})" if name == "is" else ""
                raise EvaluationError(
                    f"{name} needs at least {least} images in {FLAGS[role]}{why}, but it holds {n}."
                )


def resolve_weights(plan: Plan, given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{name: path or None}`` for the networks the metrics need, and what the JSON records of them."""
    from importlib import resources

    from percep_lightning.backbones.weights import fetch_all

    check_weights_names(given)
    needed = list(
        dict.fromkeys(w for spec in plan.specs.values() for w in spec.weights_for(plan.options[spec.name]))
    )
    overrides: dict[str, Any] = {}
    for name, value in given.items():
        if value in (None, "random"):
            overrides[WEIGHTS_ALIASES.get(name, name)] = None
        elif value != "default":
            overrides[WEIGHTS_ALIASES.get(name, name)] = Path(value).expanduser()
    paths = fetch_all([WEIGHTS_ALIASES.get(n, n) for n in needed], overrides)
    resolved, record = {}, {}
    for name in needed:
        path = paths[WEIGHTS_ALIASES.get(name, name)]
        resolved[name] = None if path is None else str(path)
        record[name] = (
            {"file": None, "sha256": None, "note": "random initialisation"}
            if path is None
            else {"file": Path(path).name, "path": str(path)}
        )
    for net in dict.fromkeys(_lpips_net(spec, plan.options) for spec in plan.specs.values()):
        if net is not None:
            lin = resources.files("percep_lightning.backbones.lpips_weights") / f"{net}.pth"
            record[f"lpips_{net}_lin"] = {"file": f"v0.1/{net}.pth", "path": str(lin)}
    return resolved, record


def check_weights_names(given: Mapping[str, Any]) -> None:
    """Raise an EvaluationError for a ``--weights`` name that names no network (listing the known ones)."""
    from percep_lightning.backbones.weights import WEIGHTS

    known = sorted({*WEIGHTS, *WEIGHTS_ALIASES})
    for name in given:
        if WEIGHTS_ALIASES.get(name, name) not in WEIGHTS:
            raise EvaluationError(
                f"Unknown weights name {name!r} in --weights; expected some of {', '.join(known)}."
            )


def _lpips_net(spec: MetricSpec, options: Mapping[str, Mapping[str, Any]]) -> str | None:
    if not spec.name.startswith("lpips"):
        return None
    return "vgg" if spec.name == "lpips_vgg" else options[spec.name].get("net", "alex")


def folder_args(**folders: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The folders by role from :func:`~percep_lightning.evaluation.evaluate`'s arguments."""
    return {"preds": folders["pred_dir"], **{role: folders[role] for role in ("target", "content", "style")}}
