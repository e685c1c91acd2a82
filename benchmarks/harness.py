"""Timing, peak memory and correctness checks shared by every benchmark.

A benchmark (:class:`Bench`) builds its contenders (:class:`Contender`): ``percep_lightning`` ("ours"), the
peer packages, and optionally a "floor" (the bare work no implementation can avoid). Before anything is
timed, each peer's value is compared with ours; then every contender runs ``warmup`` times and ``reps``
timed times, interleaved (A B C, B C A, C A B, ...) so that a burst of load from other processes hits all
of them alike. The summary is the median with min and max.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import statistics
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

OURS, PEER, FLOOR = "ours", "peer", "floor"
VARIANTS = ("fp32", "bf16", "channels_last")


@dataclass(frozen=True)
class Env:
    """Where and how the contenders run: the device and the variant (fp32, bf16 autocast, channels_last)."""

    device: torch.device
    variant: str = "fp32"
    quick: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.variant == "channels_last" else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the ``bf16`` variant, nothing otherwise (contenders apply it to the forward)."""
        if self.variant == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def tensor(self, x: Tensor) -> Tensor:
        """``x`` on the device, channels-last for that variant (4-D tensors only)."""
        x = x.to(self.device)
        return x.contiguous(memory_format=self.memory_format) if x.ndim == 4 else x

    def module(self, m: torch.nn.Module) -> torch.nn.Module:
        return m.to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass
class Contender:
    """One implementation of a benchmarked operation.

    Attributes:
        name: what the table shows (``"percep_lightning"``, ``"pytorch-msssim"``, ``"floor: ..."``).
        role: :data:`OURS`, :data:`PEER` or :data:`FLOOR`.
        step: one timed repetition. It may return ``{phase: seconds}`` for benchmarks split in phases.
        value: the tensors the latest ``step`` produced, compared with ours (e.g. the loss and the input
            gradient); ``None`` for contenders that compute nothing comparable (the floor).
        convention: set for a peer known to follow a different convention (e.g. padding); its values are
            reported, not flagged as a mismatch.
        note: a short remark shown under the table (a callable is evaluated after timing).
    """

    name: str
    role: str
    step: Callable[[], Any]
    value: Callable[[], Sequence[Tensor]] | None = None
    convention: str | None = None
    note: str | Callable[[], str] = ""


@dataclass(frozen=True)
class Target:
    """A speed target: ``ours / against <= limit`` (``against``: a contender name, ``"fastest peer"``, ``"floor"``)."""

    label: str
    against: str
    limit: float


@dataclass(frozen=True)
class Phase:
    """A row made from phase times: ``mapping`` is ``{contender name: phase name}``."""

    name: str
    what: str
    mapping: dict[str, str]
    targets: tuple[Target, ...] = ()


@dataclass
class Bench:
    """A benchmarked operation.

    Attributes:
        key: a stable identifier (``--only`` selects by it).
        name: the row title.
        what: the workload (sizes, what one repetition does).
        build: ``build(env) -> contenders``; called once, may raise (the row then says so).
        reps, warmup: timed and untimed repetitions of every contender.
        rtol: the agreement required before timing, per compared tensor (the last one repeats), see
            :func:`compare`; for losses the tensors are the value and the gradient of ``preds``.
        memory: also measure each contender's peak memory (the largest over its timed repetitions).
        check: compare the values before timing (``False`` where a smaller row already checks the same code).
        targets: speed targets checked on this row.
        variants: whether the GPU variants (bf16 autocast, channels_last) apply.
        phases: for contenders whose step returns phase times: one :class:`Phase` per row to make.
    """

    key: str
    name: str
    what: str
    build: Callable[[Env], list[Contender]]
    reps: int
    warmup: int = 1
    rtol: tuple[float, ...] = (1e-4,)
    memory: bool = False
    check: bool = True
    targets: tuple[Target, ...] = ()
    variants: bool = True
    phases: list[Phase] | None = None


@dataclass
class Timing:
    """The measurements of one contender in one row."""

    name: str
    role: str
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    check: str = ""
    agrees: bool | None = None
    peak_bytes: int | None = None
    note: str = ""
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_times) if self.cpu_times else math.nan

    @property
    def min(self) -> float:
        return min(self.times) if self.times else math.nan

    @property
    def max(self) -> float:
        return max(self.times) if self.times else math.nan


@dataclass
class Row:
    """The result of one benchmark (one variant): a timing per contender."""

    key: str
    name: str
    what: str
    variant: str
    timings: list[Timing]
    targets: tuple[Target, ...] = ()
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def timing(self, name: str) -> Timing | None:
        return next((t for t in self.timings if t.name == name), None)

    @property
    def ours(self) -> Timing | None:
        return next((t for t in self.timings if t.role == OURS), None)

    def fastest_peer(self) -> Timing | None:
        """The fastest peer that ran and did not disagree with ours."""
        peers = [
            t for t in self.timings if t.role == PEER and t.times and t.agrees is not False and not t.error
        ]
        return min(peers, key=lambda t: t.median, default=None)

    @property
    def floor(self) -> Timing | None:
        """The fastest floor (torchvision's default layout or channels-last)."""
        floors = [t for t in self.timings if t.role == FLOOR and t.times]
        return min(floors, key=lambda t: t.median, default=None)

    def reference(self, against: str) -> Timing | None:
        if against == "fastest peer":
            return self.fastest_peer()
        if against == "floor":
            return self.floor
        return self.timing(against)


# --------------------------------------------------------------------------------------------- correctness


def compare(
    ours: Sequence[Tensor], theirs: Sequence[Tensor], rtols: Sequence[float]
) -> tuple[bool, list[float]]:
    """Whether two tuples of tensors agree, and the relative difference of each pair.

    The relative difference is ``||a - b|| / ||b||`` (Euclidean norms over all elements; for a scalar, the
    plain relative error); pair ``i`` agrees when it is at most ``rtols[i]`` (the last tolerance repeats).
    A norm-wise measure suits gradients through deep networks with random weights: a rounding difference
    can flip a ReLU whose input is ~0, which changes a few elements completely and the norm hardly at all.
    """
    if len(ours) != len(theirs):
        return False, [math.inf]
    agree, diffs = True, []
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        a = a.detach().to("cpu", torch.float64).reshape(-1)
        b = b.detach().to("cpu", torch.float64).reshape(-1)
        if a.numel() != b.numel() or not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            return False, [*diffs, math.inf]
        diff, scale = float((a - b).norm()), float(b.norm())
        rel = diff / scale if scale > 0 else diff
        diffs.append(rel)
        agree = agree and rel <= rtols[min(i, len(rtols) - 1)]
    return agree, diffs


def _check(
    bench: Bench, env: Env, contenders: list[Contender], timings: dict[str, Timing], *, run: bool = True
) -> None:
    """Fill ``check`` and ``agrees`` of every timing by comparing each peer's values with ours.

    With ``run`` every contender first runs one untimed step (which is also a warm-up); otherwise the
    values of the latest timed step are compared.
    """
    values: dict[str, Sequence[Tensor]] = {}
    for c in contenders:
        if c.value is None:
            timings[c.name].check = "n/a" if c.role == FLOOR else "not checked"
            continue
        if timings[c.name].error is not None:
            continue
        try:
            if run:
                c.step()
            values[c.name] = tuple(c.value())
        except Exception as err:  # noqa: BLE001 (a broken contender is reported in its row, not fatal)
            timings[c.name].error = _describe(err)
    ours = next((c for c in contenders if c.role == OURS), None)
    if ours is None or ours.name not in values:
        return
    timings[ours.name].check = "reference"
    rtols = bench.rtol
    for c in contenders:
        if c.role != PEER or c.name not in values:
            continue
        agrees, diffs = compare(values[ours.name], values[c.name], rtols)
        shown = ", ".join(f"{d:.0e}" for d in diffs)
        limits = ", ".join(f"{r:.0e}" for r in rtols[: len(diffs)])
        timing = timings[c.name]
        if env.variant == "bf16":
            timing.check = f"under bf16 autocast: rel. diff {shown} (the fp32 rows check correctness)"
            timing.agrees = None
        elif c.convention is not None:
            timing.check = f"different convention ({c.convention}): rel. diff {shown}"
            timing.agrees = None
        elif agrees:
            timing.check = f"ok (rel. diff {shown})"
            timing.agrees = True
        else:
            timing.check = f"MISMATCH (rel. diff {shown} > {limits})"
            timing.agrees = False


# --------------------------------------------------------------------------------------------- timing


def _rounds(
    bench: Bench, env: Env, contenders: list[Contender], timings: dict[str, Timing]
) -> dict[str, list]:
    """Warm-up, then ``reps`` interleaved rounds; returns each contender's step results per round."""
    live = [c for c in contenders if timings[c.name].error is None]
    results: dict[str, list] = {c.name: [] for c in live}

    def run_once(c: Contender, record: bool) -> None:
        try:
            with peak_memory(env) if record and bench.memory else contextlib.nullcontext([None]) as peak:
                env.sync()
                start, cpu_start = time.perf_counter(), time.process_time()
                out = c.step()
                env.sync()
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        except Exception as err:  # noqa: BLE001
            timings[c.name].error = _describe(err)
            return
        if peak[0] is not None:
            timings[c.name].peak_bytes = max(peak[0], timings[c.name].peak_bytes or 0)
        if record:
            timings[c.name].times.append(elapsed)
            if env.device.type == "cpu":  # process time says nothing about asynchronous GPU work
                timings[c.name].cpu_times.append(cpu)
            if isinstance(out, dict):  # phase times
                results[c.name].append(out)

    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(bench.warmup):
            for c in live:
                if timings[c.name].error is None:
                    run_once(c, record=False)
        for r in range(bench.reps):
            shift = r % len(live) if live else 0
            for c in live[shift:] + live[:shift]:
                if timings[c.name].error is None:
                    run_once(c, record=True)
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return results


def run_bench(bench: Bench, env: Env, log: Callable[[str], None] = print) -> list[Row]:
    """Build, check, time (and measure the memory of) one benchmark; one row, or one per phase row."""
    log(f"[{env.variant}] {bench.name}: {bench.what}")
    try:
        contenders = bench.build(env)
    except Exception as err:  # noqa: BLE001
        log(f"  could not build: {_describe(err)}")
        return [Row(bench.key, bench.name, bench.what, env.variant, [], bench.targets, error=_describe(err))]
    timings = {c.name: Timing(c.name, c.role) for c in contenders}
    if not bench.check:
        for t in timings.values():
            t.check = "not checked here"
    if env.quick:  # smoke test: one timed repetition, whose values are then compared
        results = _rounds(replace(bench, reps=1, warmup=0), env, contenders, timings)
        if bench.check:
            _check(bench, env, contenders, timings, run=False)
    else:
        if bench.check:
            _check(bench, env, contenders, timings)
        results = _rounds(bench, env, contenders, timings)
    for c in contenders:
        try:
            timings[c.name].note = c.note() if callable(c.note) else c.note
        except Exception as err:  # noqa: BLE001
            timings[c.name].note = f"(note failed: {_describe(err)})"
    for t in timings.values():
        line = f"  {t.name:<36} " + (
            f"median {t.median * 1e3:9.1f} ms  [{t.min * 1e3:.1f}, {t.max * 1e3:.1f}]  {t.check}"
            + (f"  peak {t.peak_bytes / 2**20:.0f} MiB" if t.peak_bytes is not None else "")
            if t.times
            else f"error: {t.error}"
        )
        log(line)
    if bench.phases is None:
        return [Row(bench.key, bench.name, bench.what, env.variant, list(timings.values()), bench.targets)]
    return _phase_rows(bench, env, timings, results)


def _phase_rows(bench: Bench, env: Env, timings: dict[str, Timing], results: dict[str, list]) -> list[Row]:
    """Turn contenders that returned ``{phase: seconds}`` into one row per phase mapping."""
    rows = []
    for index, phase_row in enumerate(bench.phases or ()):
        phase_timings = []
        for contender, phase in phase_row.mapping.items():
            base = timings[contender]
            t = Timing(
                base.name, base.role, check=base.check, agrees=base.agrees, note=base.note, error=base.error
            )
            outs = [out for out in results.get(contender, []) if phase in out]
            t.times = [out[phase] for out in outs]
            if env.device.type == "cpu":
                t.cpu_times = [out[f"{phase} cpu"] for out in outs if f"{phase} cpu" in out]
            t.peak_bytes = base.peak_bytes
            phase_timings.append(t)
        rows.append(
            Row(
                f"{bench.key}:{index}",
                phase_row.name,
                phase_row.what,
                env.variant,
                phase_timings,
                phase_row.targets,
            )
        )
    return rows


# --------------------------------------------------------------------------------------------- memory


@contextlib.contextmanager
def peak_memory(env: Env) -> Iterator[list[int | None]]:
    """Peak memory added inside the block, in bytes, yielded as a one-element list filled on exit.

    On a GPU: the CUDA allocator's peak above what was allocated before. On the CPU: the growth of the
    resident set's high-water mark (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) after
    ``malloc_trim``; ``None`` where ``/proc`` does not allow it. The setup runs outside any timer.
    """
    holder: list[int | None] = [None]
    gc.collect()
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(env.device)
        base = torch.cuda.memory_allocated(env.device)
        yield holder
        torch.cuda.synchronize(env.device)
        holder[0] = int(torch.cuda.max_memory_allocated(env.device) - base)
        return
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        base = _status_kib("VmRSS")
    except OSError:
        base = None
    yield holder
    if base is not None:
        peak = _status_kib("VmHWM")
        holder[0] = None if peak is None else max(0, peak - base) * 1024


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _describe(err: BaseException) -> str:
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text[:160]}{where}"
