"""The benchmark entry point runs end to end at tiny sizes and produces every row, so it cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # every contender once, incl. a Lightning validation epoch and 2048-d FID


def _expected_rows() -> list[str]:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.callback_metrics import callback_benches
        from benchmarks.config import QUICK
        from benchmarks.dinov2 import dinov2_benches
        from benchmarks.distribution import distribution_benches
        from benchmarks.losses import loss_benches
        from benchmarks.metrics import metric_benches
    finally:
        sys.path.remove(str(ROOT))
    benches = [
        *loss_benches(QUICK, None),  # type: ignore[arg-type]
        *metric_benches(QUICK, None),  # type: ignore[arg-type]
        *distribution_benches(QUICK),
        *dinov2_benches(QUICK, None),  # type: ignore[arg-type]
        *callback_benches(QUICK, None),  # type: ignore[arg-type]
    ]
    return [phase.name for b in benches for phase in b.phases or ()] + [
        b.name for b in benches if not b.phases
    ]


def test_quick_run_writes_every_row(tmp_path: Path) -> None:
    output = tmp_path / "README.md"
    output.write_text("# Benchmarks\n\nkept text\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--threads", "2", "--output", str(output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    text = output.read_text()
    assert text.startswith("# Benchmarks\n\nkept text\n")  # only the results block is written
    assert re.search(r"<!-- results:cpu:[a-z0-9-]+:start -->(.|\n)*<!-- results:cpu:[a-z0-9-]+:end -->", text)
    assert "- Command: `python -m benchmarks --quick --threads 2 --output" in text
    assert "Machine: CPU" in text and "2 threads" in text and "ISA " in text
    for row in _expected_rows():
        assert f"**{row}**" in text, f"row {row!r} missing from the table"
    for target in ("SSIM <=", "MS-SSIM <=", "VGG perceptual <=", "LPIPS alex <=", "FID + IS epoch 1 <=",
                   "FID + IS epoch 2 <=", "FID compute", "FID + IS + KID epoch 1 <=", "FID + IS + KID epoch 2 <=",
                   "Streaming LPIPS in the callback <=", "DISTS <=", "PRDC <=", "DINOv2 <="):  # fmt: skip
        assert f"| {target}" in text, f"target {target!r} missing"
    table = text[text.index("All rows:") :]
    assert "ERROR" not in table, table
    assert "MISMATCH" not in table, table
    for name in ("percep_lightning", "pytorch-msssim", "piq", "kornia", "torchmetrics", "lpips 0.1.4",
                 "torch-fidelity", "floor: VGG19", "StyleID", "DISTS_pytorch", "floor: VGG16", "compute_prdc",
                 "reference formula, full float64", "bare timm ViT"):  # fmt: skip
        assert name in table, f"contender {name!r} missing"


def test_unknown_variant_is_refused() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--variants", "fp16", "--no-write"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Unknown variants ['fp16']" in result.stderr


def test_each_cpu_kind_keeps_its_own_table(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.report import write_block
        from benchmarks.run import cpu_kind
    finally:
        sys.path.remove(str(ROOT))
    intel = cpu_kind({"Model name": "Intel(R) Xeon(R) Processor", "CPU family": "6", "Model": "143"})
    amd = cpu_kind({"Model name": "AMD EPYC 7B13 64-Core Processor", "CPU family": "25", "Model": "1"})
    assert (intel, amd) == ("intel-xeon-f6m143", "amd-epyc-7b13-64-core-f25m1")
    readme = tmp_path / "README.md"
    readme.write_text("# B\n\n<!-- results:cuda:start -->\ngpu\n<!-- results:cuda:end -->\n")
    write_block(readme, f"cpu:{intel}", "intel 1\n")
    write_block(readme, f"cpu:{amd}", "amd\n")
    write_block(readme, f"cpu:{intel}", "intel 2\n")
    text = readme.read_text()
    assert "intel 1" not in text and text.index("intel 2") < text.index("amd") and "gpu" in text
