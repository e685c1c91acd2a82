"""The package uses only public APIs of torch, torchmetrics and Lightning (a minor release must not break users).

The scan reads every module of the package with ``ast`` and fails on
* an attribute access named like a known private member of torchmetrics ``Metric`` or Lightning objects;
* ``._name`` on an object that is a trainer, module, strategy, metric, dataloader or sampler by its variable
  name (our own private helpers are reached through ``self`` or their module and are not flagged);
* an import of a private module or name from ``torchmetrics`` or ``lightning``.

A second scan fails on torch internals: ``torch.ops`` (operator-level kernels such as
``aten.threshold_backward``, whose signatures change between releases), ``torch._C``, torchmetrics'
``exclude_state`` argument of ``Metric._apply``, and any override of ``nn.Module._apply`` except the one in
:data:`APPLY_OVERRIDES` (the holder of frozen backbones, which must move them with its owner).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import percep_lightning

PACKAGE = Path(percep_lightning.__file__).parent

KNOWN_PRIVATE = {
    # torchmetrics.Metric internals
    "_computed", "_update_count", "_defaults", "_to_sync", "_should_unsync", "_reductions", "_persistent",
    "_forward_cache", "_is_synced", "_cache", "_enable_grad", "_dtype_convert", "_device", "_dtype",
    "_update_signature", "_wrap_update", "_wrap_compute", "_sync_dist", "_apply_sync", "_reduce_states",
    # Lightning internals
    "_sampler", "_results", "_logger_connector", "_checkpoint_connector", "_accelerator_connector",
    "_data_connector", "_callback_connector", "_signal_connector", "_fit_loop", "_evaluation_loop",
    "_current_fx_name", "_trainer", "_log_dir", "_sanity_checking", "_run_stage",
}  # fmt: skip

FOREIGN_OBJECTS = {
    "trainer", "pl_module", "module", "strategy", "metric", "fid", "loader", "dataloader", "sampler",
    "batch_sampler", "logger",
}  # fmt: skip

FOREIGN_PACKAGES = ("torchmetrics", "lightning", "pytorch_lightning", "lightning_fabric")


def _violations(source: str, name: str) -> list[str]:
    tree = ast.parse(source, filename=name)
    found = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute):
            attr = node.attr
            if attr in KNOWN_PRIVATE:
                found.append(f"{where} .{attr}")
            elif (
                attr.startswith("_")
                and not attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in FOREIGN_OBJECTS
            ):
                found.append(f"{where} {node.value.id}.{attr}")
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FOREIGN_PACKAGES
        ):
            private_module = any(part.startswith("_") for part in node.module.split("."))
            private_names = [a.name for a in node.names if a.name.startswith("_")]
            if private_module or private_names:
                found.append(f"{where} from {node.module} import {[a.name for a in node.names]}")
        elif isinstance(node, ast.Constant) and node.value in KNOWN_PRIVATE:  # getattr(obj, "_computed")
            found.append(f"{where} {node.value!r}")
    return found


def test_package_uses_no_private_torchmetrics_or_lightning_api():
    violations = [
        v
        for path in sorted(PACKAGE.rglob("*.py"))
        for v in _violations(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    ]
    assert not violations, "private torchmetrics/Lightning API used:\n" + "\n".join(violations)


APPLY_OVERRIDES = {"percep_lightning/backbones/base.py"}
"""The modules allowed to override ``nn.Module._apply``."""


def _torch_internals(source: str, name: str, may_override_apply: bool = False) -> list[str]:
    tree = ast.parse(source, filename=name)
    found = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("ops", "_C")
            and isinstance(node.value, ast.Name)
            and node.value.id == "torch"
        ):
            found.append(f"{where} torch.{node.attr}")
        elif isinstance(node, ast.Import):
            found += [
                f"{where} import {a.name}" for a in node.names if a.name.startswith(("torch.ops", "torch._C"))
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [a.name for a in node.names]
            if node.module.startswith(("torch.ops", "torch._C")) or (
                node.module == "torch" and {"ops", "_C"} & set(names)
            ):
                found.append(f"{where} from {node.module} import {names}")
        elif isinstance(node, ast.keyword) and node.arg == "exclude_state":
            found.append(f"{where} exclude_state=")
        elif isinstance(node, ast.Constant) and node.value == "exclude_state":
            found.append(f"{where} 'exclude_state'")
        elif isinstance(node, ast.ClassDef) and not may_override_apply:
            found += [
                f"{name}:{item.lineno} {node.name}._apply override"
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "_apply"
            ]
    return found


def _package_modules() -> list[str]:
    return [str(path.relative_to(PACKAGE.parent)) for path in sorted(PACKAGE.rglob("*.py"))]


def _scan_for_torch_internals(module: str) -> list[str]:
    return _torch_internals((PACKAGE.parent / module).read_text(), module, module in APPLY_OVERRIDES)


def test_package_uses_no_torch_internals_and_one_apply_override():
    violations = [v for module in _package_modules() for v in _scan_for_torch_internals(module)]
    assert not violations, "torch internals or an `_apply` override used:\n" + "\n".join(violations)


def test_the_allowed_apply_override_is_the_frozen_backbone_holder():
    assert set(APPLY_OVERRIDES) <= set(_package_modules())
    source = (PACKAGE.parent / "percep_lightning/backbones/base.py").read_text()
    found = _torch_internals(source, "base.py")
    assert len(found) == 1 and found[0].endswith(" HoldsFrozen._apply override"), found


@pytest.mark.parametrize(
    "source",
    [
        "torch.ops.aten.threshold_backward(g, x, 0)",
        "torch._C._get_tracing_state()",
        "import torch._C",
        "from torch._C import _nn",
        "from torch import ops",
        "super()._apply(fn, exclude_state=('a',))",
        "kwargs['exclude_state'] = ()",
        "class A(nn.Module):\n    def _apply(self, fn, recurse=True):\n        return super()._apply(fn)",
    ],
)
def test_torch_scan_catches_internals(source):
    assert _torch_internals(source, "probe.py")


@pytest.mark.parametrize(
    "source",
    [
        "F.max_unpool2d(g, indices, 2, 2, output_size=size)",
        "module.apply(init)",
        "def _apply(x):\n    return x",
        "self.ops = []",
    ],
)
def test_torch_scan_leaves_public_api_alone(source):
    assert not _torch_internals(source, "probe.py")


@pytest.mark.parametrize(
    "source",
    [
        "self._computed = None",
        "metric._update_count += 1",
        "with self.sync_context(should_sync=self._to_sync): pass",
        "x = getattr(dataset, '_sampler', None)",
        "trainer._logger_connector.reset()",
        "pl_module._foo()",
        "from lightning.pytorch.utilities._pytree import tree_flatten",
        "from torchmetrics.image.fid import _compute_fid",
    ],
)
def test_scan_catches_private_uses(source):
    assert _violations(source, "probe.py")


@pytest.mark.parametrize(
    "source",
    [
        "self._hold('x', net)",
        "self._metrics = {}",
        "value = module.state_dict()",
        "from torchmetrics import Metric",
    ],
)
def test_scan_leaves_our_own_private_helpers_alone(source):
    assert not _violations(source, "probe.py")
