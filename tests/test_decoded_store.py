"""The on-disk store of decoded images: what another process finds, and when it must decode again."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_core.data import image_dataset
from reid_core.data.decoded_store import CACHE_ENV, DecodedImageStore, default_store
from reid_core.data.image_dataset import ImageDataset


def write_png(path: Path, seed: int, size: tuple[int, int] = (8, 4)) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def signatures(paths: list[str]) -> list[tuple[int, int]]:
    """Each file's (mtime_ns, size) now, as ImageDataset hands them to the store."""
    return [(os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths]


@pytest.fixture()
def folder(tmp_path: Path) -> list[str]:
    (tmp_path / "imgs").mkdir()
    paths = []
    for i in range(4):
        write_png(tmp_path / "imgs" / f"{i}.png", i)
        paths.append(str(tmp_path / "imgs" / f"{i}.png"))
    return paths


def test_saved_images_come_back_only_for_unchanged_files_at_the_same_size(tmp_path: Path, folder) -> None:
    store = DecodedImageStore(tmp_path / "store")
    stats = signatures(folder)
    images = [torch.randint(0, 256, (3, 4, 2), dtype=torch.uint8) for _ in folder]
    assert store.load(folder, stats, (4, 2)) == [None] * 4  # empty store
    store.save(folder[:3], stats[:3], (4, 2), images[:3])
    found = store.load(folder, stats, (4, 2))
    assert all(torch.equal(found[i], images[i]) for i in range(3)) and found[3] is None
    assert store.load(folder, stats, (8, 4)) == [None] * 4  # another size, another file
    store.save(folder[3:], stats[3:], (4, 2), images[3:])  # added beside the others
    assert all(torch.equal(a, b) for a, b in zip(store.load(folder, stats, (4, 2)), images))
    write_png(Path(folder[1]), 99, (10, 6))  # rewritten: another size on disk and a later mtime
    found = store.load(folder, signatures(folder), (4, 2))
    assert found[1] is None and torch.equal(found[0], images[0])


def test_an_unreadable_store_file_counts_as_empty_and_is_rewritten(tmp_path: Path, folder) -> None:
    store = DecodedImageStore(tmp_path / "store")
    stats = signatures(folder)
    target = store.file_for(os.path.dirname(folder[0]), (4, 2))
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not an npz")  # e.g. a file left by another program
    assert store.load(folder, stats, (4, 2)) == [None] * 4
    image = torch.zeros(3, 4, 2, dtype=torch.uint8)
    store.save(folder[:1], stats[:1], (4, 2), [image])
    assert torch.equal(store.load(folder[:1], stats[:1], (4, 2))[0], image)
    with pytest.raises(ValueError, match=r"0\.png.*\(3, 4, 2\) uint8"):
        store.save(folder[:1], stats[:1], (4, 2), [torch.zeros(3, 5, 2, dtype=torch.uint8)])


def test_a_dataset_in_a_fresh_process_reads_the_store_instead_of_decoding(tmp_path, folder, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    decoded: list[str] = []
    real_read = image_dataset.read_image
    monkeypatch.setattr(image_dataset, "read_image", lambda p: decoded.append(p) or real_read(p))
    items = [(p, i, 0) for i, p in enumerate(folder)]

    def fresh_process_dataset() -> ImageDataset:
        monkeypatch.setattr(image_dataset, "_DECODED", image_dataset._DecodedImages())  # no in-memory reuse
        return ImageDataset(items, preload=True, size=(4, 2))

    first = fresh_process_dataset()
    assert len(decoded) == 4
    second = fresh_process_dataset()
    assert len(decoded) == 4  # every image from the store
    assert all(torch.equal(first[i][0], second[i][0]) for i in range(4))
    write_png(Path(folder[2]), 7, (10, 6))  # one file rewritten: only it is decoded again
    third = fresh_process_dataset()
    assert decoded[4:] == [folder[2]]
    expected = image_dataset.ImageDataset([items[2]], size=(4, 2))[0][0]  # decoded without preload
    assert torch.equal(third[2][0], expected)


def test_the_store_can_be_switched_off_and_a_failed_save_only_warns(tmp_path, folder, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "off")
    assert default_store() is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert default_store().root == tmp_path / "cache" / "decoded"
    monkeypatch.setattr(image_dataset, "_DECODED", image_dataset._DecodedImages())

    def failing_save(*args, **kwargs) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(DecodedImageStore, "save", failing_save)
    with pytest.warns(UserWarning, match="No space left"):
        data = ImageDataset([(p, 0, 0) for p in folder], preload=True, size=(4, 2))
    assert data[0][0].shape == (3, 4, 2)
