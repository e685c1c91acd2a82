"""Evaluation of saved images: folders in, the metric tables papers report out.

``evaluate(pred_dir, target, ...)`` returns ``{metric: value}``; ``evaluate_report`` adds counts, per-pair
values, settings, weights hashes and versions; ``folder_statistics`` writes a folder's FID statistics as a
pytorch-fid ``.npz``. The ``percep-lightning evaluate`` and ``percep-lightning stats`` commands call them.
Everything loads on first use, so importing this package stays cheap.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "EvaluationError": "percep_lightning.evaluation.errors",
    "EvaluationReport": "percep_lightning.evaluation.runner",
    "MetricResult": "percep_lightning.evaluation.runner",
    "evaluate": "percep_lightning.evaluation.runner",
    "evaluate_report": "percep_lightning.evaluation.runner",
    "folder_statistics": "percep_lightning.evaluation.runner",
    "METRICS": "percep_lightning.evaluation.table",
    "PRESETS": "percep_lightning.evaluation.table",
    "MetricSpec": "percep_lightning.evaluation.table",
    "IMAGE_EXTENSIONS": "percep_lightning.evaluation.files",
    "list_images": "percep_lightning.evaluation.files",
    "pair_files": "percep_lightning.evaluation.pairing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
