"""The arguments of :class:`~percep_lightning.callbacks.ImageMetricsCallback` that name things: the step-output
key of each image role, and the pretrained weights of each network; checked when the callback is built."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from percep_lightning.callbacks.metric_set import MetricSet
from percep_lightning.metrics.registry import NETWORKS

__all__ = ["DEFAULT_KEYS", "check_role_keys", "check_weights", "resolve_keys", "weights_by_network"]

DEFAULT_KEYS: Mapping[str, str | None] = {
    "preds": "preds",
    "target": "target",
    "content": None,
    "style": None,
}
"""The step-output key of each image role (``content`` ``None``: the ``target`` key)."""


def resolve_keys(keys: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """The default keys updated with ``keys``, each role known and each key a string (or ``None``)."""
    if keys is None:
        return dict(DEFAULT_KEYS)
    if not isinstance(keys, Mapping):
        raise TypeError(f"Expected `keys` to be a mapping from role to key, but got {type(keys).__name__}.")
    unknown = sorted(set(keys) - set(DEFAULT_KEYS))
    if unknown:
        raise ValueError(
            f"Expected the roles in `keys` to be some of {tuple(DEFAULT_KEYS)}, but got {unknown}."
        )
    for role, key in keys.items():
        if key is not None and not isinstance(key, str):
            raise TypeError(f"Expected `keys[{role!r}]` to be a str or None, but got {type(key).__name__}.")
    return {**DEFAULT_KEYS, **keys}


def check_role_keys(metric_set: MetricSet, keys: Mapping[str, str | None]) -> None:
    """Raise a ValueError when a requested metric reads images whose key is ``None``."""
    for name, entry in metric_set.entries.items():
        for role in entry.roles:
            if keys[role] is not None or (role == "content" and keys["target"] is not None):
                continue
            fix = (
                "set `keys['content']` (or `keys['target']`)"
                if role == "content"
                else f"set `keys[{role!r}]`"
            )
            raise ValueError(f"Metric {name!r} needs {role} images: {fix}.")


def weights_by_network(weights: Any) -> dict[str, Any]:
    """``weights`` as a mapping by network name: one value for every network, or the mapping given."""
    if _by_network(weights):
        return dict(weights)
    return dict.fromkeys(NETWORKS, weights)


def check_weights(weights: Any) -> None:
    """Raise unless ``weights`` is one value for every network or a mapping from network names to values."""
    if not _by_network(weights):
        _check_weights_value(weights, "`weights`")
        return
    unknown = sorted(str(name) for name in weights if name not in NETWORKS)
    if unknown:
        raise ValueError(
            f"Expected the keys of `weights` to be network names of {NETWORKS}, but got {unknown}."
        )
    for name, value in weights.items():
        _check_weights_value(value, f"`weights[{name!r}]`")


def _check_weights_value(value: object, where: str) -> None:
    if value is None or isinstance(value, (str, os.PathLike, nn.Module)):
        return
    if isinstance(value, Mapping) and _is_state_dict(value):
        return
    raise TypeError(
        f'Expected {where} to be "default", a file path, None (random weights), a state dict or a built network, '
        f"but got {type(value).__name__}."
    )


def _by_network(weights: Any) -> bool:
    """Whether ``weights`` maps network names to weights (rather than being one state dict for every network)."""
    return isinstance(weights, Mapping) and not _is_state_dict(weights)


def _is_state_dict(value: Mapping[str, Any]) -> bool:
    return bool(value) and all(isinstance(v, Tensor) for v in value.values())
