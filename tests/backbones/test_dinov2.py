"""DINOv2 (FD-DINOv2's encoder): dgm-eval's transform and the official forward, from random official-format weights."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch
from _dinov2_reference import dgm_eval_transform, official_forward, random_official_state, resample_pos_embed

from percep_lightning.backbones import DINOV2_ARCHS, WEIGHTS, DINOv2, DINOv2Arch, WeightsUnavailableError
from percep_lightning.backbones import weights as w
from percep_lightning.metrics._images import extract

TINY = DINOv2Arch(32, 2, 2)
TINY_SWIGLU = DINOv2Arch(32, 2, 2, ffn="swiglu")
RTOL = 1e-4  # float32 features against the float64 reference, relative to the largest feature


def _photo(name: str) -> np.ndarray:
    """A scikit-image photograph at its own size, uint8: astronaut 512x512, coffee 400x600, chelsea 300x451."""
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)())


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()


def _reference(state: dict, image: np.ndarray, *, size_based_pos: bool = False) -> torch.Tensor:
    return official_forward(
        state, dgm_eval_transform(image)[None], TINY.num_heads, size_based_pos=size_based_pos
    )


def _relative_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    return float((actual.double() - reference).abs().max() / reference.abs().max())


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> tuple[dict, object]:
    """``(state, path)``: random tiny weights saved with ``torch.save`` in the official key format."""
    state = random_official_state(TINY.embed_dim, TINY.depth, seed=1)
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_tiny_pretrain.pth"
    torch.save(state, path)
    return state, path


@pytest.mark.parametrize("arch", [TINY, TINY_SWIGLU], ids=["mlp", "swiglu"])
def test_features_match_the_official_forward_on_photos(arch, tmp_path):
    state = random_official_state(arch.embed_dim, arch.depth, swiglu=arch.ffn == "swiglu")
    torch.save(state, tmp_path / "weights.pth")
    net = DINOv2(arch, weights=tmp_path / "weights.pth")
    for name in ("astronaut", "coffee", "chelsea"):
        image = _photo(name)
        features = net.extract_features(_tensor(image))
        assert features.dtype == torch.float32 and features.shape == (1, arch.embed_dim)
        reference = _reference(state, image)
        assert _relative_error(features, reference) < RTOL, name
        # timm's load-time resampling (an output size, antialiased) would fail the same comparison
        resampled_by_size = _reference(state, image, size_based_pos=True)
        assert _relative_error(resampled_by_size, reference) > 100 * RTOL, name


def test_pos_embed_is_the_official_run_time_resampling(tiny_file):
    from timm.layers import resample_abs_pos_embed

    state, path = tiny_file
    loaded = DINOv2(TINY, weights=path).vit.pos_embed.detach().double()
    # the official call runs in float32 (``pos_embed.float()``): the same operation gives the same numbers
    assert torch.equal(loaded.float(), resample_pos_embed(state["pos_embed"].float(), 16))
    official = resample_pos_embed(state["pos_embed"].double(), 16)
    scale = float(official.abs().max())
    assert float((loaded - official).abs().max()) < RTOL * scale
    assert torch.equal(loaded[:, 0], state["pos_embed"][:, 0].double())  # the class token's, unchanged
    by_timm = resample_abs_pos_embed(state["pos_embed"], (16, 16), num_prefix_tokens=1).double()
    assert float((by_timm - official).abs().max()) > 100 * RTOL * scale


def test_a_batch_equals_the_images_one_by_one(tiny_file, photos):
    net = DINOv2(TINY, weights=tiny_file[1])
    images = photos(3, 64, dtype=torch.uint8)
    together = net.extract_features(images)
    alone = torch.cat([net.extract_features(image[None]) for image in images])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    assert net(images).shape == (3, TINY.embed_dim)
    assert net.extract_features(images[:0]).shape == (0, TINY.embed_dim)


def test_grey_images_are_read_as_rgb(tiny_file):
    """Through the metrics' ``extract``, a grey image is dgm-eval's ``.convert('RGB')`` of it."""
    state, path = tiny_file
    net = DINOv2(TINY, weights=path)
    grey = _photo("camera")[::2, ::3]  # 256x171 grey
    features = extract(net, torch.from_numpy(np.ascontiguousarray(grey))[None, None], "images")
    assert _relative_error(features, _reference(state, np.ascontiguousarray(grey))) < RTOL
    with pytest.raises(
        ValueError, match=r"Expected `images` of shape \(N, 3, H, W\), but got \(1, 1, 8, 8\)"
    ):
        net.extract_features(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


def test_torch_resize_is_close_to_pil(tiny_file):
    net_pil = DINOv2(TINY, weights=tiny_file[1])
    net_torch = DINOv2(TINY, weights=tiny_file[1], resize="torch")
    images = torch.cat([_tensor(_photo("coffee")), _tensor(_photo("coffee")[:, ::-1].copy())])
    pil, fast = net_pil.extract_features(images), net_torch.extract_features(images)
    error = float((fast - pil).abs().max() / pil.abs().max())
    assert 0 < error < 0.01  # a few 8-bit steps on a few pixels (about 4e-4 here), not another feature space


def test_identity_names_the_arch_resize_and_weights(tiny_file, tmp_path):
    state, path = tiny_file
    net = DINOv2(TINY, weights=path)
    assert net.identity.startswith("dinov2_vit32x2h2_mlp:pil:")
    assert DINOv2(TINY, weights=state).identity == net.identity  # a state dict, the same numbers
    assert DINOv2(TINY, weights=path, resize="torch").identity.startswith("dinov2_vit32x2h2_mlp:torch:")
    other = {**state, "norm.bias": state["norm.bias"] + 1}
    assert DINOv2(TINY, weights=other).identity != net.identity
    named = DINOv2Arch(32, 2, 2, name="tiny")
    assert DINOv2(named, weights=path).identity.split(":")[0] == "dinov2_tiny"


def test_frozen_and_following_the_extractor_contract(tiny_file):
    from percep_lightning.backbones import FeatureExtractor

    net = DINOv2(TINY, weights=tiny_file[1])
    assert isinstance(net, FeatureExtractor)
    assert net.input_format == "uint8" and net.num_features == TINY.embed_dim
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.train().training
    assert "mean" not in net.state_dict()  # the ImageNet statistics are not weights


def test_state_dict_given_is_copied_not_adopted(tiny_file):
    state = {k: v.clone() for k, v in tiny_file[0].items()}
    net = DINOv2(TINY, weights=state)
    before = net.vit.norm.bias.clone()
    state["norm.bias"].add_(1)
    assert torch.equal(net.vit.norm.bias, before)


def test_wrong_keys_and_shapes_name_the_file(tiny_file, tmp_path):
    state, _ = tiny_file
    broken = {k: v for k, v in state.items() if k != "blocks.1.ls2.gamma"}
    broken["pos_embed"] = state["pos_embed"][:, :257]  # a 224-px grid instead of the official 37x37
    broken["head.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(RuntimeError) as info:
        DINOv2(TINY, weights=path)
    message = str(info.value)
    assert str(path) in message and "the official DINOv2 format" in message
    assert "missing keys (1): blocks.1.ls2.gamma" in message
    assert "unexpected keys (1): head.weight" in message
    assert "shape of pos_embed: expected (1, 1370, 32), got (1, 257, 32)" in message
    without_mask = {k: v for k, v in state.items() if k != "mask_token"}
    with pytest.raises(
        RuntimeError, match=r"missing keys \(1\): mask_token"
    ):  # strict: the official file has it
        DINOv2(TINY, weights=without_mask)
    with pytest.raises(
        RuntimeError, match=r"missing keys .*mlp\.w12\.weight"
    ):  # an MLP file for a SwiGLU arch
        DINOv2(TINY_SWIGLU, weights=state)
    with pytest.raises(RuntimeError, match=r"official DINOv2 format \(dinov2_vits14_pretrain\.pth\)") as info:
        DINOv2("vits14", weights=tiny_file[1])  # raised before the network is built
    assert "shape of blocks.0.attn.qkv.weight: expected (1152, 384), got (96, 32)" in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"Weights file for dinov2_vit32x2h2_mlp not found"):
        DINOv2(TINY, weights=tmp_path / "absent.pth")


def test_default_offline_names_the_official_file(monkeypatch, tmp_path):
    spec = WEIGHTS["dinov2_vitl14"]
    monkeypatch.setitem(
        WEIGHTS,
        spec.name,
        w.WeightsSpec(spec.name, spec.filename, "http://127.0.0.1:9/" + spec.filename, "", spec.description),
    )
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        DINOv2("vitl14")  # raised before the network is built
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "dinov2_vitl14_pretrain.pth") in message
    assert "percep-lightning weights download dinov2_vitl14" in message
    with pytest.raises(ValueError, match=r"dinov2_vit32x2h2_mlp has no official weights file"):
        DINOv2(TINY)


def test_weights_table_has_the_four_official_files():
    names = list(WEIGHTS)
    at = names.index("inception_fid") + 1
    assert names[at : at + 4] == ["dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14"]
    for arch in DINOV2_ARCHS:
        spec = WEIGHTS[f"dinov2_{arch}"]
        assert spec.filename == f"dinov2_{arch}_pretrain.pth"
        assert spec.url == f"https://dl.fbaipublicfiles.com/dinov2/dinov2_{arch}/dinov2_{arch}_pretrain.pth"
        assert spec.sha256_prefix == ""


def test_named_archs_without_building_them():
    assert {k: a.embed_dim for k, a in DINOV2_ARCHS.items()} == {
        "vits14": 384, "vitb14": 768, "vitl14": 1024, "vitg14": 1536,
    }  # fmt: skip
    assert [(a.depth, a.num_heads, a.ffn) for a in DINOV2_ARCHS.values()] == [
        (12, 6, "mlp"), (12, 12, "mlp"), (24, 16, "mlp"), (40, 24, "swiglu"),
    ]  # fmt: skip
    giant = DINOV2_ARCHS["vitg14"].official_shapes()
    assert giant["blocks.39.mlp.w12.weight"] == (8192, 1536) and giant["blocks.39.mlp.w3.weight"] == (
        1536,
        4096,
    )
    assert "blocks.40.norm1.weight" not in giant
    large = DINOV2_ARCHS["vitl14"].official_shapes()
    assert large["pos_embed"] == (1, 1370, 1024) and large["blocks.23.mlp.fc1.weight"] == (4096, 1024)
    assert len(large) == 4 + 3 + 24 * 14


def test_random_weights_warn_and_still_tell_images_apart(photos):
    with pytest.warns(UserWarning, match="random weights"):
        net = DINOv2(DINOv2Arch(32, 2, 2, name="random_tiny"), weights=None)
    features = net.extract_features(photos(2, 48, dtype=torch.uint8))
    assert torch.isfinite(features).all() and not torch.allclose(features[0], features[1], atol=1e-3)


def test_argument_errors(tiny_file):
    path = tiny_file[1]
    with pytest.raises(
        ValueError, match=r"Expected `arch` to be one of \['vitb14', 'vitg14', 'vitl14', 'vits14'\]"
    ):
        DINOv2("vith14", weights=path)
    with pytest.raises(TypeError, match=r"Expected `arch` to be a name or a DINOv2Arch, but got int"):
        DINOv2(14, weights=path)
    with pytest.raises(
        ValueError, match=r"Expected `resize` to be one of \('pil', 'torch'\), but got 'bilinear'"
    ):
        DINOv2(TINY, weights=path, resize="bilinear")
    with pytest.raises(ValueError, match=r"Expected `embed_dim` to be a multiple of `num_heads`"):
        DINOv2Arch(30, 2, 4)
    with pytest.raises(ValueError, match=r"Expected `ffn` to be 'mlp' or 'swiglu'"):
        DINOv2Arch(32, 2, 2, ffn="geglu")
    net = DINOv2(TINY, weights=path)
    with pytest.raises(TypeError, match=r"Expected `images` to be a uint8 tensor, but got torch.float32"):
        net.extract_features(torch.zeros(1, 3, 8, 8))


def test_missing_timm_says_how_to_install_it(monkeypatch, tiny_file):
    monkeypatch.setitem(sys.modules, "timm", None)
    for module in [m for m in sys.modules if m.startswith("timm.")]:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r'pip install "percep-lightning\[dinov2\]"'):
        DINOv2(TINY, weights=tiny_file[1])
