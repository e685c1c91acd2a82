"""ImageMetricsCallback: logging, duplicates of DistributedSampler, max_samples, schedules, caching, resume,
early checks of the step outputs, test-stage logging, checkpoint size and warnings."""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _ddp_module import PairDataset, Recorder, TinyModule, fit, loaders
from _stub_extractor import StubExtractor
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, DistributedSampler

from percep_lightning.backbones import FIDInceptionV3, InceptionFeatures
from percep_lightning.callbacks.image_metrics import ImageMetricsCallback
from percep_lightning.metrics import FrechetDistance

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:FI?D statistics from .* samples:UserWarning"),
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


_CHEAP = CheapInception()  # built once per session: construction, not the forward, is the cost here


def _fd() -> FrechetDistance:
    """A Fréchet distance on the 64-d stub extractor, for tests of the plumbing where the metric does not matter:
    a 64 x 64 eigendecomposition per compute instead of FID's 2048 x 2048 one (FID's maths is tested in
    tests/functional and tests/metrics)."""
    return FrechetDistance(StubExtractor())


def _callback(**kwargs):
    """An ImageMetricsCallback on the cheap Inception (other networks' weights as given)."""
    weights = kwargs.pop("weights", {})
    kwargs["weights"] = {"inception": _CHEAP, **weights}
    return ImageMetricsCallback(**kwargs)


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
def test_distributed_sampler_duplicates_are_dropped(tmp_path, n, batch_size, world):
    """Each dataset sample counts exactly once over the ranks; Fréchet sums equal the single-process sums."""

    def callback():
        return _callback(metrics={"fd": _fd(), "is": "is"}, options={"is": {"splits": 1}}, real_stats=False)

    single = _validate_with_sampler(tmp_path, callback(), n, batch_size, 1, 0).metrics
    ranks = [
        _validate_with_sampler(tmp_path, callback(), n, batch_size, world, r).metrics for r in range(world)
    ]
    assert sum(int(cb["fd"].fake_num_samples) for cb in ranks) == n
    assert sum(int(cb["fd"].real_num_samples) for cb in ranks) == n
    torch.testing.assert_close(sum(cb["fd"].fake_outer_sum for cb in ranks), single["fd"].fake_outer_sum)
    torch.testing.assert_close(
        sum(cb["fd"].real_features_sum for cb in ranks), single["fd"].real_features_sum
    )
    positions = torch.cat([_cat(cb["is"].indices) for cb in ranks])
    assert sorted(positions.tolist()) == list(range(n))
    logits = torch.cat([_cat(cb["is"].logits) for cb in ranks])
    torch.testing.assert_close(logits[positions.argsort()], _cat(single["is"].logits))


def _cat(state):
    return torch.cat(state) if isinstance(state, list) else state


@pytest.mark.parametrize("world", [1, 3])
def test_max_samples_keeps_the_first_samples_on_any_world_size(tmp_path, world):
    ranks = [
        _validate_with_sampler(
            tmp_path, _callback(metrics=("is",), options={"is": {"splits": 1}}, max_samples=4), 9, 2, world, r
        )
        for r in range(world)
    ]
    positions = torch.cat([_cat(cb.metrics["is"].indices) for cb in ranks])
    assert sorted(positions.tolist()) == [0, 1, 2, 3]


def test_drop_last_sampler_has_no_duplicates(tmp_path):
    ranks = [
        _validate_with_sampler(
            tmp_path, _callback(metrics=("is",), options={"is": {"splits": 1}}), 7, 2, 2, r, drop_last=True
        )
        for r in range(2)
    ]
    assert sum(int(_cat(cb.metrics["is"].indices).numel()) for cb in ranks) == 6


def test_logs_every_metric_each_epoch(tmp_path, torchvision_weights):
    """The default metrics' IS and CFSD, with the stub Fréchet distance in FID's place (FID's own logging and
    cache are checked below)."""
    recorder = fit(
        {
            "metrics": {"fd": _fd(), "is": "is", "cfsd": "cfsd"},
            "options": {"is": {"splits": 2}},
            "weights": {"inception": _CHEAP, "vgg19": torchvision_weights("vgg19")},
            "keys": {"content": "content"},
        },
        str(tmp_path),
        n_val=5,
        max_epochs=2,
    )
    assert set(recorder.values) == {0, 1}
    for values in recorder.values.values():
        assert set(values) == {"val/fd", "val/is", "val/is_std", "val/cfsd"}
        assert all(np.isfinite(v) for v in values.values())
    assert recorder.values[0] == recorder.values[1]  # same images, same values


def test_extractor_prefix_every_n_epochs_and_sanity_check_computes_nothing(tmp_path):
    def extractor(outputs, batch):
        return {"fake": outputs["preds"], "real": batch[1]}

    callback = _callback(
        metrics={"fd": _fd()},
        keys={"preds": "fake", "target": "real"},
        extractor=extractor,
        every_n_epochs=2,
        prefix="eval_",
        real_stats=False,
    )
    logged = []

    class Spy(Recorder):
        def on_validation_end(self, trainer, pl_module):
            keys = sorted(k for k in trainer.callback_metrics if k.startswith("eval_"))
            logged.append(
                (trainer.sanity_checking, trainer.current_epoch, callback.real_images_forwarded, keys)
            )

    trainer = _trainer(tmp_path, [callback, Spy()], max_epochs=4, num_sanity_val_steps=2)
    train, val = loaders(5)
    trainer.fit(TinyModule(), train, val)
    assert logged == [
        (True, 0, 0, []),
        (False, 0, 0, []),
        (False, 1, 5, ["eval_fd"]),
        (False, 2, 5, ["eval_fd"]),  # still the value of epoch 1
        (False, 3, 10, ["eval_fd"]),
    ]


@pytest.mark.slow  # 4 2048-d FID computes
def test_real_statistics_are_cached_and_invalidated(tmp_path):
    callback = _callback(metrics=("fid",))
    trainer = _trainer(tmp_path, [callback], max_epochs=3)
    train, val = loaders(5)
    trainer.fit(TinyModule(), train, val)
    assert callback.real_images_forwarded == 5 and callback.real_stats_cached

    # another validation set of the same size: the key changes, the statistics are recomputed
    other = DataLoader(PairDataset(5, seed=3), batch_size=2)
    _trainer(tmp_path, [callback]).validate(TinyModule(), other, verbose=False)
    assert callback.real_images_forwarded == 10


class ShiftingModule(TinyModule):
    """Targets that change from epoch to epoch although the dataset does not (e.g. random augmentation)."""

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        out["target"] = (out["target"] * (1 - 0.1 * self.current_epoch)).clamp(0, 1)
        return out


@pytest.mark.slow  # 3 2048-d FID computes
def test_changed_targets_switch_caching_off(tmp_path):
    callback = _callback(metrics=("fid",))
    trainer = _trainer(tmp_path, [callback], max_epochs=3)
    train, val = loaders(4)
    with pytest.warns(UserWarning, match="differ from those the cached real statistics"):
        trainer.fit(ShiftingModule(), train, val)
    assert callback.real_images_forwarded == 8  # epoch 0, then (after the warning at epoch 1) epoch 2
    assert not callback.real_stats_cached


@pytest.mark.slow  # 4 2048-d FID computes
def test_real_stats_dir_round_trip(tmp_path):
    stats_dir = tmp_path / "stats"
    first = fit(
        {"metrics": ("fid",), "real_stats": stats_dir, "weights": {"inception": _CHEAP}},
        str(tmp_path),
        n_val=4,
    )
    files = list(stats_dir.glob("fid_real_stats-*.npz"))
    assert len(files) == 1 and not list(stats_dir.glob(".*"))  # no temporary file left
    with np.load(files[0]) as archive:  # the pytorch-fid format
        assert archive["mu"].shape == (2048,) and archive["sigma"].shape == (2048, 2048)
        assert int(archive["num_samples"]) == 4

    callback = _callback(metrics=("fid",), real_stats=stats_dir)
    recorder = Recorder()
    train, val = loaders(4)
    _trainer(tmp_path, [callback, recorder]).fit(TinyModule(), train, val)
    assert callback.real_images_forwarded == 0
    assert recorder.values[0]["val/fid"] == first.values[0]["val/fid"]

    # different resize or sample count: another file, never the stale one
    bilinear = CheapInception(resize="bilinear")
    fit(
        {"metrics": ("fid",), "real_stats": stats_dir, "weights": {"inception": bilinear}},
        str(tmp_path),
        n_val=4,
    )
    fit(
        {"metrics": ("fid",), "real_stats": stats_dir, "max_samples": 3, "weights": {"inception": _CHEAP}},
        str(tmp_path),
        n_val=4,
    )
    assert len(list(stats_dir.glob("fid_real_stats-*.npz"))) == 3


@pytest.mark.slow  # 4 2048-d FID computes
def test_checkpoint_resume_restores_cached_statistics(tmp_path):
    """A run stopped after epoch 0 and resumed logs the same epoch-1 values without recomputing the reals."""
    train, val = loaders(5)
    uninterrupted = Recorder()
    _trainer(tmp_path / "a", [_callback(metrics=("fid",)), uninterrupted], max_epochs=2).fit(
        TinyModule(), train, val
    )

    first = _trainer(tmp_path / "b", [_callback(metrics=("fid",))], max_epochs=1)
    first.fit(TinyModule(), train, val)
    ckpt = tmp_path / "epoch0.ckpt"
    first.save_checkpoint(ckpt)
    assert (
        len(list((tmp_path / "b" / "real_stats").glob("fid_real_stats-*.npz"))) == 1
    )  # written at checkpoint

    resumed_callback = _callback(metrics=("fid",))
    resumed = Recorder()
    _trainer(tmp_path / "c", [resumed_callback, resumed], max_epochs=2).fit(
        TinyModule(), train, val, ckpt_path=ckpt
    )
    assert resumed_callback.real_stats_cached and resumed_callback.real_images_forwarded == 0
    assert resumed.values[1]["val/fid"] == uninterrupted.values[1]["val/fid"]


@pytest.mark.slow  # 1 2048-d FID compute
def test_checkpoint_state_is_small(tmp_path):
    """The callback's checkpoint state names the statistics file instead of holding the 2048 x 2048 covariance."""
    callback = _callback(metrics=("fid", "is"), options={"is": {"splits": 2}})
    trainer = _trainer(tmp_path, [callback])
    train, val = loaders(5)
    trainer.fit(TinyModule(), train, val)
    assert callback.real_stats_cached
    buffer = io.BytesIO()
    torch.save(callback.state_dict(), buffer)
    assert buffer.tell() < 100_000, buffer.tell()
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"][callback.state_key]
    assert state["num_samples"] == 5 and state["file"].endswith(".npz")


@pytest.mark.slow  # 2 2048-d FID computes
def test_resume_recomputes_when_the_statistics_file_is_gone(tmp_path, caplog):
    train, val = loaders(5)
    first = _trainer(tmp_path / "b", [_callback(metrics=("fid",))], max_epochs=1)
    first.fit(TinyModule(), train, val)
    ckpt = tmp_path / "epoch0.ckpt"
    first.save_checkpoint(ckpt)
    for path in (tmp_path / "b" / "real_stats").glob("*.npz"):
        path.unlink()

    resumed_callback = _callback(metrics=("fid",))
    resumed = Recorder()
    with caplog.at_level(logging.INFO, logger="percep_lightning"):
        _trainer(tmp_path / "c", [resumed_callback, resumed], max_epochs=2).fit(
            TinyModule(), train, val, ckpt_path=ckpt
        )
    notes = [r for r in caplog.records if "recomputing the real statistics" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO
    assert resumed_callback.real_images_forwarded == 5 and "val/fid" in resumed.values[1]


def test_missing_key_is_reported_in_the_sanity_check(tmp_path):
    """A key typo fails during the sanity check, before any training step, naming the callback argument."""
    callback = _callback(metrics=("fid",), keys={"target": "gt"})
    module = TinyModule()
    train, val = loaders(2)
    with pytest.raises(
        ValueError,
        match=r"needs \['gt'\] in the `validation_step` output, which has keys "
        r"\['content', 'preds', 'target'\]; check `keys\['target'\]`='gt'",
    ):
        _trainer(tmp_path, [callback], num_sanity_val_steps=1).fit(module, train, val)
    assert module.scale.item() == 1.0  # no optimizer step ran


class LossOnlyModule(TinyModule):
    def validation_step(self, batch, batch_idx):
        return torch.zeros(())


class BrightModule(TinyModule):
    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        out["preds"] = out["preds"] * 255
        return out


class GreyAlphaModule(TinyModule):
    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        out["preds"] = torch.cat([out["preds"], out["preds"][:, :1]], dim=1)  # 4 channels
        return out


class IntModule(TinyModule):
    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        out["target"] = (out["target"] * 255).to(torch.int32)
        return out


@pytest.mark.parametrize(
    ("module", "error", "match"),
    [
        (LossOnlyModule, TypeError, "to be a dict with keys \\['preds', 'target'\\], but got Tensor"),
        (
            BrightModule,
            ValueError,
            r"float images under `keys\['preds'\]`='preds' .* to be in \[0, 1\].*divide by 255",
        ),
        (
            GreyAlphaModule,
            ValueError,
            r"`keys\['preds'\]`='preds' .* shape \(N, 3, H, W\) or \(N, 1, H, W\).*\(2, 4, 32, 32\)",
        ),
        (IntModule, TypeError, r"`keys\['target'\]`='target' .* uint8 .* float .* torch.int32"),
    ],
)
def test_bad_outputs_fail_in_the_sanity_check(tmp_path, module, error, match):
    model = module()
    train, val = loaders(2)
    with pytest.raises(error, match=match):
        _trainer(tmp_path, [_callback(metrics=("fid",))], num_sanity_val_steps=1).fit(model, train, val)
    assert model.scale.item() == 1.0  # the error came before the first optimizer step


class RoundingModule(TinyModule):
    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        out["preds"] = out["preds"] * 1.0004 - 0.0002  # leaves [0, 1] by rounding-sized amounts
        return out


def test_rounding_overshoot_is_clamped(tmp_path):
    """Float images a rounding step outside [0, 1] reach a float extractor (the stub) and a uint8 one (IS's
    Inception) clamped."""
    recorder = Recorder()
    train, val = loaders(4)
    callback = _callback(metrics={"fd": _fd(), "is": "is"}, options={"is": {"splits": 2}})
    _trainer(tmp_path, [callback, recorder]).fit(RoundingModule(), train, val)
    assert np.isfinite(recorder.values[0]["val/fd"]) and np.isfinite(recorder.values[0]["val/is"])


@pytest.mark.parametrize(
    ("kwargs", "n_val", "match"),
    [
        (
            {"metrics": ("is",), "options": {"is": {"splits": 10}}},
            5,
            r"at least 10 validation images for metric 'is' .*`splits`=10.* holds 5.*the `splits` option of is",
        ),
        ({"metrics": ("fid",)}, 1, r"at least 2 validation images for metric 'fid' .* holds 1"),
    ],
)
def test_too_small_validation_set_fails_at_validation_start(tmp_path, kwargs, n_val, match):
    model = TinyModule()
    train, val = loaders(n_val)
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, [_callback(**kwargs)], num_sanity_val_steps=1).fit(model, train, val)
    assert model.scale.item() == 1.0


def test_batch_limit_counts_towards_the_validation_set_size(tmp_path):
    train, val = loaders(8)
    with pytest.raises(ValueError, match=r"holds 4"):
        _trainer(
            tmp_path, [_callback(metrics=("is",), options={"is": {"splits": 6}})], limit_val_batches=2
        ).fit(TinyModule(), train, val)


@pytest.mark.parametrize("limit", [1, 0.25])
def test_batch_limit_fails_in_the_sanity_check_before_any_training(tmp_path, limit):
    """A batch limit too small for the metrics stops the run before the first training step, not after an epoch."""
    model = TinyModule()
    train, val = loaders(8)
    trainer = _trainer(
        tmp_path, [_callback(metrics=("is",), options={"is": {"splits": 6}})], limit_val_batches=limit,
        num_sanity_val_steps=1,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"at least 6 validation images for metric 'is' .* holds 2"):
        trainer.fit(model, train, val)
    assert model.scale.item() == 1.0 and trainer.global_step == 0


def test_prog_bar_and_test_stage(tmp_path):
    callback = _callback(metrics={"fd": _fd(), "is": "is"}, options={"is": {"splits": 2}}, prog_bar=True)
    trainer = _trainer(tmp_path, [callback])
    train, val = loaders(4)
    trainer.fit(TinyModule(), train, val)
    assert {"val/fd", "val/is", "val/is_std"} <= set(trainer.progress_bar_metrics)
    results = trainer.test(TinyModule(), val, verbose=False)
    assert {"test/fd", "test/is", "test/is_std"} == {k for k in results[0] if k.startswith("test/")}
    # the test set is the validation set: same images, same values
    assert results[0]["test/fd"] == pytest.approx(float(trainer.callback_metrics["test/fd"]))
    validated = trainer.validate(TinyModule(), val, verbose=False)[0]
    assert validated["val/fd"] == results[0]["test/fd"] and validated["val/is"] == results[0]["test/is"]


def test_warnings_once_per_run(tmp_path):
    """The rank-deficiency warning of a Fréchet distance (5 images, 64-d) is given once in a 3-epoch run, not per
    compute."""
    train, val = loaders(5)
    trainer = _trainer(tmp_path, [_callback(metrics={"fd": _fd()}, real_stats=False)], max_epochs=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyModule(), train, val)
    messages = [str(w.message) for w in caught if "FD statistics from" in str(w.message)]
    assert len(messages) == 1, messages


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"metrics": ("fid", "fvd")},
            ValueError,
            r"Expected metric names from psnr, ssim, .*\('fvd' unknown\)",
        ),
        ({"metrics": ()}, ValueError, "`metrics` to name at least one metric"),
        ({"every_n_epochs": 0}, ValueError, "`every_n_epochs` to be >= 1"),
        ({"max_samples": 5}, ValueError, "`max_samples` to be >= 10"),
        ({"metrics": ("fid",), "max_samples": 1}, ValueError, "`max_samples` to be >= 2"),
        ({"keys": {"target": None}}, ValueError, r"Metric 'fid' needs target images: set `keys\['target'\]`"),
        ({"metrics": ("cfsd",), "keys": {"target": None}}, ValueError, r"set `keys\['content'\]`"),
        ({"extractor": "preds"}, TypeError, "`extractor` to be callable"),
        ({"options": {"resize": "area"}}, ValueError, "`resize`"),
        ({"options": {"quantize": "nearest"}}, ValueError, "`quantize`"),
        ({"options": {"is": {"splits": 1.5}}}, TypeError, r"`options\['is'\]\['splits'\]` to be an integer"),
        ({"weights": {"inception": 3}}, TypeError, r"`weights\['inception'\]` to be"),
        ({"prefix": 3}, TypeError, "`prefix` to be a str or None"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        _callback(**kwargs)


def test_state_key_distinguishes_instances():
    a = _callback(metrics=("fid",))
    b = _callback(metrics=("fid",), keys={"target": "other"})
    c = _callback(metrics=("fid",), prefix="test/")
    assert len({a.state_key, b.state_key, c.state_key}) == 3


def test_no_metric_warnings_on_other_ranks(tmp_path, monkeypatch):
    """Metric and backbone warnings go through rank zero only: a process of rank 1 gives none."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    train, val = loaders(5)
    trainer = _trainer(tmp_path, [_callback(metrics={"fd": _fd()})])
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyModule(), train, val)
    assert not [w for w in caught if "FD statistics from" in str(w.message)]
