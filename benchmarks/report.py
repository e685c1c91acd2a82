"""Markdown rendering of the results and their insertion into ``benchmarks/README.md``."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import FLOOR, OURS, Row, Target, Timing


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "—"
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 1 else f"{ms:.2f}"


def _ratio(t: Timing, reference: Timing | None) -> str:
    if reference is None or not t.times or not reference.times:
        return "—"
    return f"{t.median / reference.median:.2f}x"


def _mib(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**20:.0f}"


def target_status(row: Row, target: Target) -> tuple[str, str, str, str]:
    """``(wall-time ratio, CPU-time ratio, reference name, "met" / "MISSED" / why not measured)``.

    The status follows the ratio of the wall-time medians; the CPU-time ratio (process time, all threads)
    is shown beside it because it is less disturbed by other processes on a shared machine.
    """
    ours, reference = row.ours, row.reference(target.against)
    if row.error or ours is None or not ours.times:
        why = row.error or (ours.error if ours else "no contender")
        return "—", "—", target.against, f"not measured ({why})"
    if reference is None or not reference.times:
        return "—", "—", target.against, "not measured (no reference timing)"
    if ours.agrees is False or reference.agrees is False:
        return "—", "—", reference.name, "not comparable (MISMATCH)"
    ratio = ours.median / reference.median
    cpu = ours.cpu_median / reference.cpu_median if ours.cpu_times and reference.cpu_times else math.nan
    cpu_text = "—" if math.isnan(cpu) else f"{cpu:.3f}x"
    return f"{ratio:.3f}x", cpu_text, reference.name, "met" if ratio <= target.limit else "MISSED"


def targets_table(rows: Sequence[Row]) -> str:
    lines = [
        "| Target | Compared with | Ratio of wall-time medians | Ratio of CPU-time medians | Status |",
        "|---|---|---:|---:|---|",
    ]
    for row in rows:
        if row.variant != "fp32":
            continue
        for target in row.targets:
            ratio, cpu, name, status = target_status(row, target)
            shown = f"**{status}**" if status != "met" else status
            lines.append(f"| {target.label} | {name} | {ratio} | {cpu} | {shown} |")
    return "\n".join(lines)


def results_table(rows: Sequence[Row]) -> str:
    lines = [
        "| Benchmark | Contender | Median ms | Min–max ms | vs fastest peer | vs floor | CPU-time median ms | Peak MiB "
        "| Check |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        title = f"**{row.name}**" + (f" [{row.variant}]" if row.variant != "fp32" else "") + f"<br>{row.what}"
        if row.error:
            lines.append(f"| {title} | — | — | — | — | — | — | — | ERROR: {row.error} |")
            continue
        fastest, floor = row.fastest_peer(), row.floor
        for i, t in enumerate(row.timings):
            name = f"**{t.name}**" if t.role == OURS else f"*{t.name}*" if t.role == FLOOR else t.name
            span = f"{_ms(t.min)}–{_ms(t.max)}" if t.times else "—"
            check = t.check if t.error is None else f"ERROR: {t.error}"
            cells = [title if i == 0 else "", name, _ms(t.median), span, _ratio(t, fastest)]
            cells += [_ratio(t, floor), _ms(t.cpu_median), _mib(t.peak_bytes), check]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(rows: Sequence[Row]) -> str:
    """One line per distinct (contender, note): phase rows of one benchmark share their contenders' notes."""
    out: dict[tuple[str, str], str] = {}
    for row in rows:
        for t in row.timings:
            if t.note and (t.name, t.note) not in out:
                out[(t.name, t.note)] = f"- {row.name} — {t.name}: {t.note}"
    return "\n".join(out.values())


def render(rows: Sequence[Row], header: str) -> str:
    parts = [header, "", "Targets (fp32):", "", targets_table(rows), "", "All rows:", "", results_table(rows)]
    extra = notes(rows)
    if extra:
        parts += ["", "Notes:", "", extra]
    return "\n".join(parts) + "\n"


def markers(block: str) -> tuple[str, str]:
    return f"<!-- results:{block}:start -->", f"<!-- results:{block}:end -->"


def write_block(path: Path, block: str, text_block: str) -> None:
    """Replace the results block ``block`` in ``path`` (the file is created if needed).

    ``block`` is ``"cuda"`` or ``"cpu:<kind>"``: each CPU kind keeps its own table, since the ratios move
    with the processor. A kind not in the file yet gets a new block after the last CPU block (or at the
    end of the file when there is none).
    """
    start, end = markers(block)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    new = f"{start}\n{text_block}{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
        path.write_text(text)
        return
    family = block.split(":")[0]
    ends = list(re.finditer(rf"<!-- results:{re.escape(family)}(:[^ ]*)?:end -->", text))
    if ends:
        cut = ends[-1].end()
        text = text[:cut] + "\n\n" + new + text[cut:]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    path.write_text(text)
