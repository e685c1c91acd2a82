"""ImageMetricsCallback: logging, duplicates of DistributedSampler, max_samples, schedules, caching, resume."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _ddp_module import PairDataset, Recorder, TinyModule, fit, loaders
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, DistributedSampler

import percep_lightning.callbacks.image_metrics as image_metrics
import percep_lightning.metrics.fid as fid_module
from percep_lightning.backbones import FIDInceptionV3, InceptionFeatures
from percep_lightning.callbacks.image_metrics import ImageMetricsCallback

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:FID statistics from .* samples:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*random weights.*:UserWarning"),
]


class CheapInception(FIDInceptionV3):
    """The FID Inception with a cheap stand-in forward: per-image features of the right shapes."""

    def __init__(self, weights=None, resize="tensorflow"):
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(0)  # the same "weights" in every instance, as a weights file would give
            super().__init__(weights=None, resize=resize)

    def forward(self, images):
        v = F.adaptive_avg_pool2d(images.float() / 255, (16, 16)).flatten(1)  # (N, 768)
        pool3 = torch.cat([v, v.square(), v.sin()], dim=1)[:, :2048]
        return InceptionFeatures(pool3, 10 * pool3[:, :1008])


_CHEAP: dict[str, CheapInception] = {}


def _cheap_inception(weights=None, resize="tensorflow"):
    if resize not in _CHEAP:  # built once per session: construction, not the forward, is the cost here
        _CHEAP[resize] = CheapInception(resize=resize)
    return _CHEAP[resize]


@pytest.fixture
def cheap(monkeypatch):
    """Cheap Inception and Fréchet distance for tests of the plumbing (the maths is tested elsewhere)."""
    monkeypatch.setattr(image_metrics, "FIDInceptionV3", _cheap_inception)
    monkeypatch.setattr(
        fid_module,
        "frechet_distance",
        lambda mu1, s1, mu2, s2: (mu1 - mu2).square().sum() + (s1 - s2).abs().sum(),
    )


def _trainer(tmp_path, callbacks, **kwargs):
    options = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    options.update(kwargs)
    return Trainer(callbacks=callbacks, **options)


def _validate_with_sampler(tmp_path, callback, n, batch_size, world, rank, **sampler_kwargs):
    """Run one validation as process ``rank`` of ``world`` would see it (a DistributedSampler, one process)."""
    dataset = PairDataset(n)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False, **sampler_kwargs)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    _trainer(tmp_path, [callback]).validate(TinyModule(), loader, verbose=False)
    return callback


@pytest.mark.parametrize(("n", "batch_size", "world"), [(7, 2, 2), (10, 3, 3)])
def test_distributed_sampler_duplicates_are_dropped(tmp_path, cheap, n, batch_size, world):
    """Each dataset sample counts exactly once over the ranks; FID sums equal the single-process sums."""
    kwargs = dict(metrics=("fid", "is"), is_splits=1, cache_real_stats=False)
    single = _validate_with_sampler(tmp_path, ImageMetricsCallback(**kwargs), n, batch_size, 1, 0)
    ranks = [
        _validate_with_sampler(tmp_path, ImageMetricsCallback(**kwargs), n, batch_size, world, r)
        for r in range(world)
    ]
    assert sum(int(cb._fid.fake_num_samples) for cb in ranks) == n
    assert sum(int(cb._fid.real_num_samples) for cb in ranks) == n
    torch.testing.assert_close(sum(cb._fid.fake_outer_sum for cb in ranks), single._fid.fake_outer_sum)
    torch.testing.assert_close(sum(cb._fid.real_features_sum for cb in ranks), single._fid.real_features_sum)
    positions = torch.cat([torch.cat(cb._is.indices) for cb in ranks if cb._is.indices])
    assert sorted(positions.tolist()) == list(range(n))
    logits = torch.cat([torch.cat(cb._is.logits) for cb in ranks if cb._is.logits])
    torch.testing.assert_close(logits[positions.argsort()], torch.cat(single._is.logits))


@pytest.mark.parametrize("world", [1, 3])
def test_max_samples_keeps_the_first_samples_on_any_world_size(tmp_path, cheap, world):
    ranks = [
        _validate_with_sampler(
            tmp_path, ImageMetricsCallback(metrics=("is",), is_splits=1, max_samples=4), 9, 2, world, r
        )
        for r in range(world)
    ]
    positions = torch.cat([torch.cat(cb._is.indices) for cb in ranks if cb._is.indices])
    assert sorted(positions.tolist()) == [0, 1, 2, 3]


def test_drop_last_sampler_has_no_duplicates(tmp_path, cheap):
    ranks = [
        _validate_with_sampler(
            tmp_path, ImageMetricsCallback(metrics=("is",), is_splits=1), 7, 2, 2, r, drop_last=True
        )
        for r in range(2)
    ]
    assert sum(int(torch.cat(cb._is.indices).numel()) for cb in ranks) == 6


def test_logs_every_metric_each_epoch(tmp_path, cheap, torchvision_weights):
    recorder = fit(
        {"is_splits": 2, "vgg_weights": torchvision_weights("vgg19"), "content_key": "content"},
        str(tmp_path),
        n_val=5,
        max_epochs=2,
    )
    assert set(recorder.values) == {0, 1}
    for values in recorder.values.values():
        assert set(values) == {"val/fid", "val/is", "val/is_std", "val/cfsd"}
        assert all(np.isfinite(v) for v in values.values())
    assert recorder.values[0] == recorder.values[1]  # same images, cached real statistics


def test_extractor_prefix_every_n_epochs_and_no_sanity_check(tmp_path, cheap):
    def extractor(outputs, batch):
        return {"fake": outputs["preds"], "real": batch[1]}

    callback = ImageMetricsCallback(
        metrics=("fid",),
        preds_key="fake",
        target_key="real",
        extractor=extractor,
        every_n_epochs=2,
        prefix="eval_",
        cache_real_stats=False,
    )
    active = []

    class Spy(Recorder):
        def on_validation_epoch_start(self, trainer, pl_module):
            active.append((trainer.sanity_checking, trainer.current_epoch, callback._active))

    trainer = _trainer(tmp_path, [callback, Spy()], max_epochs=4, num_sanity_val_steps=2)
    train, val = loaders(5)
    trainer.fit(TinyModule(), train, val)
    assert active == [
        (True, 0, False),
        (False, 0, False),
        (False, 1, True),
        (False, 2, False),
        (False, 3, True),
    ]
    assert callback._num_real_forwarded == 10  # 5 images in epochs 1 and 3, none in the sanity check
    assert [k for k in trainer.callback_metrics if k.startswith("eval_")] == ["eval_fid"]


def test_real_statistics_are_cached_and_invalidated(tmp_path, cheap):
    callback = ImageMetricsCallback(metrics=("fid",))
    trainer = _trainer(tmp_path, [callback], max_epochs=3)
    train, val = loaders(5)
    trainer.fit(TinyModule(), train, val)
    assert callback._num_real_forwarded == 5 and callback.real_stats_cached

    # another validation set of the same size: the key changes, the statistics are recomputed
    other = DataLoader(PairDataset(5, seed=3), batch_size=2)
    _trainer(tmp_path, [callback]).validate(TinyModule(), other, verbose=False)
    assert callback._num_real_forwarded == 10


class ShiftingModule(TinyModule):
    """Targets that change from epoch to epoch although the dataset does not (e.g. random augmentation)."""

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        out["target"] = (out["target"] * (1 - 0.1 * self.current_epoch)).clamp(0, 1)
        return out


def test_changed_targets_switch_caching_off(tmp_path, cheap):
    callback = ImageMetricsCallback(metrics=("fid",))
    trainer = _trainer(tmp_path, [callback], max_epochs=3)
    train, val = loaders(4)
    with pytest.warns(UserWarning, match="differ from those the cached real FID statistics"):
        trainer.fit(ShiftingModule(), train, val)
    assert callback._num_real_forwarded == 8  # epoch 0, then (after the warning at epoch 1) epoch 2
    assert not callback.real_stats_cached


def test_real_stats_dir_round_trip(tmp_path, cheap):
    stats_dir = tmp_path / "stats"
    first = fit({"metrics": ("fid",), "real_stats_dir": stats_dir}, str(tmp_path), n_val=4)
    files = list(stats_dir.glob("fid_real_stats-*.npz"))
    assert len(files) == 1 and not list(stats_dir.glob(".*"))  # no temporary file left
    with np.load(files[0]) as archive:  # the pytorch-fid format
        assert archive["mu"].shape == (2048,) and archive["sigma"].shape == (2048, 2048)
        assert int(archive["num_samples"]) == 4

    callback = ImageMetricsCallback(metrics=("fid",), real_stats_dir=stats_dir)
    recorder = Recorder()
    train, val = loaders(4)
    _trainer(tmp_path, [callback, recorder]).fit(TinyModule(), train, val)
    assert callback._num_real_forwarded == 0
    assert recorder.values[0]["val/fid"] == first.values[0]["val/fid"]

    # different resize or sample count: another file, never the stale one
    fit({"metrics": ("fid",), "real_stats_dir": stats_dir, "resize": "bilinear"}, str(tmp_path), n_val=4)
    fit({"metrics": ("fid",), "real_stats_dir": stats_dir, "max_samples": 3}, str(tmp_path), n_val=4)
    assert len(list(stats_dir.glob("fid_real_stats-*.npz"))) == 3


def test_checkpoint_resume_restores_cached_statistics(tmp_path, cheap):
    """A run stopped after epoch 0 and resumed logs the same epoch-1 values without recomputing the reals."""
    train, val = loaders(5)
    uninterrupted = Recorder()
    _trainer(tmp_path, [ImageMetricsCallback(metrics=("fid",)), uninterrupted], max_epochs=2).fit(
        TinyModule(), train, val
    )

    first = _trainer(tmp_path, [ImageMetricsCallback(metrics=("fid",))], max_epochs=1)
    first.fit(TinyModule(), train, val)
    ckpt = tmp_path / "epoch0.ckpt"
    first.save_checkpoint(ckpt)

    resumed_callback = ImageMetricsCallback(metrics=("fid",))
    resumed = Recorder()
    _trainer(tmp_path, [resumed_callback, resumed], max_epochs=2).fit(
        TinyModule(), train, val, ckpt_path=ckpt
    )
    assert resumed_callback.real_stats_cached and resumed_callback._num_real_forwarded == 0
    assert resumed.values[1]["val/fid"] == uninterrupted.values[1]["val/fid"]

    state = torch.load(ckpt, weights_only=False)["callbacks"][resumed_callback.state_key]
    assert state["real_stats"]["num_samples"] == 5 and state["real_stats"]["sigma"].dtype == torch.float64


def test_missing_key_lists_the_keys_present(tmp_path, cheap):
    callback = ImageMetricsCallback(metrics=("fid",), target_key="gt")
    train, val = loaders(2)
    with pytest.raises(
        ValueError,
        match=r"needs \['gt'\] in the `validation_step` output, which has keys "
        r"\['content', 'preds', 'target'\]",
    ):
        _trainer(tmp_path, [callback]).fit(TinyModule(), train, val)


class LossOnlyModule(TinyModule):
    def validation_step(self, batch, batch_idx):
        return torch.zeros(())


class BrightModule(TinyModule):
    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        out["preds"] = out["preds"] * 255
        return out


@pytest.mark.parametrize(
    ("module", "error", "match"),
    [
        (LossOnlyModule, TypeError, "to be a dict with keys \\['preds', 'target'\\], but got Tensor"),
        (BrightModule, ValueError, r"Expected float `preds` to be in \[0, 1\].*divide by 255"),
    ],
)
def test_bad_validation_outputs(tmp_path, cheap, module, error, match):
    train, val = loaders(2)
    with pytest.raises(error, match=match):
        _trainer(tmp_path, [ImageMetricsCallback(metrics=("fid",))]).fit(module(), train, val)


def test_too_few_images_is_a_clear_error(tmp_path, cheap):
    train, val = loaders(1)
    with pytest.raises(ValueError, match="FID needs at least 2 real"):
        _trainer(tmp_path, [ImageMetricsCallback(metrics=("fid",))]).fit(TinyModule(), train, val)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"metrics": ("fid", "kid")}, ValueError, r"non-empty subset of \('fid', 'is', 'cfsd'\)"),
        ({"metrics": ()}, ValueError, "non-empty subset"),
        ({"every_n_epochs": 0}, ValueError, "`every_n_epochs` to be >= 1"),
        ({"max_samples": 5}, ValueError, "`max_samples` to be >= 10"),
        ({"metrics": ("fid",), "max_samples": 1}, ValueError, "`max_samples` to be >= 2"),
        ({"target_key": None}, ValueError, "`target_key` must not be None"),
        ({"metrics": ("cfsd",), "target_key": None}, ValueError, "set `content_key`"),
        ({"extractor": "preds"}, TypeError, "`extractor` to be callable"),
        ({"resize": "area"}, ValueError, "`resize`"),
        ({"quantize": "nearest"}, ValueError, "`quantize`"),
        ({"is_splits": 1.5}, TypeError, "`is_splits` to be an integer"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ImageMetricsCallback(**kwargs)


def test_state_key_distinguishes_instances():
    a = ImageMetricsCallback(metrics=("fid",))
    b = ImageMetricsCallback(metrics=("fid",), target_key="other")
    c = ImageMetricsCallback(metrics=("fid",), prefix="test/")
    assert len({a.state_key, b.state_key, c.state_key}) == 3


def test_warns_without_distributed_sampler_in_a_distributed_run():
    callback = ImageMetricsCallback(metrics=("is",), is_splits=2, max_samples=4)
    trainer = SimpleNamespace(world_size=2, global_rank=1, val_dataloaders=DataLoader(PairDataset(5)))
    with pytest.warns(UserWarning, match="no DistributedSampler"):
        plan = callback._sample_plan(trainer)
    assert (plan.world_size, plan.rank, plan.keep) == (2, 1, 2)  # rank 1 keeps positions 1 and 3
