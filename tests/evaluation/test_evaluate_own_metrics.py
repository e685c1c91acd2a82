"""evaluate's Python API with the user's own metrics: a Fréchet / kernel distance on a 64-d stub extractor equals
the functional maths on its features, on one process and under torchrun on two; and --list-metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _stub_extractor import StubExtractor
from _user_metric_run import user_metrics
from conftest import save_images

from percep_lightning.evaluation import EvaluationError, evaluate
from percep_lightning.functional import cmmd, frechet_distance, kernel_inception_distance, prdc
from percep_lightning.metrics import PSNR, FrechetDistance, registry


@pytest.fixture
def crops(tmp_path, photos):
    """85 generated and 85 reference 24x24 crops of real photographs (more images than feature dimensions)."""
    pictures = photos(7, 96, dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)

    def crop(images, n):
        picks = torch.randint(0, images.shape[0], (n,), generator=generator)
        corners = torch.randint(0, 96 - 24, (n, 2), generator=generator)
        return torch.stack(
            [images[i, :, y : y + 24, x : x + 24] for i, (y, x) in zip(picks, corners, strict=True)]
        )

    pred, target = crop(pictures[4:], 85), crop(pictures[:4], 85)
    save_images(tmp_path / "pred", pred)
    save_images(tmp_path / "target", target)
    return tmp_path / "pred", tmp_path / "target", pred, target


def _expected(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        fake, real = (StubExtractor()(x.float() / 255) for x in (pred, target))

    def stats(features):
        x = features.double().numpy()
        return torch.from_numpy(x.mean(0)), torch.from_numpy(np.cov(x, rowvar=False))

    kd = kernel_inception_distance(real, fake, subsets=10, subset_size=20)
    values = prdc(real_features=real, fake_features=fake, k=3)
    return {
        "fd": float(frechet_distance(*stats(real), *stats(fake))),
        "kd": float(kd[0]),
        "kd_std": float(kd[1]),
        "cmmd": float(cmmd(real, fake)),
        **{f"prdc_{name}": float(value) for name, value in zip(values._fields, values, strict=True)},
    }


NAMES = ("fd", "kd", "kd_std", "cmmd", "prdc_precision", "prdc_recall", "prdc_density", "prdc_coverage")


def test_user_extractor_metrics_equal_the_functional_maths(crops):
    pred_dir, target_dir, pred, target = crops
    metrics = {**user_metrics(), "psnr": "psnr"}
    values = evaluate(pred_dir, target_dir, metrics=metrics, batch_size=7, progress=False)
    expected = _expected(pred, target)
    for name in NAMES:
        assert values[name] == pytest.approx(expected[name], rel=1e-9), name
    assert "psnr" in values


@pytest.mark.slow
def test_user_extractor_metrics_under_torchrun_equal_one_process(crops, tmp_path):
    pred_dir, target_dir, pred, target = crops
    script = Path(__file__).with_name("_user_metric_run.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = tmp_path / "two.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*torchrun, str(script), str(pred_dir), str(target_dir), str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["world_size"] == 2
    expected = _expected(pred, target)
    # The gathered float64 sums add the same terms in another order: equal to float64 round-off.
    for name in NAMES:
        assert two["values"][name] == pytest.approx(expected[name], rel=1e-9), name


def test_user_metric_errors(crops):
    pred_dir, target_dir, *_ = crops
    with pytest.raises(EvaluationError, match=r"Metric 'm': expected a registry name, a FrechetDistance"):
        evaluate(pred_dir, target_dir, metrics={"m": torch.nn.Identity()}, progress=False)
    mine = evaluate(
        pred_dir, target_dir, metrics={"psnr": PSNR(), "ssim": "ssim"}, batch_size=20, progress=False
    )
    assert mine["psnr"] == pytest.approx(
        evaluate(pred_dir, target_dir, metrics="psnr", progress=False)["psnr"]
    )
    with pytest.raises(EvaluationError, match=r"Metric 'fd' needs TARGET"):
        evaluate(pred_dir, None, metrics={"fd": FrechetDistance(StubExtractor())}, progress=False)
    with pytest.raises(EvaluationError, match=r"Metric 'lpips' takes no option splits; its options: net"):
        evaluate(pred_dir, target_dir, metrics="lpips", options={"lpips": {"splits": 2}}, progress=False)


def test_list_metrics_prints_every_registry_name():
    done = subprocess.run(
        [sys.executable, "-m", "percep_lightning", "evaluate", "--list-metrics"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == list(registry.METRICS)
    assert all(len(line.split(": ", 1)[1]) > 5 for line in lines)


def test_warnings_are_printed_on_rank_zero_only(photo_folders, monkeypatch, capsys):
    from percep_lightning.cli import main

    pred_dir, target_dir = photo_folders(2, 48)
    args = ["evaluate", str(pred_dir), str(target_dir), "--metrics", "lpips", "--weights", "alexnet=random"]
    args += ["--no-progress", "--num-workers", "0"]
    from percep_lightning.backbones import weights as weights_module

    # the random-weights warning is given once per process and network: forget earlier tests' networks
    monkeypatch.setattr(weights_module, "_warned_random", set())
    monkeypatch.setenv("RANK", "0")
    assert main(args) == 0
    assert "warning: alexnet backbone built with random weights" in capsys.readouterr().err
    monkeypatch.setattr(weights_module, "_warned_random", set())
    monkeypatch.setenv("RANK", "1")
    assert main(args) == 0
    assert "warning:" not in capsys.readouterr().err


def test_dists_by_name_in_evaluate_and_the_callback_equals_the_loss(
    photo_folders, torchvision_weights, photos
):
    from percep_lightning.callbacks import ImageMetricsCallback
    from percep_lightning.losses import DISTSLoss

    weights = str(torchvision_weights("vgg16"))
    pred_dir, target_dir = photo_folders(3, 32)
    value = evaluate(pred_dir, target_dir, metrics="dists", weights={"vgg16": weights}, progress=False)[
        "dists"
    ]
    from PIL import Image

    def read(folder):
        return torch.stack(
            [
                torch.from_numpy(np.asarray(Image.open(folder / f"{i:03d}.png"))).permute(2, 0, 1)
                for i in range(3)
            ]
        )

    loss = DISTSLoss(weights, reduction="none")
    expected = loss(read(pred_dir).double() / 255, read(target_dir).double() / 255).mean()
    assert value == pytest.approx(float(expected), rel=1e-5)  # float32 trunk against its float64 run
    assert ImageMetricsCallback(["dists"], weights={"vgg16": weights}).metric_names == ("dists",)


def test_random_backbones_do_not_depend_on_the_other_metrics(photo_folders):
    """Offline smoke runs are reproducible: each random network is seeded from its own name, not drawn from the
    global generator in construction order."""
    pred_dir, target_dir = photo_folders(2, 48)
    random = {"alexnet": "random", "vgg16": "random"}
    alone = evaluate(pred_dir, target_dir, metrics="lpips", weights=random, progress=False)
    torch.manual_seed(123)  # the caller's generator state plays no part either
    together = evaluate(pred_dir, target_dir, metrics="lpips_vgg,lpips", weights=random, progress=False)
    assert together["lpips"] == alone["lpips"]


def test_precision_and_recall_by_name_equal_the_prdc_package(crops, inception_weights):
    """``precision`` (an alias of ``prdc``) on the FID Inception's features: the four values of one neighbour-ball
    computation, equal to ``prdc.compute_prdc`` on the same network's features of the two folders."""
    import prdc as prdc_package

    from percep_lightning.backbones import FIDInceptionV3

    pred_dir, target_dir, pred, target = crops
    values = evaluate(
        pred_dir, target_dir, metrics="precision,recall", options={"prdc": {"features": "inception", "k": 3}},
        weights={"inception": inception_weights}, batch_size=17, progress=False,
    )  # fmt: skip
    assert set(values) == {"precision", "recall", "density", "coverage"}
    net = FIDInceptionV3(inception_weights)
    with torch.no_grad():
        real, fake = (net(x).pool3.double().numpy() for x in (target, pred))
    expected = prdc_package.compute_prdc(real, fake, nearest_k=3)
    for name in ("precision", "density"):
        assert round(values[name] * 85 * (3 if name == "density" else 1)) == round(
            expected[name] * 85 * (3 if name == "density" else 1)
        )
    for name in ("recall", "coverage"):
        assert round(values[name] * 85) == round(expected[name] * 85)
