"""Colour histogram baseline: against a per-pixel reference in exact arithmetic, and by hand."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_core.models.color_histogram import color_histogram_features


def _hsv_bins(r: int, g: int, b: int, bins: int) -> tuple[int, int, int]:
    """Textbook RGB -> HSV in exact fractions (hue in turns), then the bin of each channel."""
    mx, mn = max(r, g, b), min(r, g, b)
    d = mx - mn
    if d == 0:
        h = Fraction(0)
    elif mx == r:
        h = (Fraction(g - b, d) / 6) % 1
    elif mx == g:
        h = (2 + Fraction(b - r, d)) / 6
    else:
        h = (4 + Fraction(r - g, d)) / 6
    s = Fraction(d, mx) if mx else Fraction(0)
    return min(int(h * bins), bins - 1), min(int(s * bins), bins - 1), mx * bins // 256


def _reference(images: np.ndarray, bins: int, stripes: int, space: str) -> np.ndarray:
    n, h, w, _ = images.shape
    out = np.zeros((n, stripes * 3 * bins))
    for i in range(n):
        for y in range(h):
            stripe = y * stripes // h
            for x in range(w):
                r, g, b = (int(v) for v in images[i, y, x])
                idx = (
                    _hsv_bins(r, g, b, bins) if space == "hsv" else (r * bins // 256, g * bins // 256, b * bins // 256)
                )
                for c in range(3):
                    out[i, (stripe * 3 + c) * bins + idx[c]] += 1
        out[i] /= out[i].sum()
    return out


@pytest.mark.parametrize("space", ["hsv", "rgb"])
@pytest.mark.parametrize("bins, stripes", [(8, 1), (8, 3), (5, 4), (16, 7)])
def test_matches_per_pixel_reference(space: str, bins: int, stripes: int) -> None:
    rng = np.random.default_rng(bins * 10 + stripes)
    images = rng.integers(0, 256, size=(3, 9, 5, 3), dtype=np.uint8)
    # Values on bin edges and the special cases: greys (no hue), black, pure primaries.
    images[0, 0, :] = [[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0], [0, 0, 255]]
    images[0, 1, :] = [[8, 4, 0], [60, 255, 0], [32, 64, 96], [255, 191, 0], [100, 0, 75]]
    ours = color_histogram_features(images, bins=bins, stripes=stripes, color_space=space)
    assert ours.shape == (3, stripes * 3 * bins) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _reference(images, bins, stripes, space), atol=1e-6)


def test_hand_worked_two_colour_image() -> None:
    img = np.zeros((1, 4, 2, 3), np.uint8)
    img[0, :2] = (255, 0, 0)  # red top: hue 0, saturation 1, value 255
    img[0, 2:] = (0, 0, 255)  # blue bottom: hue 2/3, saturation 1, value 255
    f = color_histogram_features(img, bins=3, stripes=2)  # layout (stripe, channel, bin)
    expected = np.zeros(2 * 3 * 3)
    expected[[0, 5, 8]] = 1 / 6  # stripe 0: hue bin 0, saturation bin 2, value bin 2
    expected[[9 + 2, 9 + 5, 9 + 8]] = 1 / 6  # stripe 1: hue 2/3 -> bin 2
    np.testing.assert_allclose(f[0], expected, atol=1e-7)
    whole = color_histogram_features(img, bins=3, stripes=1)[0]
    np.testing.assert_allclose(whole, [1 / 6, 0, 1 / 6, 0, 0, 1 / 3, 0, 0, 1 / 3], atol=1e-7)


def test_properties_and_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 16, 8, 3), dtype=np.uint8)
    f = color_histogram_features(images)
    np.testing.assert_allclose(f.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(color_histogram_features(images[:, :, ::-1].copy()), f)  # no layout within a stripe
    np.testing.assert_array_equal(color_histogram_features(images, chunk_size=3), f)
    np.testing.assert_array_equal(color_histogram_features(torch.from_numpy(images)), f)
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")  # lossless, so the pixels come back unchanged
        Image.fromarray(im).save(paths[-1])
    np.testing.assert_array_equal(color_histogram_features(paths, chunk_size=3), f)


def test_bad_input_raises(tmp_path: Path) -> None:
    good = np.zeros((2, 8, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        color_histogram_features(good.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        color_histogram_features(good[..., 0])
    with pytest.raises(ValueError, match="stripes"):
        color_histogram_features(good, stripes=9)
    with pytest.raises(ValueError, match="bins"):
        color_histogram_features(good, bins=0)
    with pytest.raises(ValueError, match="color_space"):
        color_histogram_features(good, color_space="lab")
    with pytest.raises(ValueError, match="empty"):
        color_histogram_features([])
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((6, 4, 3), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match="one size"):
        color_histogram_features([tmp_path / "a.png", tmp_path / "b.png"])
    (tmp_path / "c.jpg").write_bytes(b"not an image")
    with pytest.raises(OSError, match="c.jpg"):
        color_histogram_features([tmp_path / "c.jpg"])
