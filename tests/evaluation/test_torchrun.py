"""`torchrun --nproc_per_node=2 -m percep_lightning evaluate` (2 CPU processes, gloo) equals one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:FID statistics from .* samples:UserWarning")


def _run(command: list[str], tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # what torchrun gives each process; one process alike
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_give_the_single_process_values(
    tmp_path, photo_folders, inception_weights, torchvision_weights
):
    pred, target = photo_folders(5, 48)  # 5 pairs: the shards hold 3 and 2
    args = [
        "evaluate", str(pred), str(target), "--metrics", "psnr,ssim,lpips,fid,is,kid", "--is-splits", "2",
        "--kid-subsets", "4", "--kid-subset-size", "3",
        "--weights", f"inception={inception_weights}", f"alexnet={torchvision_weights('alexnet')}",
        "--batch-size", "1", "--num-workers", "0", "--device", "cpu", "--no-progress",
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    single, multi, again = tmp_path / "single.json", tmp_path / "multi.json", tmp_path / "again.json"
    # 2 processes compute TARGET's statistics and cache them; 2 processes again reuse them
    _run([*torchrun, "-m", "percep_lightning", *args, "--json", str(multi), "--per-image", "m.csv"], tmp_path)
    _run([*torchrun, "-m", "percep_lightning", *args, "--json", str(again)], tmp_path)
    _run(
        [
            sys.executable,
            "-m",
            "percep_lightning",
            *args,
            "--json",
            str(single),
            "--per-image",
            "s.csv",
            "--no-cache",
        ],
        tmp_path,
    )
    one, two, reused = (json.loads(p.read_text()) for p in (single, multi, again))
    assert two["settings"]["world_size"] == 2 and one["settings"]["world_size"] == 1
    assert (two["settings"]["target_cache"], reused["settings"]["target_cache"]) == ("computed", "reused")
    assert set(one["values"]) == {"psnr", "ssim", "lpips", "fid", "is", "is_std", "kid", "kid_std"}
    for name, value in one["values"].items():
        assert two["values"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
        assert reused["values"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert [r["n"] for r in two["results"]] == [5] * 6
    assert (tmp_path / "s.csv").read_text() == (tmp_path / "m.csv").read_text()
