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
