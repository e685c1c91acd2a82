"""Run by `torchrun`: evaluate's Python API with a user's 64-d extractor; process 0 writes the values as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the stub extractor

from _stub_extractor import StubExtractor  # noqa: E402

from percep_lightning.evaluation import evaluate_report  # noqa: E402
from percep_lightning.metrics import CMMD, PRDC, FrechetDistance, KernelDistance  # noqa: E402


def user_metrics() -> dict[str, object]:
    """The user's metrics on one 64-d stub extractor, the same in the one-process test and under torchrun."""
    net = StubExtractor()
    return {
        "fd": FrechetDistance(net),
        "kd": KernelDistance(net, subsets=10, subset_size=20),
        "cmmd": CMMD(net),
        "prdc": PRDC(net, k=3),
    }


def main(pred: str, target: str, out: str) -> None:
    report = evaluate_report(pred, target, metrics=user_metrics(), batch_size=7, device="cpu", progress=False)
    if report.rank == 0:
        Path(out).write_text(
            json.dumps({"values": report.values(), "world_size": report.settings["world_size"]})
        )


if __name__ == "__main__":
    main(*sys.argv[1:4])
