"""ImageMetricsCallback names beyond FID / IS / CFSD: kid, psnr, ssim, ms_ssim, lpips, artfid, and every other
name of the metric registry (the names ``percep-lightning evaluate`` takes).

Each name is checked against the same metric computed outside the callback over the whole validation set
(one process, the same batches), so the callback's plumbing (roles, keys, options, one Inception forward,
the real-statistics store) is what is under test; the maths has its parity tests in tests/metrics.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _ddp_module import PairDataset, Recorder, StyleModule, TinyModule, loaders
from test_image_metrics import CheapInception, _callback, _trainer
from torch.utils.data import DataLoader, TensorDataset

from percep_lightning.callbacks import ImageMetricsCallback
from percep_lightning.functional import kernel_inception_distance, psnr, ssim
from percep_lightning.functional.ssim import ms_ssim
from percep_lightning.losses import LPIPSLoss
from percep_lightning.metrics import ArtFID
from percep_lightning.metrics.registry import METRICS, describe

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:FI?D statistics from .* samples:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*random weights.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:KID `subset_size`.*:UserWarning"),
]


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


@pytest.mark.slow  # two 2048-d FID computes
def test_kid_equals_the_function_on_the_whole_set_from_one_inception_forward(tmp_path):
    """kid/kid_std are the KID of all real and generated features; FID, IS and KID share each forward."""
    inception = CountingInception()
    callback = _callback(
        metrics=("fid", "is", "kid"),
        options={"is": {"splits": 2}, "kid": {"subsets": 7, "subset_size": 3}},
        weights={"inception": inception},
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
    trainer = _trainer(tmp_path, [_callback(metrics=("kid",), options={"kid": {"subsets": 5}})], max_epochs=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyModule(), train, val)
    messages = [str(w.message) for w in caught if "KID `subset_size`=1000" in str(w.message)]
    assert len(messages) == 1, messages


@pytest.mark.parametrize("metrics", [("kid",), pytest.param(("fid", "kid"), marks=pytest.mark.slow)])
def test_resumed_run_logs_the_same_kid_without_real_forwards(tmp_path, metrics):
    """The real pool3 features are stored with the FID statistics; a resumed run reads them back."""
    kwargs = {"metrics": metrics, "options": {"kid": {"subsets": 9, "subset_size": 3}}}
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


@pytest.mark.slow  # two 2048-d FID computes
def test_statistics_without_features_are_recomputed_for_kid(tmp_path):
    """A shared folder written by an FID-only run has no features: a KID run recomputes and adds them."""
    stats_dir = tmp_path / "stats"
    train, val = loaders(4)
    kid = {"kid": {"subset_size": 2}}
    fid_only = _callback(metrics=("fid",), real_stats=stats_dir)
    _trainer(tmp_path, [fid_only]).fit(TinyModule(), train, val)
    with_kid = _callback(metrics=("fid", "kid"), real_stats=stats_dir, options=kid)
    _trainer(tmp_path, [with_kid]).fit(TinyModule(), train, val)
    assert with_kid.real_images_forwarded == 4
    kid_only = _callback(metrics=("kid",), real_stats=stats_dir, options=kid)
    _trainer(tmp_path, [kid_only]).fit(TinyModule(), train, val)
    assert kid_only.real_images_forwarded == 0


# ---------------------------------------------------------------------- paired metrics


def test_psnr_and_ssim_as_sr_papers_report_them(tmp_path, photos):
    """Per-image means over the epoch on the luma channel with a cropped border, as the functions give."""
    val = _photo_loader(photos, 5, 48)
    recorder = Recorder()
    luma = {"channel": "y", "crop_border": 3}
    callback = _callback(metrics=("psnr", "ssim"), options={"psnr": luma, "ssim": luma})
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
    callback = _callback(
        metrics=("lpips",), options={"lpips": {"net": "squeeze"}}, weights={"squeezenet1_1": weights}
    )
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
    recorder = Recorder()
    callback = _callback(
        metrics=("artfid",),
        keys={"content": "content", "style": "style"},
        options={"lpips_content": {"resize": 75}, "fid_art": {"resize": 75}},
        weights={"art_inception": str(art_inception_weights), "alexnet": alex},
    )
    train, val = loaders(4)
    _trainer(tmp_path, [callback, recorder]).fit(StyleModule(), train, val)

    reference = ArtFID(str(art_inception_weights), lpips_weights=alex, resize=75)
    module = StyleModule()
    for i, batch in enumerate(val):  # the same batches as the callback
        out = module.validation_step(batch, i)
        reference.update(out["preds"], out["content"], out["style"])
    expected = reference.compute()
    logged = recorder.values[0]
    assert set(logged) == {"val/artfid", "val/fid_art", "val/lpips_content"}
    for name, key in (("artfid", "val/artfid"), ("fid", "val/fid_art"), ("lpips", "val/lpips_content")):
        assert logged[key] == pytest.approx(float(expected[name]), rel=1e-6), key


def test_missing_style_output_is_caught_in_the_sanity_check(tmp_path):
    module = TinyModule()
    callback = _callback(
        metrics=("artfid",),
        keys={"style": "style"},
        options={"lpips_content": {"resize": 75}, "fid_art": {"resize": 75}},
        weights={"art_inception": None, "alexnet": None},
    )
    train, val = loaders(2)
    with pytest.raises(
        ValueError, match=r"needs \['style'\] in the `validation_step` output.*`keys\['style'\]`='style'"
    ):
        _trainer(tmp_path, [callback], num_sanity_val_steps=1).fit(module, train, val)
    assert module.scale.item() == 1.0  # no optimizer step ran


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"metrics": ("ms_ssim",)},
            r"'ms_ssim' needs images with both sides >= 161 .*`keys\['preds'\]`='preds' holds 32x32",
        ),
        (
            {"metrics": ("ssim",), "options": {"ssim": {"crop_border": 11}}},
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
    with pytest.raises(
        ValueError, match=r"`keys\['target'\]`='target' .* to be finite, but it contains NaN or Inf"
    ):
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
            r"Expected metric names from psnr, ssim, ms_ssim, psnr_y, ssim_y, lpips, lpips_vgg, dists, lpips_content, "
            r"lpips_gray, cfsd, fid, fid_style, fid_art, artfid, kid, fd_dinov2, fd_dinov2_inf, kd_dinov2, cmmd, prdc, is, "
            r"but got \['fvd'\] \('fvd' unknown\)",
        ),
        (
            {"metrics": ("kid",), "keys": {"target": None}},
            ValueError,
            r"Metric 'kid' needs target images: set `keys\['target'\]`\.",
        ),
        ({"metrics": ("psnr",), "keys": {"target": None}}, ValueError, "Metric 'psnr' needs target images"),
        ({"metrics": ("artfid",)}, ValueError, r"Metric 'artfid' needs style images: set `keys\['style'\]`"),
        ({"options": {"kid": {"subsets": 0}}}, ValueError, r"`options\['kid'\]\['subsets'\]` to be >= 1"),
        (
            {"options": {"kid": {"subset_size": 2.5}}},
            TypeError,
            r"`options\['kid'\]\['subset_size'\]` to be an integer",
        ),
        (
            {"options": {"psnr": {"channel": "luma"}}},
            ValueError,
            r"`options\['psnr'\]\['channel'\]` to be one of \('rgb', 'y', 'per_channel'\)",
        ),
        (
            {"options": {"ssim": {"crop_border": -1}}},
            ValueError,
            r"`options\['ssim'\]\['crop_border'\]` to be >= 0",
        ),
        (
            {"options": {"lpips": {"net": "resnet"}}},
            ValueError,
            r"`options\['lpips'\]\['net'\]` to be one of \('alex', 'vgg', 'squeeze'\)",
        ),
        (
            {"options": {"fid_art": {"resize": 64}}},
            ValueError,
            r"`options\['fid_art'\]\['resize'\]` to be >= 75",
        ),
        (
            {"options": {"prdc": {"features": "resnet"}}},
            ValueError,
            r"`options\['prdc'\]\['features'\]` to be one of \('dinov2', 'inception', 'clip'\)",
        ),
        ({"options": {"prdc": {"k": 0}}}, ValueError, r"`options\['prdc'\]\['k'\]` to be >= 1"),
        (
            {"options": {"fd_dinov2_inf": {"min_samples": 1}}},
            ValueError,
            r"`options\['fd_dinov2_inf'\]\['min_samples'\]` to be >= 2",
        ),
    ],
)
def test_bad_arguments_of_the_new_names(kwargs, error, match):
    """Options are checked when the callback is built, for the requested metrics and the others alike."""
    with pytest.raises(error, match=match):
        _callback(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        # options
        (
            {"options": {"is": 10}},
            TypeError,
            "Expected the options of metric 'is' to be a mapping, but got int",
        ),
        (
            {"options": {"fvd": {"splits": 2}}},
            ValueError,
            r"keys of `options` to be metric names or resize, quantize, but got 'fvd'; metric names: psnr, ",
        ),
        (
            {"options": {"kid": {"splits": 2}}},
            ValueError,
            r"Metric 'kid' takes no option splits; its options: subsets, subset_size\.",
        ),
        (
            {"options": {"artfid": {"resize": 75}}},
            ValueError,
            "Metric 'artfid' takes no option resize; its options: none",
        ),
        (
            {"metrics": ("cfsd",), "options": {"cfsd": {"chunk_size": 0}}},
            ValueError,
            r"`options\['cfsd'\]\['chunk_size'\]` to be >= 1, but got 0",
        ),
        (
            {"metrics": ("is",), "options": {"is": {"splits": True}}},
            TypeError,
            r"`options\['is'\]\['splits'\]` to be an integer, but got bool True",
        ),
        ({"options": {"resize": "area"}}, ValueError, r"Expected `resize` to be one of \('tensorflow', "),
        # keys
        (
            {"keys": ["preds", "target"]},
            TypeError,
            "Expected `keys` to be a mapping from role to key, but got list",
        ),
        (
            {"keys": {"real": "target"}},
            ValueError,
            r"roles in `keys` to be some of \('preds', 'target', 'content', 'style'\), but got \['real'\]",
        ),
        ({"keys": {"preds": 3}}, TypeError, r"Expected `keys\['preds'\]` to be a str or None, but got int"),
        ({"keys": {"preds": None}}, ValueError, r"Metric 'fid' needs preds images: set `keys\['preds'\]`\."),
        (
            {"metrics": ("cfsd",), "keys": {"target": None}},
            ValueError,
            r"Metric 'cfsd' needs content images: set `keys\['content'\]` \(or `keys\['target'\]`\)\.",
        ),
        (
            {"metrics": ("fid_style",)},
            ValueError,
            r"Metric 'fid_style' needs style images: set `keys\['style'\]`\.",
        ),
        # weights
        (
            {"weights": {"inceptionv3": None}},
            ValueError,
            r"keys of `weights` to be network names of \('inception', 'art_inception', 'alexnet', 'vgg16', "
            r"'vgg19', 'squeezenet1_1', 'dinov2_vitl14', 'clip_vit_l14_336'\), but got \['inceptionv3'\]",
        ),
        (
            {"weights": {"vgg19": 1.5}},
            TypeError,
            r"`weights\['vgg19'\]` to be \"default\", a file path, None",
        ),
    ],
)
def test_bad_options_keys_and_weights(kwargs, error, match):
    with pytest.raises(error, match=match):
        _callback(**kwargs)


def test_a_single_weights_value_is_bad_as_a_whole():
    with pytest.raises(
        TypeError, match=r"Expected `weights` to be \"default\", a file path, None .* but got int"
    ):
        ImageMetricsCallback(("psnr",), weights=3)


# ---------------------------------------------------------------------- every registry name


@pytest.mark.parametrize("name", [line.split(":", 1)[0] for line in describe()])
def test_every_name_of_the_registry_is_accepted(name):
    """What ``percep-lightning evaluate --list-metrics`` prints, the callback takes by the same names."""
    assert name in METRICS
    callback = ImageMetricsCallback([name], keys={"content": "content", "style": "style"})
    assert callback.metric_names[0] == name
    # a derived metric brings the metrics it combines, logged under their own names
    assert callback.metric_names[1:] == METRICS[name].requires
    # `ddp_spawn` pickles the callback to send it to its processes
    assert pickle.loads(pickle.dumps(callback)).metric_names == callback.metric_names


def test_names_only_evaluate_knew_before(tmp_path, photos):
    """psnr_y / ssim_y (the BasicSR luma conventions) log what the functions give; lpips_vgg, fid_style and the
    StyleID names are accepted with the roles they read."""
    callback = ImageMetricsCallback(
        ["psnr_y", "lpips_vgg", "fid_style", "lpips_gray", "lpips_content", "fid_art"],
        keys={"style": "style"},
    )
    assert callback.metric_names == (
        "psnr_y",
        "lpips_vgg",
        "fid_style",
        "lpips_gray",
        "lpips_content",
        "fid_art",
    )

    val = _photo_loader(photos, 5, 48)
    recorder = Recorder()
    _trainer(tmp_path, [ImageMetricsCallback(["psnr_y", "ssim_y"]), recorder]).fit(
        TinyModule(), loaders(2)[0], val
    )
    images = _validation_images(val, TinyModule())
    preds, target = images["preds"].double(), images["target"].double()
    expected_psnr = psnr(preds, target, data_range=1.0, channel="y", reduction="none").mean()
    expected_ssim = ssim(preds, target, data_range=1.0, channel="y", reduction="none").mean()
    assert set(recorder.values[0]) == {"val/psnr_y", "val/ssim_y"}
    assert recorder.values[0]["val/psnr_y"] == pytest.approx(float(expected_psnr), rel=1e-6)
    assert recorder.values[0]["val/ssim_y"] == pytest.approx(float(expected_ssim), rel=1e-5)


def test_fid_style_reads_the_style_key(tmp_path):
    """fid_style compares with the style images: a step output without them fails in the sanity check."""
    module = TinyModule()
    callback = _callback(metrics=("fid_style",), keys={"style": "style"})
    train, val = loaders(2)
    with pytest.raises(
        ValueError, match=r"needs \['style'\] in the `validation_step` output.*`keys\['style'\]`='style'"
    ):
        _trainer(tmp_path, [callback], num_sanity_val_steps=1).fit(module, train, val)
    assert module.scale.item() == 1.0


def test_one_weights_value_reaches_the_trunk_an_option_picks(tmp_path, monkeypatch):
    """``weights=None`` (random) applies to every network, the LPIPS trunk that ``options`` picks included: no
    official file is looked up."""
    import percep_lightning.backbones.weights as weights_module

    def no_fetch(name, **kwargs):
        raise AssertionError(f"the official {name} weights were looked up")

    monkeypatch.setattr(weights_module, "fetch", no_fetch)
    recorder = Recorder()
    callback = ImageMetricsCallback(["lpips"], options={"lpips": {"net": "squeeze"}}, weights=None)
    _trainer(tmp_path, [callback, recorder]).fit(TinyModule(), *loaders(2))
    assert np.isfinite(recorder.values[0]["val/lpips"])


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


def test_precision_recall_density_coverage_are_names_of_prdc():
    from percep_lightning.callbacks.metric_set import MetricSet

    metric_set = MetricSet(["precision", "coverage"], {"prdc": {"k": 3}})
    assert metric_set.names == ("prdc",)
    assert metric_set.entries["prdc"].logs == ("precision", "recall", "density", "coverage")
    assert metric_set.entries["prdc"].options == {"k": 3, "features": "dinov2"}
