"""A TARGET folder's Inception statistics are cached: the second evaluation skips its pass; a changed file does not."""

from __future__ import annotations

import pytest
import torch
from conftest import save_images

from percep_lightning.backbones import FIDInceptionV3
from percep_lightning.evaluation import evaluate_report
from percep_lightning.metrics.stats_io import CACHE_FILE_PREFIX, read_cached_stats

pytestmark = pytest.mark.filterwarnings(
    "ignore:FID statistics from .* samples:UserWarning", "ignore:KID `subset_size`:UserWarning"
)


@pytest.fixture
def counted_forwards(monkeypatch):
    """The number of images each Inception forward of the evaluation receives."""
    return count_images(monkeypatch, FIDInceptionV3, "forward")


def count_images(monkeypatch, cls: type, method: str) -> list[int]:
    """Patch ``cls.method`` to record the batch size of every call; returns the (growing) list of sizes."""
    calls: list[int] = []
    original = getattr(cls, method)

    def counting(self, images):
        calls.append(int(images.shape[0]))
        return original(self, images)

    monkeypatch.setattr(cls, method, counting)
    return calls


@pytest.mark.slow
def test_second_evaluation_reuses_the_target_pass(tmp_path, photos, inception_weights, counted_forwards):
    save_images(tmp_path / "pred", photos(8, 32, dtype=torch.uint8)[4:])
    save_images(tmp_path / "target", photos(4, 32, dtype=torch.uint8))
    cache = tmp_path / "cache"

    def run(**options):
        counted_forwards.clear()
        report = evaluate_report(
            tmp_path / "pred", tmp_path / "target", metrics="fid,kid", kid_subsets=5, kid_subset_size=3,
            weights={"inception": inception_weights}, progress=False, device="cpu", batch_size=4,
            cache_dir=cache, **options,
        )  # fmt: skip
        return report.values(), sum(counted_forwards), report.settings.get("target_cache")

    first, images, note = run()
    assert (images, note) == (8, "computed")
    [entry] = cache.glob(f"{CACHE_FILE_PREFIX}*.npz")
    stored = read_cached_stats(entry)
    assert stored["num_samples"] == 4 and stored["features"].shape == (4, 2048)

    second, images, note = run()
    assert (images, note) == (4, "reused")  # only PRED_DIR went through the network
    assert second["fid"] == pytest.approx(first["fid"], rel=1e-9)
    assert second["kid"] == first["kid"] and second["kid_std"] == first["kid_std"]

    assert run(cache=False)[1:] == (8, None)

    # a changed file is another key: computed again, and a different value
    save_images(tmp_path / "target", photos(4, 32, dtype=torch.uint8)[:1].flip(-1), ["001.png"])
    changed, images, note = run()
    assert (images, note) == (8, "computed")
    assert changed["fid"] != pytest.approx(first["fid"], rel=1e-6)
    assert len(list(cache.glob(f"{CACHE_FILE_PREFIX}*.npz"))) == 2


@pytest.mark.slow
def test_every_network_of_the_target_side_is_cached(
    tmp_path, photos, inception_weights, counted_forwards, monkeypatch
):
    """FID on the Inception, FD-DINOv2 and PRDC on a (small, random) DINOv2: one cache entry per network, and
    the second evaluation runs only the generated images through either network, with the same values."""
    from percep_lightning.backbones import DINOv2, DINOv2Arch
    from percep_lightning.metrics.registry import BuildContext

    small = DINOv2(DINOv2Arch(32, 2, 2), weights=None)
    dino_images = count_images(monkeypatch, DINOv2, "extract_features")
    monkeypatch.setattr(BuildContext, "dinov2", lambda self: self.network("dinov2_vitl14", lambda: small))
    save_images(tmp_path / "pred", photos(8, 32, dtype=torch.uint8)[4:])
    save_images(tmp_path / "target", photos(4, 32, dtype=torch.uint8))
    cache = tmp_path / "cache"

    def run():
        counted_forwards.clear()
        dino_images.clear()
        report = evaluate_report(
            tmp_path / "pred", tmp_path / "target", metrics="fid,fd_dinov2,prdc", options={"prdc": {"k": 2}},
            weights={"inception": inception_weights, "dinov2_vitl14": "random"}, progress=False, device="cpu",
            batch_size=4, cache_dir=cache,
        )  # fmt: skip
        return report.values(), sum(counted_forwards), sum(dino_images), report.settings.get("target_cache")

    first = run()
    assert first[1:] == (8, 8, "computed")
    assert len(list(cache.glob(f"{CACHE_FILE_PREFIX}*.npz"))) == 2
    second = run()
    assert second[1:] == (4, 4, "reused")
    for name in ("fid", "fd_dinov2"):
        assert second[0][name] == pytest.approx(first[0][name], rel=1e-9)
    for name in ("precision", "recall", "density", "coverage"):
        assert second[0][name] == first[0][name]
