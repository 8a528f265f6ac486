"""Transforms on hand-made images whose result is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from reid_core.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomErasing,
    build_transforms,
    denormalize,
)

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def random_uint8(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(3, H, W) uint8 image."""
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, height, width), dtype=np.uint8))


def normalise_by_formula(image: torch.Tensor) -> torch.Tensor:
    """(x / 255 - mu) / sigma, per channel."""
    return (image.double() / 255 - MEAN.double()) / STD.double()


def test_normalisation_matches_formula() -> None:
    image = random_uint8(16, 8)
    out = build_transforms(16, 8, is_train=False)(image)  # same size: resize is the identity
    assert out.shape == (3, 16, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), normalise_by_formula(image), atol=1e-6, rtol=0)
    torch.testing.assert_close(denormalize(out).double(), image.double() / 255, atol=1e-6, rtol=0)
    batch = torch.stack([out, out])
    assert denormalize(batch).shape == (2, 3, 16, 8)


def test_resize_and_pil_input_agree_with_tensor_input() -> None:
    image = random_uint8(32, 16)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    transform = build_transforms(16, 8, is_train=False)
    out_tensor, out_pil = transform(image), transform(pil)
    assert out_tensor.shape == (3, 16, 8)
    torch.testing.assert_close(out_tensor, out_pil)
    # a constant image stays constant through the resize
    flat = torch.full((3, 32, 16), 200, dtype=torch.uint8)
    expected = normalise_by_formula(flat)[:, :16, :8].float()
    torch.testing.assert_close(transform(flat), expected, atol=1e-5, rtol=0)


def test_flip_mirrors() -> None:
    image = random_uint8(16, 8)
    plain = build_transforms(16, 8, is_train=False)(image)
    flipped = build_transforms(16, 8, is_train=True, flip_p=1.0, pad=0, random_erasing_p=0.0)(image)
    torch.testing.assert_close(flipped, plain.flip(-1))
    same = build_transforms(16, 8, is_train=True, flip_p=0.0, pad=0, random_erasing_p=0.0)(image)
    torch.testing.assert_close(same, plain)


def test_pad_and_crop_is_a_shift_with_zero_border() -> None:
    image = random_uint8(16, 8)
    pad = 3
    padded = torch.zeros(3, 16 + 2 * pad, 8 + 2 * pad, dtype=torch.uint8)
    padded[:, pad : pad + 16, pad : pad + 8] = image
    transform = build_transforms(16, 8, is_train=True, flip_p=0.0, pad=pad, random_erasing_p=0.0)
    offsets = set()
    torch.manual_seed(0)
    for _ in range(40):
        out = transform(image)
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.allclose(out, normalise_by_formula(padded[:, dy : dy + 16, dx : dx + 8]).float(), atol=1e-5)
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 5  # the crop position is random


def is_rectangle(mask: torch.Tensor) -> tuple[int, int] | None:
    """(h, w) if the True cells of a (H, W) mask form one filled rectangle, else None."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    if len(rows) == 0:
        return None
    box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return (box.shape[0], box.shape[1]) if bool(box.all()) and int(mask.sum()) == box.numel() else None


def test_random_erasing_fills_a_rectangle_within_bounds() -> None:
    height, width = 64, 32
    image = torch.full((3, height, width), 2.0)  # a value the fill never takes
    erase = RandomErasing(p=1.0, value=(0.1, 0.2, 0.3))
    torch.manual_seed(0)
    for _ in range(300):
        out = erase(image)
        mask = out[0] != 2.0  # (H, W)
        size = is_rectangle(mask)
        assert size is not None
        h, w = size
        assert 0.02 * height * width <= h * w <= 0.4 * height * width  # Zhong et al.: s_l, s_h
        # h = round(sqrt(S r)), w = round(sqrt(S / r)): h / w = r in [0.3, 1/0.3] up to rounding
        assert 0.3 * (w - 0.5) <= h + 0.5 and h - 0.5 <= (w + 0.5) / 0.3
        for channel, value in enumerate((0.1, 0.2, 0.3)):
            assert torch.all(out[channel][mask] == value) and torch.all(out[channel][~mask] == 2.0)
    assert torch.all(image == 2.0)  # the input is not modified


def test_random_erasing_probability() -> None:
    image = torch.zeros(3, 32, 16)
    assert all(torch.equal(RandomErasing(p=0.0)(image), image) for _ in range(20))
    torch.manual_seed(1)
    erased = sum(not torch.equal(RandomErasing(p=0.5, value=(1.0, 1.0, 1.0))(image), image) for _ in range(400))
    assert abs(erased / 400 - 0.5) < 0.1  # binomial sd 0.025


def test_training_pipeline_erases_with_the_mean() -> None:
    # mean fill before normalising: erased pixels are exactly 0 after normalisation
    image = torch.full((3, 32, 16), 255, dtype=torch.uint8)  # normalised value > 1 everywhere
    transform = build_transforms(32, 16, is_train=True, flip_p=0.0, pad=0, random_erasing_p=1.0)
    torch.manual_seed(0)
    out = transform(image)
    mask = out[0] == 0
    size = is_rectangle(mask)
    assert size is not None and 0.02 * 32 * 16 <= math.prod(size) <= 0.4 * 32 * 16
    assert torch.all(out[:, mask] == 0)


def test_training_output_shape_with_all_augmentations() -> None:
    transform = build_transforms(24, 12, is_train=True, color_jitter=True)
    for height, width in [(50, 20), (10, 30)]:
        assert transform(random_uint8(height, width)).shape == (3, 24, 12)


def test_bad_arguments_and_inputs() -> None:
    with pytest.raises(ValueError, match="flip_p"):
        build_transforms(16, 8, True, flip_p=1.5)
    with pytest.raises(ValueError, match="pad"):
        build_transforms(16, 8, True, pad=-1)
    with pytest.raises(ValueError, match="std"):
        build_transforms(16, 8, True, std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="mean"):
        build_transforms(16, 8, True, mean=(0.5, 0.5))
    transform = build_transforms(16, 8, False)
    with pytest.raises(ValueError, match="uint8"):
        transform(torch.rand(3, 16, 8))  # a float image would be silently mis-scaled
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        transform(torch.zeros(1, 16, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="PIL"):
        transform(np.zeros((16, 8, 3), dtype=np.uint8))
