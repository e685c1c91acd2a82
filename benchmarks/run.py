"""Run every benchmark in one process and write the markdown table to ``benchmarks/README.md``.

Usage::

    python -m benchmarks                      # full CPU run, writes this CPU kind's table in benchmarks/README.md
    python -m benchmarks --device cuda        # GPU: fp32, bf16 autocast and channels_last, the CUDA block
    python -m benchmarks --quick --output /tmp/bench.md   # tiny sizes, one repetition (the test uses it)
    python -m benchmarks --only ssim,lpips    # a subset (keys or prefixes, see --list)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.assets import Assets
from benchmarks.callback_metrics import callback_benches
from benchmarks.config import FULL_CPU, FULL_CUDA, QUICK, Config
from benchmarks.dinov2 import dinov2_benches
from benchmarks.distribution import distribution_benches
from benchmarks.evaluation import evaluation_benches
from benchmarks.harness import VARIANTS, Bench, Env, Row, run_bench
from benchmarks.losses import loss_benches
from benchmarks.metrics import metric_benches
from benchmarks.report import render, write_block

README = Path(__file__).resolve().parent / "README.md"
PACKAGES = (
    "percep-lightning", "pytorch-msssim", "piq", "kornia", "torchmetrics", "lpips", "torch-fidelity", "dists-pytorch",
    "prdc", "timm",
)  # fmt: skip


def all_benches(cfg: Config, assets: Assets) -> list[Bench]:
    return [
        *loss_benches(cfg, assets),
        *metric_benches(cfg, assets),
        *distribution_benches(cfg),
        *dinov2_benches(cfg, assets),
        *callback_benches(cfg, assets),
        *evaluation_benches(cfg, assets),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repetition (smoke test)")
    parser.add_argument("--only", default="", help="comma-separated benchmark keys or key prefixes")
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated subset of {VARIANTS} (default: fp32 on CPU, all on CUDA)",
    )
    parser.add_argument(
        "--output", type=Path, default=None,
        help="markdown file to update (default: benchmarks/README.md, except with --quick or --only)",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=N",
        help="override a size of the configuration (benchmarks/config.py), e.g. --set gan_images=200",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmark keys and exit")
    return parser.parse_args(argv)


def override(cfg: Config, items: Sequence[str]) -> Config:
    """``cfg`` with ``FIELD=N`` integer overrides (``--set``)."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes: dict[str, int] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in fields or not value.lstrip("-").isdigit():
            raise ValueError(
                f"Expected --set FIELD=N with FIELD one of {', '.join(sorted(fields))}, but got {item!r}."
            )
        changes[name] = int(value)
    return dataclasses.replace(cfg, **changes)


def cpu_model() -> dict[str, str]:
    """``lscpu``'s identification of the processor (``/proc/cpuinfo`` where ``lscpu`` is missing)."""
    fields = {
        "Model name": "model name",
        "Vendor ID": "vendor_id",
        "CPU family": "cpu family",
        "Model": "model",
    }
    found: dict[str, str] = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in fields and key.strip() not in found:
                found[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            with open("/proc/cpuinfo") as f:
                info = dict(
                    (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in f if ":" in line)
                )
            found = {name: info[key] for name, key in fields.items() if key in info}
        except OSError:
            pass
    found.setdefault("Model name", platform.processor() or platform.machine())
    return found


def cpu_kind(model: dict[str, str]) -> str:
    """A short key for a CPU kind (model name, family and model number): one results table per kind."""
    name = re.sub(r"\((r|tm)\)|\bprocessor\b|\bcpu\b", "", model["Model name"].lower())
    name = "-".join(re.findall(r"[a-z0-9]+", name))
    if "CPU family" in model and "Model" in model:
        name += f"-f{model['CPU family']}m{model['Model']}"
    return name


def machine(device: torch.device, threads: int, model: dict[str, str]) -> str:
    ident = ", ".join(f"{k} {v}" for k, v in model.items() if k != "Model name")
    cpu = model["Model name"] + (
        f" ({ident}; ISA {torch.backends.cpu.get_cpu_capability()})" if ident else ""
    )
    text = f"CPU {cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, {threads} threads"
    text += " (`torch.set_num_threads`)"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return text + f", device `{device}`, Python {platform.python_version()}"


def versions() -> str:
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def command(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    entry = "python -m benchmarks" if __package__ not in (None, "") else "python benchmarks/run.py"
    return " ".join([entry, *args])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available.", file=sys.stderr)
        return 2
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    cfg = QUICK if args.quick else FULL_CUDA if device.type == "cuda" else FULL_CPU
    try:
        cfg = override(cfg, args.set)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    variants = (
        args.variants.split(",") if args.variants else (list(VARIANTS) if device.type == "cuda" else ["fp32"])
    )
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"Unknown variants {unknown}; choose from {VARIANTS}.", file=sys.stderr)
        return 2

    assets = Assets()
    try:
        benches = all_benches(cfg, assets)
        if args.list:
            print("\n".join(f"{b.key:<14} {b.name}" for b in benches))
            return 0
        selected = [k for k in args.only.split(",") if k]
        if selected:
            benches = [b for b in benches if any(b.key == k or b.key.startswith(k) for k in selected)]
        started = time.perf_counter()
        load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
        rows: list[Row] = []
        for variant in variants:
            env = Env(device, variant, quick=args.quick)
            for bench in benches:
                if variant == "fp32" or bench.variants:
                    rows += run_bench(bench, env, log=lambda line: print(line, flush=True))
        elapsed = time.perf_counter() - started
        load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    finally:
        assets.close()

    model = cpu_model()
    load = ""
    if load_start and load_end:
        load = f" Load average (1 min) {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end."
    header = "\n".join(
        [
            f"Run of {datetime.date.today().isoformat()}, {elapsed / 60:.1f} min in all"
            + (" (--quick: tiny sizes, one repetition; not a measurement)" if args.quick else "")
            + ".",
            "",
            f"- Command: `{command(argv)}`",
            f"- Machine: {machine(device, threads, model)}.{load}",
            f"- Packages: {versions()}.",
        ]
    )
    text = render(rows, header)
    block = device.type if device.type != "cpu" else f"cpu:{cpu_kind(model)}"
    print(text)
    output = args.output
    if output is None and not (args.quick or selected):
        output = README
    if output is not None and not args.no_write:
        write_block(output, block, text)
        print(f"Wrote the {block} results to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
