"""CLIPImageEncoder: CMMD's CLIP image embeddings, against the reference pipeline re-expressed with its libraries.

A tiny random CLIP (vision and text towers) is saved as the official checkpoint is published (a full
``CLIPModel`` state dict in ``pytorch_model.bin``, and ``save_pretrained``'s ``config.json`` +
``model.safetensors``). The reference side follows CMMD's PyTorch code: Pillow reads each file, crops the
centred square and resizes it to 336 with ``Image.BICUBIC``; ``float32 / 255``; ``F.interpolate`` bicubic
to the processor's crop size; ``CLIPImageProcessor`` with only ``do_normalize``;
``CLIPVisionModelWithProjection.from_pretrained(...).image_embeds``, divided by its L2 norm.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from percep_lightning.backbones import WEIGHTS, CLIPImageEncoder, WeightsUnavailableError  # noqa: E402
from percep_lightning.backbones import weights as w  # noqa: E402
from percep_lightning.backbones.clip import CLIP_VIT_L14_336, clip_vision_config  # noqa: E402
from percep_lightning.backbones.extractor import FeatureExtractor  # noqa: E402
from percep_lightning.metrics._images import extract  # noqa: E402

SIZE = 336  # the reference's PIL resize and the processor's crop size
TINY = dict(
    hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, image_size=SIZE,
    patch_size=14, projection_dim=16,
)  # fmt: skip
TINY_TEXT = dict(
    hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, vocab_size=99,
    max_position_embeddings=16, projection_dim=16, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)  # fmt: skip
PHOTOS = ("astronaut", "coffee", "chelsea")  # 512x512, 400x600, 300x451


def _tiny_clip(seed: int) -> torch.nn.Module:
    """A random CLIPModel whose norms and biases are random too (nothing is left at a trivial value)."""
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(vision_config=TINY, text_config=TINY_TEXT, projection_dim=16)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
    return model


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A directory with the tiny CLIP as ``pytorch_model.bin`` and as ``save_pretrained`` writes it."""
    directory = tmp_path_factory.mktemp("tiny_clip")
    model = _tiny_clip(0)
    model.save_pretrained(directory)  # config.json + model.safetensors
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory) -> list[Path]:
    """scikit-image's photographs as PNG files, plus a grey one (``camera``) as a one-channel PNG."""
    from PIL import Image
    from skimage import data

    directory = tmp_path_factory.mktemp("photos")
    files = []
    for name in (*PHOTOS, "camera"):
        path = directory / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(path)
        files.append(path)
    return files


def _read_like_cmmd(path: Path) -> np.ndarray:
    """CMMD's reading of one file: centred square, Pillow bicubic to 336, float32, grey tiled to RGB."""
    from PIL import Image

    image = Image.open(path)
    width, height = image.size
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), resample=Image.BICUBIC)
    pixels = np.asarray(image).astype(np.float32)
    return np.tile(pixels[..., None], (1, 1, 3)) if pixels.ndim == 2 else pixels


def _reference_pixels(files: list[Path]) -> torch.Tensor:
    """CMMD's PyTorch preprocessing of a batch of files, up to the network's ``pixel_values``."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    batch = np.stack([_read_like_cmmd(f) for f in files]) / 255.0
    assert batch.dtype == np.float32
    nchw = torch.from_numpy(batch.transpose(0, 3, 1, 2))
    resized = F.interpolate(nchw, size=(SIZE, SIZE), mode="bicubic")
    assert torch.equal(resized, nchw)  # the reference's second resize is an identity at 336 -> 336
    kwargs = dict(
        do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=True,
        image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, crop_size={"height": SIZE, "width": SIZE},
    )  # fmt: skip
    images = resized.permute(0, 2, 3, 1).numpy()
    pixels = transformers.CLIPImageProcessorPil(**kwargs)(images=images, return_tensors="pt")["pixel_values"]
    fast = transformers.CLIPImageProcessor(**kwargs)(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(fast, pixels, rtol=0, atol=1e-6)  # both processor back-ends agree
    return pixels


def _reference_embeddings(model_dir: Path, pixels: torch.Tensor) -> torch.Tensor:
    model = transformers.CLIPVisionModelWithProjection.from_pretrained(model_dir).eval()
    with torch.no_grad():
        embeds = model(pixel_values=pixels).image_embeds
    return embeds / torch.linalg.norm(embeds, dim=-1, keepdim=True)


def _uint8(path: Path) -> torch.Tensor:
    from PIL import Image

    pixels = torch.from_numpy(np.asarray(Image.open(path)).copy())
    return (pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1))[None]


def test_embeddings_match_the_cmmd_reference(tiny_clip, photo_files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    ours = torch.cat([encoder.extract_features(_uint8(f)) for f in photo_files])
    reference = _reference_embeddings(tiny_clip, _reference_pixels(photo_files))
    assert ours.dtype == torch.float32 and ours.shape == (4, 16)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.linalg.norm(ours, dim=-1), torch.ones(4), rtol=0, atol=1e-6)
    assert not torch.allclose(ours[0], ours[1], atol=1e-2)  # the photos give different embeddings


def test_preprocess_equals_the_reference_pixels_exactly(tiny_clip, photo_files):
    encoder = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    for path in photo_files:
        torch.testing.assert_close(
            encoder.preprocess(_uint8(path)), _reference_pixels([path]), rtol=0, atol=0
        )


def test_safetensors_and_vision_only_state_dict_give_the_same_network(tiny_clip):
    from_bin = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    from_safetensors = CLIPImageEncoder(tiny_clip / "model.safetensors", config=TINY)
    full = torch.load(tiny_clip / "pytorch_model.bin", weights_only=True)
    vision = {
        k: v for k, v in full.items() if k.startswith("vision_model.") or k == "visual_projection.weight"
    }
    from_vision_keys = CLIPImageEncoder(vision, config=TINY)
    assert from_bin.identity == from_safetensors.identity == from_vision_keys.identity
    x = torch.randint(0, 256, (2, 3, 40, 52), dtype=torch.uint8)
    torch.testing.assert_close(from_safetensors(x), from_bin(x), rtol=0, atol=0)
    torch.testing.assert_close(from_vision_keys(x), from_bin(x), rtol=0, atol=0)


def test_sdpa_attention_equals_the_eager_attention(tiny_clip, photos):
    encoder = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    assert encoder.model.config._attn_implementation == "sdpa"
    config = transformers.CLIPVisionConfig(**TINY, attn_implementation="eager")
    eager = transformers.CLIPVisionModelWithProjection(config)
    eager.load_state_dict(encoder.model.state_dict())
    pixels = encoder.preprocess(photos(2, 64, torch.uint8))
    with torch.no_grad():
        expected = eager.eval()(pixel_values=pixels).image_embeds
    expected = expected / torch.linalg.norm(expected, dim=-1, keepdim=True)
    got = encoder.model(pixel_values=pixels).image_embeds
    torch.testing.assert_close(
        got / torch.linalg.norm(got, dim=-1, keepdim=True), expected, rtol=0, atol=1e-5
    )


def test_torch_resize_is_close_to_pil(tiny_clip, photo_files):
    pil = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    fast = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY, resize="torch")
    images = _uint8(photo_files[1])  # 400x600: crop, then a downscale
    cosine = (pil(images) * fast(images)).sum(-1)
    assert cosine.item() > 0.99
    assert pil.identity != fast.identity and ":torch:" in fast.identity


def test_grey_images_are_repeated_to_rgb(tiny_clip, photos):
    encoder = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    grey = photos(2, 48, torch.uint8)[:, :1]
    torch.testing.assert_close(encoder(grey), encoder(grey.expand(-1, 3, -1, -1)), rtol=0, atol=0)


def test_feature_extractor_contract(tiny_clip, photos):
    encoder = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    assert isinstance(encoder, FeatureExtractor)
    assert encoder.num_features == 16 and encoder.input_format == "uint8"
    assert encoder.identity.startswith("clip_vision_") and encoder.identity.split(":")[1] == "pil"
    images = photos(2, 40)  # float in [0, 1]: the metrics' extract quantises them first
    torch.testing.assert_close(
        extract(encoder, images, "images"), encoder(photos(2, 40, torch.uint8)), rtol=0, atol=0
    )
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.train().training


def test_identity_follows_the_weights(tiny_clip):
    first = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    other = CLIPImageEncoder(_tiny_clip(1).state_dict(), config=TINY)
    again = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    assert first.identity != other.identity and first.identity == again.identity


def test_full_size_configuration_without_building_it():
    config = clip_vision_config()
    for key, value in CLIP_VIT_L14_336.items():
        assert getattr(config, key) == value
    assert (config.hidden_size, config.num_hidden_layers, config.projection_dim, config.image_size) == (
        1024, 24, 768, 336
    )  # fmt: skip
    assert config.hidden_act == "quick_gelu" and config.layer_norm_eps == 1e-5 and config.patch_size == 14
    given = transformers.CLIPVisionConfig(**TINY, attn_implementation="eager")
    built = clip_vision_config(given)  # a copy with the attention chosen here; the argument is untouched
    assert built.hidden_size == 32 and built._attn_implementation == "sdpa"
    assert given._attn_implementation == "eager"
    spec = WEIGHTS["clip_vit_l14_336"]
    assert spec.url.endswith("openai/clip-vit-large-patch14-336/resolve/main/pytorch_model.bin")
    assert spec.filename == "clip-vit-large-patch14-336.bin"
    names = list(WEIGHTS)
    assert names.index("clip_vit_l14_336") == names.index("art_inception") + 1


def _save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def test_wrong_files_raise_naming_the_file(tiny_clip, tmp_path):
    full = torch.load(tiny_clip / "pytorch_model.bin", weights_only=True)
    missing = _save({k: v for k, v in full.items() if "layers.1." not in k}, tmp_path / "missing.bin")
    with pytest.raises(
        RuntimeError, match=r"missing\.bin do not match the official clip_vit_l14_336 format"
    ) as info:
        CLIPImageEncoder(missing, config=TINY)
    assert "missing keys" in str(info.value) and "vision_model.encoder.layers.1." in str(info.value)
    extra = _save({**full, "vision_model.extra.weight": torch.zeros(1)}, tmp_path / "extra.bin")
    with pytest.raises(RuntimeError, match=r"unexpected keys \(1\): vision_model\.extra\.weight"):
        CLIPImageEncoder(extra, config=TINY)
    with pytest.raises(
        RuntimeError, match=r"shape of visual_projection\.weight: expected \(8, 32\), got \(16, 32\)"
    ):
        CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config={**TINY, "projection_dim": 8})
    text_only = _save({k: v for k, v in full.items() if k.startswith("text_")}, tmp_path / "text.bin")
    with pytest.raises(RuntimeError, match=r"text\.bin hold no CLIP vision tower"):
        CLIPImageEncoder(text_only, config=TINY)
    with pytest.raises(FileNotFoundError, match="clip_vit_l14_336"):
        CLIPImageEncoder(tmp_path / "absent.bin", config=TINY)


def test_old_checkpoints_with_position_ids_load(tiny_clip):
    full = torch.load(tiny_clip / "pytorch_model.bin", weights_only=True)
    full["vision_model.embeddings.position_ids"] = torch.arange(577)[None]
    full["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    reference = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    assert CLIPImageEncoder(full, config=TINY).identity == reference.identity


def test_default_offline_says_which_file_and_where(monkeypatch, tmp_path):
    spec = WEIGHTS["clip_vit_l14_336"]
    closed = w.WeightsSpec(
        spec.name, spec.filename, "http://127.0.0.1:9/pytorch_model.bin", "", spec.description
    )
    monkeypatch.setitem(WEIGHTS, "clip_vit_l14_336", closed)
    with pytest.raises(WeightsUnavailableError) as info:  # raised before any ViT-L is built
        CLIPImageEncoder("default")
    message = str(info.value)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "clip-vit-large-patch14-336.bin") in message
    assert "percep-lightning weights download clip_vit_l14_336" in message


def test_missing_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r'pip install "percep-lightning\[clip\]"'):
        CLIPImageEncoder(None, config=TINY)


def test_bad_arguments_and_inputs(tiny_clip):
    with pytest.raises(
        ValueError, match=r"Expected `resize` to be one of \('pil', 'torch'\), but got 'bilinear'"
    ):
        CLIPImageEncoder(None, resize="bilinear", config=TINY)
    with pytest.raises(
        TypeError, match=r"Expected `config` to be None, a CLIPVisionConfig or a dict, but got int"
    ):
        CLIPImageEncoder(None, config=3)
    encoder = CLIPImageEncoder(tiny_clip / "pytorch_model.bin", config=TINY)
    with pytest.raises(TypeError, match=r"Expected `images` to be a uint8 tensor, but got torch\.float32"):
        encoder(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\) or \(N, 1, H, W\), but got \(1, 4, 8, 8\)"):
        encoder(torch.zeros(1, 4, 8, 8, dtype=torch.uint8))
