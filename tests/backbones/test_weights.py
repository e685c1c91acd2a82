"""The ``weights`` argument: default cache/download, offline error, CLI."""

from __future__ import annotations

import time

import pytest
import torch

from percep_lightning import cli
from percep_lightning.backbones import WEIGHTS, FIDInceptionV3, TorchvisionFeatures, WeightsUnavailableError
from percep_lightning.backbones import weights as w


@pytest.fixture
def unreachable(monkeypatch):
    """Point every official URL at a closed local port: the download fails at once."""
    for name, spec in list(WEIGHTS.items()):
        monkeypatch.setitem(
            WEIGHTS,
            name,
            w.WeightsSpec(
                spec.name,
                spec.filename,
                "http://127.0.0.1:9/" + spec.filename,
                spec.sha256_prefix,
                spec.description,
            ),
        )


@pytest.mark.parametrize("arch", ["vgg19", "alexnet"])
def test_default_offline_raises_quickly_with_ways_out(arch, unreachable, tmp_path):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        TorchvisionFeatures(arch, ["relu1"] if arch == "alexnet" else ["relu1_1"], weights="default")
    assert time.monotonic() - start < 10
    message = str(info.value)
    spec = WEIGHTS[arch]
    assert spec.filename in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / spec.filename) in message
    assert spec.url in message
    assert f"percep-lightning weights download {arch}" in message
    assert "weights=..." in message


def test_default_offline_inception(unreachable):
    with pytest.raises(WeightsUnavailableError, match=r"pt_inception-2015-12-05-6726825d\.pth"):
        FIDInceptionV3(weights="default")


def test_default_reads_the_cache(torchvision_weights, tmp_path, unreachable, photos):
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "alexnet-owt-7be5be79.pth").write_bytes(torchvision_weights("alexnet").read_bytes())
    from_cache = TorchvisionFeatures("alexnet", ["relu2"], weights="default")
    from_path = TorchvisionFeatures("alexnet", ["relu2"], weights=torchvision_weights("alexnet"))
    x = photos(1, 48)
    torch.testing.assert_close(from_cache(x)["relu2"], from_path(x)["relu2"], rtol=0, atol=0)


def test_download_checks_hash_and_is_atomic(monkeypatch, tmp_path):
    import io

    class _Response(io.BytesIO):
        headers = {"Content-Length": "5"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(w.urllib.request, "urlopen", lambda url, timeout: _Response(b"hello"))
    with pytest.raises(WeightsUnavailableError, match=r"SHA-256 .* does not start with dcbb9e9d"):
        w.fetch("vgg19")
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert list(checkpoints.iterdir()) == []  # nothing half-written is left behind

    import hashlib

    prefix = hashlib.sha256(b"hello").hexdigest()[:8]
    monkeypatch.setitem(
        WEIGHTS, "vgg19", w.WeightsSpec("vgg19", f"vgg19-{prefix}.pth", "http://x", prefix, "d")
    )
    path = w.fetch("vgg19")
    assert path.read_bytes() == b"hello"
    assert path.parent == checkpoints


def test_unknown_name():
    with pytest.raises(ValueError, match=r"Unknown weights name 'vgg11'; expected one of \['alexnet'"):
        w.fetch("vgg11")


def test_cli_list(capsys, torchvision_weights, tmp_path):
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "squeezenet1_1-b8a52dc0.pth").write_bytes(torchvision_weights("squeezenet1_1").read_bytes())
    assert cli.main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("squeezenet1_1") and " yes " in line for line in lines)
    assert any(line.startswith("vgg19") and " no " in line and "vgg19-dcbb9e9d.pth" in line for line in lines)


def test_cli_download_offline_fails_cleanly(capsys, unreachable):
    assert cli.main(["weights", "download", "vgg16"]) == 1
    assert "percep-lightning weights download vgg16" in capsys.readouterr().err
    assert cli.main(["weights", "download"]) == 2
    assert cli.main(["weights", "download", "resnet"]) == 2


@pytest.mark.parametrize("value", [0.5, 1, True, {"lpips": 0.5}, {"perceptual": 1, "pixel": 0.1}])
@pytest.mark.parametrize(
    "build",
    [
        lambda weights: TorchvisionFeatures("vgg19", ["relu1_1"], weights=weights),
        lambda weights: TorchvisionFeatures("alexnet", ["relu1"], weights=weights),
        lambda weights: FIDInceptionV3(weights=weights),
        lambda weights: __import__("percep_lightning.losses", fromlist=["LPIPSLoss"]).LPIPSLoss(
            weights=weights
        ),
    ],
    ids=["vgg19", "alexnet", "inception", "lpips"],
)
def test_loss_weights_given_as_backbone_weights_raise_a_value_error(build, value):
    """A number or a mapping of numbers where a backbone's weights belong (a loss weight misplaced)."""
    with pytest.raises(
        ValueError, match=r"Expected `weights` of the \w+ backbone to be 'default', a file path"
    ):
        build(value)


def test_fetch_all_reports_every_missing_file_at_once(unreachable, tmp_path, torchvision_weights):
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / WEIGHTS["alexnet"].filename).write_bytes(torchvision_weights("alexnet").read_bytes())
    local = torchvision_weights("vgg16")
    with pytest.raises(w.MissingWeightsError) as info:
        w.fetch_all(
            ["art_inception", "alexnet", "vgg19", "vgg16", "squeezenet1_1", "vgg19", "inception_fid"],
            {"vgg16": local, "squeezenet1_1": None, "inception_fid": tmp_path / "missing.pth"},
        )
    assert isinstance(info.value, WeightsUnavailableError)  # callers catching the old error still do
    assert info.value.names == ("art_inception", "vgg19", "inception_fid")
    message = str(info.value)
    for name in ("art_inception", "vgg19"):
        assert f"  {name}: expected at {cache / WEIGHTS[name].filename}" in message
        assert WEIGHTS[name].url in message
    assert f"  inception_fid: no file at {str(tmp_path / 'missing.pth')!r}" in message
    assert "`percep-lightning weights download art_inception vgg19`" in message
    assert "the module's `weights=...`" in message and "--weights" not in message
    assert "alexnet" not in message and "vgg16" not in message and "squeezenet" not in message
    resolved = w.fetch_all(["alexnet", "vgg16", "squeezenet1_1"], {"vgg16": local, "squeezenet1_1": None})
    assert resolved == {"alexnet": cache / WEIGHTS["alexnet"].filename, "vgg16": local, "squeezenet1_1": None}
    with pytest.raises(ValueError, match=r"Unknown weights name 'vgg11'"):
        w.fetch_all(["vgg11"])


def test_cli_download_names_every_failure_in_one_message(capsys, unreachable):
    assert cli.main(["weights", "download", "vgg16", "alexnet"]) == 1
    err = capsys.readouterr().err
    assert err.count("weights files needed by this run are unavailable") == 1
    assert "`percep-lightning weights download vgg16 alexnet`" in err
    assert "vgg16: expected at" in err and "alexnet: expected at" in err


def test_downloaded_file_follows_the_umask(monkeypatch, tmp_path):
    import hashlib
    import io
    import os
    import stat

    class _Response(io.BytesIO):
        headers = {"Content-Length": "5"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    prefix = hashlib.sha256(b"hello").hexdigest()[:8]
    monkeypatch.setitem(
        WEIGHTS, "vgg19", w.WeightsSpec("vgg19", f"vgg19-{prefix}.pth", "http://x", prefix, "d")
    )
    monkeypatch.setattr(w.urllib.request, "urlopen", lambda url, timeout: _Response(b"hello"))
    previous = os.umask(0o022)
    try:
        path = w.fetch("vgg19")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the other users of a shared cache
