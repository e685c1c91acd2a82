"""Image cosine similarity: the thumbnail formula written out in numpy + Pillow, on real photographs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from percep_lightning.functional import image_cosine_similarity


def _photo(name: str) -> np.ndarray:
    """A scikit-image photograph at its native size, HWC uint8 (grey ones stay 2-D)."""
    return getattr(data, name)()


def _tensor(image: np.ndarray) -> torch.Tensor:
    """HWC (or HW) uint8 -> (1, C, H, W) uint8."""
    if image.ndim == 2:
        image = image[..., None]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


def _cosine(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def seed_thumbnail_similarity(a: np.ndarray, b: np.ndarray, size: int = 64) -> float:
    """The formula: Pillow resize to size x size, mean over channels, flatten, dot / (norm * norm)."""

    def vector(image: np.ndarray) -> np.ndarray:
        thumbnail = np.asarray(Image.fromarray(image).resize((size, size)), dtype=np.float64)
        return (thumbnail.mean(axis=2) if thumbnail.ndim == 3 else thumbnail).flatten()

    return _cosine(vector(a), vector(b))


PAIRS = [("astronaut", "coffee"), ("chelsea", "rocket"), ("coffee", "chelsea"), ("astronaut", "camera")]


@pytest.mark.parametrize(("first", "second"), PAIRS)
@pytest.mark.parametrize("size", [64, 32])
def test_thumbnail_greyscale_matches_the_formula(first: str, second: str, size: int) -> None:
    a, b = _photo(first), _photo(second)
    ours = image_cosine_similarity(_tensor(a), _tensor(b), size=size, greyscale=True)
    assert ours.dtype == torch.float64
    assert float(ours) == pytest.approx(seed_thumbnail_similarity(a, b, size), abs=1e-6)


@pytest.mark.parametrize(("first", "second"), PAIRS[:3])
def test_thumbnail_colour_keeps_the_channels(first: str, second: str) -> None:
    a, b = _photo(first), _photo(second)

    def vector(image: np.ndarray) -> np.ndarray:
        thumbnail = np.asarray(Image.fromarray(image).resize((64, 64)), dtype=np.float64)
        return thumbnail.transpose(2, 0, 1).flatten()

    ours = image_cosine_similarity(_tensor(a), _tensor(b))
    assert float(ours) == pytest.approx(_cosine(vector(a), vector(b)), abs=1e-6)


def test_float_images_are_resized_without_rounding() -> None:
    a, b = _photo("astronaut"), _photo("chelsea")

    def vector(image: np.ndarray) -> np.ndarray:
        planes = image.astype(np.float32).transpose(2, 0, 1) / 255
        return np.stack(
            [np.asarray(Image.fromarray(p).resize((48, 48), Image.Resampling.BICUBIC)) for p in planes]
        ).astype(np.float64)

    ta, tb = (_tensor(x).float() / 255 for x in (a, b))
    ours = image_cosine_similarity(ta, tb, size=48, greyscale=True)
    assert float(ours) == pytest.approx(
        _cosine(vector(a).mean(0).flatten(), vector(b).mean(0).flatten()), abs=1e-6
    )


def test_plain_flattened_form_and_batches() -> None:
    a = np.stack([_photo("astronaut")[:300, :400], _photo("coffee")[:300, :400]])
    b = np.stack([_photo("rocket")[:300, :400], _photo("chelsea")[:300, :400]])
    ta, tb = torch.from_numpy(a).permute(0, 3, 1, 2), torch.from_numpy(b).permute(0, 3, 1, 2)
    ours = image_cosine_similarity(ta, tb, size=None, reduction="none")
    expected = [
        _cosine(x.astype(np.float64).flatten(), y.astype(np.float64).flatten())
        for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12)
    grey = image_cosine_similarity(ta, tb, size=None, greyscale=True, reduction="none")
    expected = [
        _cosine(x.astype(np.float64).mean(2).flatten(), y.astype(np.float64).mean(2).flatten())
        for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(grey.numpy(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(image_cosine_similarity(ta, tb, size=None), ours.mean())
    torch.testing.assert_close(image_cosine_similarity(ta, tb, size=None, reduction="sum"), ours.sum())
    thumbnails = image_cosine_similarity(ta, tb, greyscale=True, reduction="none")
    for i in range(2):
        assert float(thumbnails[i]) == pytest.approx(seed_thumbnail_similarity(a[i], b[i]), abs=1e-6)


def test_scale_invariance_and_black_images() -> None:
    a = _tensor(_photo("coffee")).double()
    torch.testing.assert_close(
        image_cosine_similarity(a, 0.25 * a, size=None), torch.tensor(1.0, dtype=torch.float64)
    )
    assert float(image_cosine_similarity(a, torch.zeros_like(a), size=None)) == 0.0


def test_errors() -> None:
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"as many images, but got 2 and 1"):
        image_cosine_similarity(x, x[:1])
    with pytest.raises(ValueError, match=r"same channel count unless greyscale=True, but got 3 and 1"):
        image_cosine_similarity(x, x[:, :1])
    with pytest.raises(ValueError, match=r"same image size with size=None .* \(16, 16\) and \(16, 8\)"):
        image_cosine_similarity(x, x[..., :8], size=None)
    with pytest.raises(ValueError, match=r"`size` to be >= 1, but got 0"):
        image_cosine_similarity(x, x, size=0)
    with pytest.raises(
        ValueError, match=r"`a` to have shape \(N, 3, H, W\) or \(N, 1, H, W\), but got \(3, 16, 16\)"
    ):
        image_cosine_similarity(x[0], x[0])
    with pytest.raises(ValueError, match=r"`b` to be finite"):
        image_cosine_similarity(x, torch.full_like(x, float("nan")))
    with pytest.raises(TypeError, match=r"both uint8 or both floating point"):
        image_cosine_similarity(x, (x * 255).byte())
    with pytest.raises(ValueError, match=r"`reduction` to be one of"):
        image_cosine_similarity(x, x, reduction="avg")
    # grey against colour is fine once channels are averaged
    assert image_cosine_similarity(x, x[:, :1], greyscale=True, reduction="none").shape == (2,)
