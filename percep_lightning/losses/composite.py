"""A weighted sum of named losses, configurable from Hydra and logged part by part."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

__all__ = ["CompositeLoss"]


TermSpec = nn.Module | Mapping[str, Any] | Callable[[], nn.Module]
"""A term of :class:`CompositeLoss`: a loss module, a Hydra config of one, or a factory of one."""


class CompositeLoss(nn.Module):
    """The weighted sum of named loss terms, with each term's value kept for logging.

    .. math::
        \\mathcal{L} = \\sum_k \\lambda_k \\, \\mathcal{L}_k(\\hat y, y_k)

    Terms whose weight is 0 are skipped (never called), so a preset can switch a term off from the
    command line (``loss.weights.perceptual=0``) at no cost. A term given as a config or a factory is
    not even built while its weight is 0 (no backbone loaded or downloaded); it is built at the first
    forward after its weight becomes non-zero, on the device of ``preds``. After each forward,
    :attr:`parts` holds the detached, unweighted value of every computed term and :attr:`total` the
    detached weighted sum; :meth:`log_parts` logs them from a ``LightningModule``.

    The built terms are registered submodules (an ``nn.ModuleDict``), so ``.to(device)`` moves them; the
    pretrained backbones inside them stay out of ``parameters()`` and ``state_dict()``.

    Every term compares ``preds`` with ``target``, unless ``targets`` routes it to another keyword
    argument of :meth:`forward`: with ``targets={"style": "style"}``, ``loss(preds, content, style=s)``
    compares the ``"style"`` term with ``s`` (the style images of style transfer).

    The packaged Hydra presets (``loss=sr_perceptual``, ...) set ``_recursive_: false`` so that the term
    configs reach this class unbuilt and a term of weight 0 is never instantiated.

    Args:
        terms: ``{name: term}``, each term called as ``term(preds, target)``. A term is a loss module, a
            Hydra config of one (a mapping with ``_target_``, built with ``hydra.utils.instantiate``), or
            a factory called without arguments (an ``nn.Module`` subclass or a ``functools.partial``,
            e.g. from Hydra's ``_partial_: true``). A Hydra ``DictConfig`` is accepted.
        weights: ``{name: weight}``, each finite and ``>= 0``, at least one of them (or a term without
            an entry, which gets weight 1.0) non-zero. Names that are not terms raise an error listing
            the terms.
        targets: ``{name: keyword}``: the terms that take their target from a keyword argument of
            :meth:`forward` instead of ``target``.

    Attributes:
        weights: the ``{name: weight}`` in use (a plain dict: changing a value between steps changes the
            next forward).
        terms: the built terms (an ``nn.ModuleDict``; a term of weight 0 given as a config or factory is
            absent until its weight becomes non-zero).
        parts: ``{name: detached unweighted value}`` from the last forward (terms of weight 0 absent).
        total: the detached weighted total of the last forward.

    Raises:
        TypeError: if a term is neither a module, a config nor a factory, a config or factory does not
            build an ``nn.Module``, or a weight is not a number.
        ValueError: if there are no terms, a name is not a valid module name, a config has no
            ``_target_``, ``weights`` or ``targets`` name something that is not a term, a weight is
            negative or not finite, or every weight is 0.

    Example:
        >>> import functools
        >>> import torch
        >>> from torch import nn
        >>> from percep_lightning.losses.composite import CompositeLoss
        >>> loss = CompositeLoss({"l1": nn.L1Loss(), "l2": nn.MSELoss()}, weights={"l2": 0.5})
        >>> loss(torch.zeros(2, 3), torch.full((2, 3), 2.0))
        tensor(4.)
        >>> {name: float(value) for name, value in loss.parts.items()}
        {'l1': 2.0, 'l2': 4.0}
        >>> lazy = CompositeLoss(
        ...     {"l1": nn.L1Loss(), "smooth": functools.partial(nn.SmoothL1Loss, beta=0.5)},
        ...     weights={"smooth": 0.0},
        ... )
        >>> list(lazy.terms)  # the zero-weight term is not built
        ['l1']
    """

    def __init__(
        self,
        terms: Mapping[str, TermSpec],
        weights: Mapping[str, float] | None = None,
        targets: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(terms, Mapping) or not terms:
            raise ValueError(
                f"Expected `terms` to be a non-empty mapping {{name: loss module}}, but got {terms!r}."
            )
        specs: dict[str, TermSpec] = {}
        for name, term in terms.items():
            name = str(name)
            if not name or "." in name:
                raise ValueError(f"Expected term names without '.', but got {name!r}.")
            specs[name] = _checked_term(name, term)
        self._names = tuple(specs)
        self.weights: dict[str, float] = {name: 1.0 for name in specs}
        self.weights.update(self._checked_weights(weights or {}))
        if not any(self.weights.values()):
            raise ValueError(
                f"Expected at least one term with a non-zero weight, but every weight is 0: {self.weights}. "
                "Give the terms to compute a positive weight (e.g. `weights.<term>=1.0`)."
            )
        self.targets: dict[str, str] = self._checked_targets(targets or {})
        # Terms not built yet (configs and factories of weight 0), built when their weight becomes non-zero.
        self._pending: dict[str, TermSpec] = {}
        built = {}
        for name, spec in specs.items():
            if isinstance(spec, nn.Module):
                built[name] = spec
            elif self.weights[name] == 0:
                self._pending[name] = spec
            else:
                built[name] = _build(name, spec)
        self.terms = nn.ModuleDict(built)
        self.parts: dict[str, Tensor] = {}
        self.total: Tensor | None = None

    def _unknown(self, what: str, names: Mapping[str, Any]) -> None:
        unknown = sorted(str(n) for n in names if str(n) not in self._names)
        if unknown:
            raise ValueError(
                f"`{what}` names {unknown}, which are not terms of this loss; the terms are: "
                f"{', '.join(self._names)}."
            )

    def _checked_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        if not isinstance(weights, Mapping):
            raise TypeError(
                f"Expected `weights` to be a mapping {{name: weight}}, but got {type(weights).__name__}."
            )
        self._unknown("weights", weights)
        checked = {}
        for name, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise TypeError(f"Expected the weight of {name!r} to be a number, but got {weight!r}.")
            if not math.isfinite(weight):
                raise ValueError(f"Expected the weight of {name!r} to be finite, but got {weight}.")
            if weight < 0:
                raise ValueError(
                    f"Expected the weight of {name!r} to be >= 0 (0 switches the term off), but got {weight}."
                )
            checked[str(name)] = float(weight)
        return checked

    def _checked_targets(self, targets: Mapping[str, str]) -> dict[str, str]:
        if not isinstance(targets, Mapping):
            raise TypeError(
                f"Expected `targets` to be a mapping {{name: keyword}}, but got {type(targets).__name__}."
            )
        self._unknown("targets", targets)
        checked = {}
        for name, keyword in targets.items():
            if not isinstance(keyword, str) or not keyword.isidentifier() or keyword in ("preds", "target"):
                raise ValueError(
                    f"Expected the target of {name!r} to be a keyword name other than 'preds' and 'target', "
                    f"but got {keyword!r}."
                )
            checked[str(name)] = keyword
        return checked

    def forward(self, preds: Tensor, target: Tensor, **other_targets: Tensor) -> Tensor:
        """The weighted sum of the terms of non-zero weight.

        Args:
            preds: the predictions, passed to every term.
            target: the target of every term not routed elsewhere by ``targets``.
            **other_targets: the targets named in ``targets``.

        Raises:
            ValueError: if a routed target is missing, or a keyword is given that no term uses, or every
                weight is 0.
        """
        unused = sorted(set(other_targets) - set(self.targets.values()))
        if unused:
            raise ValueError(
                f"Got the target keyword(s) {unused}, which no term uses; routed keywords: "
                f"{sorted(set(self.targets.values())) or 'none'} (see `targets`)."
            )
        parts: dict[str, Tensor] = {}
        total: Tensor | None = None
        for name in self._names:
            weight = self.weights[name]
            if weight == 0:
                continue
            term = self._term(name, preds)
            keyword = self.targets.get(name)
            if keyword is not None and keyword not in other_targets:
                raise ValueError(
                    f"Term {name!r} compares with the keyword argument `{keyword}`, but the call did not "
                    f"pass it: call the loss as loss(preds, target, {keyword}=...)."
                )
            value = term(preds, other_targets[keyword] if keyword is not None else target)
            parts[name] = value.detach()
            total = value * weight if total is None else total + value * weight
        if total is None:
            raise ValueError(f"Every term has weight 0, nothing to compute: {self.weights}.")
        self.parts = parts
        self.total = total.detach()
        return total

    def log_parts(self, module: Any, prefix: str = "loss", **log_kwargs: Any) -> None:
        """Log ``<prefix>/<term>`` for every computed term and ``<prefix>/total`` from the last forward.

        Args:
            module: the ``LightningModule`` (anything with its ``log(name, value, **kwargs)`` method).
            prefix: the start of the logged names.
            **log_kwargs: passed to ``module.log`` (``on_step``, ``on_epoch``, ``batch_size``,
                ``sync_dist``, ...).

        Raises:
            RuntimeError: if called before the first forward.

        Non-scalar values (terms with ``reduction="none"``) are logged as their mean.
        """
        if self.total is None:
            raise RuntimeError("`log_parts` needs the values of a forward pass; call the loss first.")
        for name, value in {**self.parts, "total": self.total}.items():
            module.log(
                f"{prefix}/{name}", value.mean() if value.numel() != 1 else value.reshape(()), **log_kwargs
            )

    def _term(self, name: str, preds: Tensor) -> nn.Module:
        """The built term ``name``, building it first (on the device of ``preds``) if it is pending."""
        if name in self._pending:
            self.terms[name] = _build(name, self._pending.pop(name)).to(preds.device)
        return self.terms[name]

    def extra_repr(self) -> str:
        routed = f", targets={self.targets}" if self.targets else ""
        pending = f", not built (weight 0): {sorted(self._pending)}" if self._pending else ""
        return f"weights={self.weights}{routed}{pending}"


def _is_config(term: Any) -> bool:
    return isinstance(term, Mapping)


def _checked_term(name: str, term: Any) -> TermSpec:
    """``term`` if it is a module, a config with ``_target_`` or a factory; an error naming it otherwise."""
    if isinstance(term, nn.Module):
        return term
    if _is_config(term):
        if "_target_" not in term:
            raise ValueError(
                f"Expected the config of term {name!r} to name its class with `_target_`, but got the keys "
                f"{sorted(str(k) for k in term)}."
            )
        return term
    if isinstance(term, functools.partial) or (isinstance(term, type) and issubclass(term, nn.Module)):
        return term
    raise TypeError(
        f"Expected term {name!r} to be an nn.Module, a config with `_target_` or a factory of one (an "
        f"nn.Module subclass or a functools.partial), but got {type(term).__name__}."
    )


def _build(name: str, spec: TermSpec) -> nn.Module:
    """Instantiate a term from its config (with Hydra) or its factory, checking it is a module."""
    if _is_config(spec):
        from hydra.utils import instantiate  # only configs need Hydra

        term = instantiate(spec)
        origin = "its config"
    else:
        term = spec()
        origin = "its factory"
    if not isinstance(term, nn.Module):
        raise TypeError(
            f"Expected term {name!r} built from {origin} to be an nn.Module, but got {type(term).__name__}."
        )
    return term
