"""ImageDataset: decoding, preloading, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from reid_core.data.image_dataset import ImageDataset, ImageLoadError


def write_png(path: Path, seed: int, size: tuple[int, int]) -> np.ndarray:
    """A random RGB PNG (lossless, so the decoded pixels are known); returns (H, W, 3)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture()
def items_and_pixels(tmp_path: Path) -> tuple[list[tuple[str, int, int]], list[np.ndarray]]:
    items, pixels = [], []
    for i, size in enumerate([(8, 4), (10, 6), (7, 5)]):  # real datasets mix image sizes
        path = tmp_path / f"{i}.png"
        pixels.append(write_png(path, i, size))
        items.append((str(path), 10 + i, i % 2))
    return items, pixels


@pytest.mark.parametrize("preload", [False, True])
def test_returns_decoded_image_and_labels(items_and_pixels, preload: bool) -> None:
    items, pixels = items_and_pixels
    data = ImageDataset(items, preload=preload)
    assert len(data) == 3 and data.pids == [10, 11, 12] and data.camids == [0, 1, 0]
    for index in range(3):
        image, pid, camid, returned_index = data[index]
        assert image.dtype == torch.uint8 and image.shape == (3, *pixels[index].shape[:2])
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), pixels[index])  # (H, W, 3)
        assert (pid, camid, returned_index) == (items[index][1], items[index][2], index)


def test_preload_memory_and_cache_safety(items_and_pixels) -> None:
    items, pixels = items_and_pixels
    expected_bytes = sum(p.size for p in pixels)  # uint8: one byte per value
    data = ImageDataset(items, preload=True)
    assert data.memory_bytes == expected_bytes
    assert "preloaded" in repr(data) and "MiB" in repr(data)
    assert ImageDataset(items).memory_bytes == 0 and "not preloaded" in repr(ImageDataset(items))

    def in_place_zero(image: torch.Tensor) -> torch.Tensor:
        return image.zero_()

    zeroing = ImageDataset(items, transform=in_place_zero, preload=True)
    assert zeroing[0][0].sum() == 0
    zeroing.transform = None
    np.testing.assert_array_equal(zeroing[0][0].permute(1, 2, 0).numpy(), pixels[0])  # cache intact


def test_transform_is_applied_and_batches_collate(items_and_pixels) -> None:
    items, _ = items_and_pixels

    def to_fixed_float(image: torch.Tensor) -> torch.Tensor:
        return image[:, :4, :4].float() / 255

    loader = DataLoader(ImageDataset(items, transform=to_fixed_float), batch_size=3)
    images, pids, camids, indices = next(iter(loader))
    assert images.shape == (3, 3, 4, 4) and images.dtype == torch.float32
    assert pids.tolist() == [10, 11, 12] and indices.tolist() == [0, 1, 2]


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((5, 3), 77, dtype=np.uint8), mode="L").save(path)
    image = ImageDataset([(str(path), 0, 0)])[0][0]
    assert image.shape == (3, 5, 3) and bool((image == 77).all())


def test_corrupt_truncated_and_missing_images_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a jpeg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    missing = tmp_path / "missing.jpg"
    for bad in (corrupt, truncated, missing):
        data = ImageDataset([(str(good), 0, 0), (str(bad), 1, 0)])  # lazy: no error yet
        data[0]
        with pytest.raises(ImageLoadError, match=bad.name) as info:
            data[1]
        assert str(bad) in str(info.value)
        with pytest.raises(ImageLoadError, match=bad.name):
            ImageDataset([(str(good), 0, 0), (str(bad), 1, 0)], preload=True)


def test_rejects_malformed_items() -> None:
    with pytest.raises(ValueError, match=r"items\[1\]"):
        ImageDataset([("a.jpg", 0, 0), ("b.jpg", 1)])  # type: ignore[list-item]


def test_a_second_dataset_of_the_same_files_reuses_the_decoded_images(items_and_pixels, monkeypatch) -> None:
    from reid_core.data import image_dataset

    items, pixels = items_and_pixels
    monkeypatch.setattr(image_dataset, "_DECODED", image_dataset._DecodedImages())
    decoded: list[str] = []
    real_read = image_dataset.read_image

    def counting_read(path: str) -> torch.Tensor:
        decoded.append(path)
        return real_read(path)

    monkeypatch.setattr(image_dataset, "read_image", counting_read)
    first = ImageDataset(items, preload=True)
    second = ImageDataset(items, preload=True)
    assert len(decoded) == 3  # the second dataset decoded nothing
    for index in range(3):
        assert torch.equal(first[index][0], second[index][0])
    ImageDataset(items, preload=True, size=(4, 2))  # another size: decoded again, resized
    assert len(decoded) == 6
    new_pixels = write_png(Path(items[1][0]), 99, (10, 6))  # a file rewritten on disk is read afresh
    third = ImageDataset(items, preload=True)
    assert len(decoded) == 9
    np.testing.assert_array_equal(third[1][0].permute(1, 2, 0).numpy(), new_pixels)


def test_the_decoded_image_cache_drops_the_least_recently_used_past_its_budget(items_and_pixels, monkeypatch) -> None:
    from reid_core.data import image_dataset

    items, pixels = items_and_pixels
    one_set = sum(p.size for p in pixels)
    cache = image_dataset._DecodedImages(max_bytes=one_set + 10)  # room for one full set only
    monkeypatch.setattr(image_dataset, "_DECODED", cache)
    ImageDataset(items, preload=True)
    ImageDataset(items[:1], preload=True)  # over budget: the older, full set goes
    assert len(cache._entries) == 1 and cache._bytes() == pixels[0].size
    with pytest.raises(ImageLoadError, match="nowhere.png"):
        ImageDataset([("/nowhere.png", 0, 0)], preload=True)
