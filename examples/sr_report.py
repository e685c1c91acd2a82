"""The end-of-run report: a per-epoch table of the logged metrics and a PNG plot of them."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

History = dict[int, dict[str, float]]
"""``{epoch: {metric name: value}}``."""

PLOTTED_METRICS = ("val/fid", "val/is", "val/cfsd", "val/psnr")


def read_history(metrics_csv: str | Path) -> tuple[History, list[dict[str, float]]]:
    """Read a Lightning ``CSVLogger`` ``metrics.csv``.

    Returns:
        ``(epochs, steps)``: the epoch-level values (``val/*`` and training values aggregated over the
        epoch, with Lightning's ``_epoch`` suffix removed), and one dict per logged training step
        (``_step`` suffix removed), each with its ``"step"``.
    """
    epochs: History = {}
    steps: list[dict[str, float]] = []
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            values = {
                k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")
            }
            if not values or row.get("epoch") in ("", None):
                continue
            epoch = int(float(row["epoch"]))
            step_values = {k.removesuffix("_step"): v for k, v in values.items() if k.endswith("_step")}
            if step_values:
                steps.append({"step": float(row["step"]), **step_values})
            epoch_values = {k.removesuffix("_epoch"): v for k, v in values.items() if not k.endswith("_step")}
            epochs.setdefault(epoch, {}).update(epoch_values)
    return epochs, steps


def _ordered_columns(epochs: History) -> list[str]:
    names = {k for values in epochs.values() for k in values}
    val = sorted(k for k in names if k.startswith("val/"))
    rest = sorted(names - set(val))
    return val + rest


def _format(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def format_table(epochs: History, title: str = "Validation metrics and training loss parts per epoch") -> str:
    """A plain-text table with one row per epoch and one column per metric."""
    columns = _ordered_columns(epochs)
    rows = [[str(e)] + [_format(epochs[e].get(c)) for c in columns] for e in sorted(epochs)]
    header = ["epoch", *columns]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))] if rows else []
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _loss_points(
    part: str, epochs: History, steps: Sequence[Mapping[str, float]]
) -> tuple[str, list[tuple[float, float]]]:
    points = [(s["step"], s[part]) for s in steps if part in s]
    if points:
        return "step", points
    return "epoch", [(e, v[part]) for e, v in sorted(epochs.items()) if part in v]


def plot_history(
    epochs: History,
    steps: Sequence[Mapping[str, float]],
    path: str | Path,
    loss_prefix: str = "train/loss/",
    metrics: Sequence[str] = PLOTTED_METRICS,
    note: str | None = None,
) -> Path:
    """Plot the training loss parts and each validation metric over epochs into the PNG ``path``.

    ``note``, if given, is printed above the panels (e.g. that the backbones were random).

    The loss parts are drawn per logged step when step values exist (per epoch otherwise), on a log
    scale; ``val/is`` gets error bars from ``val/is_std`` when it was logged.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {k for s in steps for k in s} | {k for values in epochs.values() for k in values}
    parts = sorted(k for k in names if k.startswith(loss_prefix))
    present = [m for m in metrics if any(m in values for values in epochs.values())]
    columns = max(1, math.ceil(len(present) / 2))
    fig = plt.figure(figsize=(4.2 + 2.6 * columns, 4.4))
    grid = fig.add_gridspec(2, 1 + columns, width_ratios=[1.6] + [1] * columns)
    ax = fig.add_subplot(grid[:, 0])
    xlabel, positive = "epoch", True
    for part in parts:
        xlabel, points = _loss_points(part, epochs, steps)
        x, y = zip(*points, strict=True)
        positive = positive and min(y) > 0
        ax.plot(x, y, label=part.removeprefix(loss_prefix), lw=1.2)
    ax.set_title("training loss parts (unweighted)", fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    if parts:
        ax.legend(fontsize=7)
        if positive:
            ax.set_yscale("log")
    axes = [ax]
    for i, name in enumerate(present):
        ax = fig.add_subplot(grid[i % 2, 1 + i // 2])
        x, y = zip(*[(e, v[name]) for e, v in sorted(epochs.items()) if name in v], strict=True)
        std = [epochs[e].get(f"{name}_std") for e in x]
        if all(s is not None for s in std):
            ax.errorbar(x, y, yerr=std, marker="o", capsize=3, lw=1.2)
        else:
            ax.plot(x, y, marker="o", lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        axes.append(ax)
    for ax in axes:
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if note:
        fig.suptitle(note, fontsize=9, color="firebrick")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
