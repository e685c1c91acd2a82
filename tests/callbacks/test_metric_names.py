"""ImageMetricsCallback names beyond FID / IS / CFSD: kid, psnr, ssim, ms_ssim, lpips, artfid.

Each name is checked against the same metric computed outside the callback over the whole validation set
(one process, the same batches), so the callback's plumbing (roles, keys, options, one Inception forward,
the real-statistics store) is what is under test; the maths has its parity tests in tests/metrics.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _ddp_module import PairDataset, Recorder, StyleModule, TinyModule, loaders
from test_image_metrics import CheapInception, _callback, _trainer
from torch.utils.data import DataLoader, TensorDataset

import percep_lightning.metrics.frechet as fid_module
from percep_lightning.functional import kernel_inception_distance, psnr, ssim
from percep_lightning.functional.ssim import ms_ssim
from percep_lightning.losses import LPIPSLoss
from percep_lightning.metrics import ArtFID

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:FID statistics from .* samples:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*random weights.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:KID `subset_size`.*:UserWarning"),
]


@pytest.fixture
def cheap_fid(monkeypatch):
    """A cheap Fréchet distance where FID only rides along (its maths is tested in tests/functional)."""
    monkeypatch.setattr(
        fid_module,
        "frechet_distance",
        lambda mu1, s1, mu2, s2: (mu1 - mu2).square().sum() + (s1 - s2).abs().sum(),
    )


class CountingInception(CheapInception):
    """The cheap stand-in Inception, counting the images it is run on."""

    def __init__(self) -> None:
        super().__init__()
        self.images_seen = 0

    def forward(self, images):
        self.images_seen += int(images.shape[0])
        return super().forward(images)


def _validation_images(loader: DataLoader, module: TinyModule) -> dict[str, torch.Tensor]:
    """Every step output of one validation epoch, concatenated (what the callback sees, in order)."""
    outputs = [module.validation_step(batch, i) for i, batch in enumerate(loader)]
    return {key: torch.cat([out[key] for out in outputs]) for key in outputs[0]}


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return torch.floor(images * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def _photo_loader(photos, n: int, size: int, batch_size: int = 2) -> DataLoader:
    """``(input, target)`` pairs of real photographs: the input is a noisy copy of the target."""
    target = photos(n, size)
    noise = torch.rand(target.shape, generator=torch.Generator().manual_seed(1))
    return DataLoader(TensorDataset((0.8 * target + 0.2 * noise).clamp(0, 1), target), batch_size=batch_size)


# ---------------------------------------------------------------------- KID


def test_kid_equals_the_function_on_the_whole_set_from_one_inception_forward(tmp_path, cheap_fid):
    """kid/kid_std are the KID of all real and generated features; FID, IS and KID share each forward."""
    inception = CountingInception()
    callback = _callback(
        metrics=("fid", "is", "kid"), is_splits=2, kid_subsets=7, kid_subset_size=3, inception=inception
    )
    recorder = Recorder()
    train, val = loaders(5)
    _trainer(tmp_path, [callback, recorder], max_epochs=2).fit(TinyModule(), train, val)

    images = _validation_images(val, TinyModule())
    with torch.no_grad():
        reference = CheapInception()
        real = reference(_uint8(images["target"])).pool3.double()
        fake = reference(_uint8(images["preds"])).pool3.double()
    mean, std = kernel_inception_distance(real, fake, subsets=7, subset_size=3)
    for epoch in (0, 1):
        logged = recorder.values[epoch]
        assert {"val/fid", "val/is", "val/is_std", "val/kid", "val/kid_std"} == set(logged)
        # the callback's features are float32 (the reference float64): relative error of float32 round-off
        assert logged["val/kid"] == pytest.approx(float(mean), rel=1e-5, abs=1e-7)
        assert logged["val/kid_std"] == pytest.approx(float(std), rel=1e-4, abs=1e-7)
    # epoch 0: 5 generated + 5 real images in one forward per batch; epoch 1: the real side is cached
    assert inception.images_seen == 5 + 5 + 5
    assert callback.real_images_forwarded == 5


def test_kid_subset_size_above_the_epoch_warns_once(tmp_path):
    train, val = loaders(4)
    trainer = _trainer(tmp_path, [_callback(metrics=("kid",), kid_subsets=5)], max_epochs=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyModule(), train, val)
    messages = [str(w.message) for w in caught if "KID `subset_size`=1000" in str(w.message)]
    assert len(messages) == 1, messages


@pytest.mark.parametrize("metrics", [("kid",), ("fid", "kid")])
def test_resumed_run_logs_the_same_kid_without_real_forwards(tmp_path, cheap_fid, metrics):
    """The real pool3 features are stored with the FID statistics; a resumed run reads them back."""
    kwargs = {"metrics": metrics, "kid_subsets": 9, "kid_subset_size": 3}
    train, val = loaders(5)
    uninterrupted = Recorder()
    _trainer(tmp_path / "a", [_callback(**kwargs), uninterrupted], max_epochs=2).fit(TinyModule(), train, val)
    assert uninterrupted.values[0]["val/kid"] == uninterrupted.values[1]["val/kid"]  # cached = recomputed

    first = _trainer(tmp_path / "b", [_callback(**kwargs)], max_epochs=1)
    first.fit(TinyModule(), train, val)
    ckpt = tmp_path / "epoch0.ckpt"
    first.save_checkpoint(ckpt)
    files = list((tmp_path / "b" / "real_stats").glob("fid_real_stats-*.npz"))
    with np.load(files[0]) as archive:
        assert archive["features"].shape == (5, 2048) and archive["sigma"].shape == (2048, 2048)
    assert ckpt.stat().st_size < 100_000  # the features stay in the statistics file

    resumed_callback = _callback(**kwargs)
    resumed = Recorder()
    _trainer(tmp_path / "c", [resumed_callback, resumed], max_epochs=2).fit(
        TinyModule(), train, val, ckpt_path=ckpt
    )
    assert resumed_callback.real_images_forwarded == 0
    assert resumed.values[1] == uninterrupted.values[1]


def test_statistics_without_features_are_recomputed_for_kid(tmp_path, cheap_fid):
    """A shared folder written by an FID-only run has no features: a KID run recomputes and adds them."""
    stats_dir = tmp_path / "stats"
    train, val = loaders(4)
    fid_only = _callback(metrics=("fid",), real_stats_dir=stats_dir)
    _trainer(tmp_path, [fid_only]).fit(TinyModule(), train, val)
    with_kid = _callback(metrics=("fid", "kid"), real_stats_dir=stats_dir, kid_subset_size=2)
    _trainer(tmp_path, [with_kid]).fit(TinyModule(), train, val)
    assert with_kid.real_images_forwarded == 4
    kid_only = _callback(metrics=("kid",), real_stats_dir=stats_dir, kid_subset_size=2)
    _trainer(tmp_path, [kid_only]).fit(TinyModule(), train, val)
    assert kid_only.real_images_forwarded == 0


# ---------------------------------------------------------------------- paired metrics


def test_psnr_and_ssim_as_sr_papers_report_them(tmp_path, photos):
    """Per-image means over the epoch on the luma channel with a cropped border, as the functions give."""
    val = _photo_loader(photos, 5, 48)
    recorder = Recorder()
    callback = _callback(metrics=("psnr", "ssim"), channel="y", crop_border=3)
    _trainer(tmp_path, [callback, recorder]).fit(TinyModule(), loaders(2)[0], val)

    images = _validation_images(val, TinyModule())
    preds, target = images["preds"].double(), images["target"].double()
    expected_psnr = psnr(preds, target, data_range=1.0, channel="y", crop_border=3, reduction="none").mean()
    expected_ssim = ssim(preds, target, data_range=1.0, channel="y", crop_border=3, reduction="none").mean()
    assert recorder.values[0]["val/psnr"] == pytest.approx(float(expected_psnr), rel=1e-6)
    assert recorder.values[0]["val/ssim"] == pytest.approx(float(expected_ssim), rel=1e-5)


def test_ms_ssim_streams_over_the_epoch(tmp_path, photos):
    val = _photo_loader(photos, 3, 176)
    recorder = Recorder()
    _trainer(tmp_path, [_callback(metrics=("ms_ssim",)), recorder]).fit(TinyModule(), loaders(2)[0], val)
    images = _validation_images(val, TinyModule())
    expected = ms_ssim(images["preds"].double(), images["target"].double(), data_range=1.0, reduction="none")
    assert recorder.values[0]["val/ms_ssim"] == pytest.approx(float(expected.mean()), rel=1e-5)


def test_lpips_streams_over_the_epoch(tmp_path, photos, torchvision_weights):
    val = _photo_loader(photos, 5, 64)
    weights = str(torchvision_weights("squeezenet1_1"))
    recorder = Recorder()
    callback = _callback(metrics=("lpips",), lpips_net="squeeze", lpips_weights=weights)
    _trainer(tmp_path, [callback, recorder]).fit(TinyModule(), loaders(2)[0], val)

    loss = LPIPSLoss("squeeze", weights=weights, reduction="none")
    module = TinyModule()
    with torch.no_grad():  # the same batches as the callback: the same float32 operations
        distances = torch.cat([loss(module(x), y).flatten().double() for x, y in val])
    # the callback logs float32 values: a relative error of float32 round-off
    assert recorder.values[0]["val/lpips"] == pytest.approx(float(distances.mean()), rel=1e-6)


# ---------------------------------------------------------------------- ArtFID


@pytest.mark.slow
def test_artfid_reads_preds_content_and_style(tmp_path, art_inception_weights, torchvision_weights):
    alex = str(torchvision_weights("alexnet"))
    kwargs = {
        "art_inception_weights": str(art_inception_weights),
        "art_lpips_weights": alex,
        "art_resize": 75,
    }
    recorder = Recorder()
    callback = _callback(metrics=("artfid",), content_key="content", style_key="style", **kwargs)
    train, val = loaders(4)
    _trainer(tmp_path, [callback, recorder]).fit(StyleModule(), train, val)

    reference = ArtFID(str(art_inception_weights), lpips_weights=alex, resize=75)
    module = StyleModule()
    for i, batch in enumerate(val):  # the same batches as the callback
        out = module.validation_step(batch, i)
        reference.update(out["preds"], out["content"], out["style"])
    expected = reference.compute()
    logged = recorder.values[0]
    for name in ("artfid", "fid", "lpips"):
        key = "val/artfid" if name == "artfid" else f"val/artfid_{name}"
        assert logged[key] == pytest.approx(float(expected[name]), rel=1e-6), key


def test_missing_style_output_is_caught_in_the_sanity_check(tmp_path):
    module = TinyModule()
    callback = _callback(
        metrics=("artfid",),
        style_key="style",
        art_inception_weights=None,
        art_lpips_weights=None,
        art_resize=75,
    )
    train, val = loaders(2)
    with pytest.raises(
        ValueError, match=r"needs \['style'\] in the `validation_step` output.*`style_key`='style'"
    ):
        _trainer(tmp_path, [callback], num_sanity_val_steps=1).fit(module, train, val)
    assert module.scale.item() == 1.0  # no optimizer step ran


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"metrics": ("ms_ssim",)},
            r"'ms_ssim' needs images with both sides >= 161 .*`preds_key`='preds' holds 32x32",
        ),
        (
            {"metrics": ("ssim",), "crop_border": 11},
            r"'ssim' needs images with both sides >= 33 .*`crop_border`",
        ),
    ],
)
def test_images_too_small_for_a_metric_fail_in_the_sanity_check(tmp_path, kwargs, match):
    module = TinyModule()
    train, val = loaders(2)
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, [_callback(**kwargs)], num_sanity_val_steps=1).fit(module, train, val)
    assert module.scale.item() == 1.0


class NaNModule(TinyModule):
    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        out["target"][0, 0, 3, 5] = float("nan")
        return out


def test_nan_outputs_fail_in_the_sanity_check(tmp_path):
    train, val = loaders(2)
    with pytest.raises(ValueError, match=r"`target_key`='target' .* to be finite, but they hold NaN or Inf"):
        _trainer(tmp_path, [_callback(metrics=("psnr",))], num_sanity_val_steps=1).fit(
            NaNModule(), train, val
        )


# ---------------------------------------------------------------------- arguments


def test_too_small_validation_set_for_kid(tmp_path):
    train, val = loaders(1)
    with pytest.raises(ValueError, match=r"at least 2 validation images for metric 'kid' .* holds 1"):
        _trainer(tmp_path, [_callback(metrics=("kid",))], num_sanity_val_steps=1).fit(
            TinyModule(), train, val
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"metrics": ("fid", "fvd")},
            ValueError,
            r"non-empty subset of \('fid', 'is', 'kid', 'cfsd', 'psnr', 'ssim', 'ms_ssim', 'lpips', 'artfid'\)",
        ),
        (
            {"metrics": ("kid",), "target_key": None},
            ValueError,
            "Metric 'kid' needs real images: `target_key`",
        ),
        ({"metrics": ("psnr",), "target_key": None}, ValueError, "Metric 'psnr' needs real images"),
        ({"metrics": ("artfid",)}, ValueError, "Metric 'artfid' needs style images: set `style_key`"),
        ({"kid_subsets": 0}, ValueError, "`kid_subsets` to be >= 1"),
        ({"kid_subset_size": 2.5}, TypeError, "`kid_subset_size` to be an integer"),
        ({"channel": "luma"}, ValueError, r"`channel` to be one of \('rgb', 'y', 'per_channel'\)"),
        ({"crop_border": -1}, ValueError, "`crop_border` to be a non-negative integer"),
        ({"lpips_net": "resnet"}, ValueError, r"`lpips_net` to be one of \('alex', 'vgg', 'squeeze'\)"),
        ({"art_resize": 64}, ValueError, "`art_resize` to be >= 75"),
    ],
)
def test_bad_arguments_of_the_new_names(kwargs, error, match):
    with pytest.raises(error, match=match):
        _callback(**kwargs)


def test_default_metrics_are_unchanged():
    assert _callback().metric_names == ("fid", "is", "cfsd")


def test_grey_pairs_reach_the_paired_metrics(tmp_path):
    """One-channel images are accepted by the callback and scored as the functions score them."""

    class GreyModule(TinyModule):
        def validation_step(self, batch, batch_idx):
            out = super().validation_step(batch, batch_idx)
            return {key: value.mean(dim=1, keepdim=True) for key, value in out.items()}

    recorder = Recorder()
    train = loaders(2)[0]
    val = DataLoader(PairDataset(3), batch_size=2)
    _trainer(tmp_path, [_callback(metrics=("psnr",)), recorder]).fit(GreyModule(), train, val)
    images = _validation_images(val, GreyModule())
    expected = psnr(images["preds"].double(), images["target"].double(), data_range=1.0, reduction="none")
    assert recorder.values[0]["val/psnr"] == pytest.approx(float(expected.mean()), rel=1e-6)
    assert F.mse_loss(images["preds"], images["target"]) > 0
