"""Outputs of an evaluation: the stdout table, the ``--json`` record and the ``--per-image`` CSV.

Files are written atomically (a temporary file in the same folder, then renamed), so an interrupted run
leaves no half-written output; they get the permissions the umask gives any new file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from pathlib import Path

from percep_lightning._atomic import atomic_open
from percep_lightning.evaluation.runner import EvaluationReport, MetricResult

__all__ = ["format_table", "write_csv", "write_json"]


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.6g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.4e}"


def _count(result: MetricResult) -> str:
    """``n``, or ``n vs m`` for a metric comparing with a reference folder (``?`` when ``m`` is unknown)."""
    if result.reference is None:
        return str(result.n)
    return f"{result.n} vs {'?' if result.n_reference is None else result.n_reference}"


def format_table(report: EvaluationReport) -> str:
    """The results as an aligned text table: metric, value, ``±``, n, better direction.

    ``n`` is the number of pairs or predicted images; feature metrics that compare with a reference folder
    show ``n vs m`` (``m`` is ``?`` for a statistics file, which does not record its count).

    Example:
        >>> from percep_lightning.evaluation.runner import EvaluationReport, MetricResult
        >>> report = EvaluationReport([MetricResult("lpips", 0.25, 0.05, 2, False, "pairs")], {}, {}, {}, {})
        >>> print(format_table(report))
        metric  value  ±     n  better
        lpips   0.25   0.05  2  lower
    """
    header = ("metric", "value", "±", "n", "better")
    rows = [
        (r.name, _number(r.value), _number(r.std), _count(r), "higher" if r.higher_is_better else "lower")
        for r in report.results
    ]
    widths = [max(len(row[k]) for row in (header, *rows)) for k in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


def report_dict(report: EvaluationReport) -> dict:
    """The JSON record: values, ``±``, counts, settings, weights files (name, SHA-256), package versions."""
    return {
        "values": report.values(),
        "results": [
            {
                "metric": r.name,
                "value": r.value,
                "std": r.std,
                "std_over": r.spread,
                "n": r.n,
                "reference": r.reference,
                "n_reference": r.n_reference,
                "higher_is_better": r.higher_is_better,
            }
            for r in report.results
        ],
        "counts": report.counts,
        "settings": report.settings,
        "weights": {name: _with_hash(entry) for name, entry in report.weights.items()},
        "versions": report.versions,
    }


def _with_hash(entry: dict) -> dict:
    """A weights record with the SHA-256 of its file (hashed only when a JSON record is written)."""
    out = dict(entry)
    path = out.pop("path", None)
    if path is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        out["sha256"] = digest.hexdigest()
    return out


def _atomic_write(path: str | os.PathLike[str], text: str) -> None:
    folder = Path(path).expanduser().resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"Cannot write {str(path)!r}: folder {str(folder)!r} does not exist.")
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_json(report: EvaluationReport, path: str | os.PathLike[str]) -> None:
    """Write :func:`report_dict` as JSON (non-finite values as ``Infinity``/``NaN``, as Python's json)."""
    _atomic_write(path, json.dumps(report_dict(report), indent=2) + "\n")


def write_csv(report: EvaluationReport, path: str | os.PathLike[str]) -> None:
    """Write one row per pair: the file names, then each paired metric's value (full float precision).

    Raises:
        ValueError: if the evaluation had no paired metric.
    """
    if len(report.per_image_columns) <= 1:
        raise ValueError("--per-image needs a paired metric (psnr, ssim, ms_ssim, lpips, cfsd, ...).")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(report.per_image_columns)
    for row in report.per_image_rows:
        writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
    _atomic_write(path, buffer.getvalue())
