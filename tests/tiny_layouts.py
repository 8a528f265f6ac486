"""Tiny datasets in the real layouts (Market-1501, DukeMTMC-reID, CUHK03-NP, MSMT17 lists), large
enough for P x K batches: the ``paper`` profile runs on them end to end without a GPU.

Each writer puts ``TRAIN_IDS`` training identities with ``IMAGES_PER_TRAIN_ID`` images over two
cameras, and ``TEST_IDS`` test identities with one query (camera 1) and two gallery images
(camera 2) each, into the dataset's own folder names and file names under ``root``. The images
are 32x16 pixels: one colour per identity (so a few iterations can learn something) plus noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_IDS = 8
IMAGES_PER_TRAIN_ID = 4
TEST_IDS = 8
SIZE = (32, 16)  # (H, W)


def _write(path: Path, pid: int, index: int) -> None:
    """A (H, W, 3) image: the identity's colour plus noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(pid * 1000 + index)
    colour = np.random.default_rng(pid).integers(40, 216, 3)  # (3,)
    pixels = np.clip(colour + rng.normal(0, 25, (*SIZE, 3)), 0, 255).astype(np.uint8)  # (H, W, 3)
    Image.fromarray(pixels).save(path)


def _samples() -> dict[str, list[tuple[int, int, int]]]:
    """(pid, camera 1-based, index) per subset; test pids follow the training pids."""
    train = [(pid, 1 + i % 2, i) for pid in range(1, TRAIN_IDS + 1) for i in range(IMAGES_PER_TRAIN_ID)]
    test_pids = range(TRAIN_IDS + 1, TRAIN_IDS + TEST_IDS + 1)
    query = [(pid, 1, 0) for pid in test_pids]
    gallery = [(pid, 2, i) for pid in test_pids for i in (1, 2)]
    return {"train": train, "query": query, "gallery": gallery}


def make_market_like(folder: Path, name: str = "market") -> Path:
    """Market-1501 (``0001_c1s1_000000_00.jpg``) or DukeMTMC-reID (``0001_c1_f0000000.jpg``) layout."""
    subfolders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for subset, samples in _samples().items():
        for pid, cam, i in samples:
            frame = pid * 100 + i
            stem = f"{pid:04d}_c{cam}s1_{frame:06d}_00" if name == "market" else f"{pid:04d}_c{cam}_f{frame:07d}"
            _write(folder / subfolders[subset] / f"{stem}.jpg", pid, i)
    if name == "market":  # a distractor and a junk box, as in the real gallery
        _write(folder / "bounding_box_test" / "0000_c2s1_999999_00.jpg", 0, 0)
        _write(folder / "bounding_box_test" / "-1_c1s1_999998_00.jpg", 999, 0)
    return folder


def make_cuhk03_np(root: Path, split: str = "detected") -> Path:
    """CUHK03-NP: ``cuhk03-np/<split>/{bounding_box_train,query,bounding_box_test}/0001_c1_1.png``."""
    folder = root / "cuhk03-np" / split
    subfolders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for subset, samples in _samples().items():
        for pid, cam, i in samples:
            _write(folder / subfolders[subset] / f"{pid:04d}_c{cam}_{i + 1}.png", pid, i)
    return folder


def make_msmt17(root: Path) -> Path:
    """MSMT17_V1: images under train/ and test/, read through the four list files (pids 0-based per split)."""
    folder = root / "MSMT17_V1"
    samples = _samples()
    lists: dict[str, tuple[str, list[tuple[int, int, int]]]] = {
        "list_train.txt": ("train", [s for s in samples["train"] if s[2] < IMAGES_PER_TRAIN_ID - 1]),
        "list_val.txt": ("train", [s for s in samples["train"] if s[2] == IMAGES_PER_TRAIN_ID - 1]),
        "list_query.txt": ("test", samples["query"]),
        "list_gallery.txt": ("test", samples["gallery"]),
    }
    for list_name, (sub, entries) in lists.items():
        lines = []
        for pid, cam, i in entries:
            label = pid - 1 if sub == "train" else pid - TRAIN_IDS - 1
            rel = f"{label:04d}/{label:04d}_{i:03d}_{cam:02d}_0303morning_{pid * 100 + i:04d}_0.jpg"
            _write(folder / sub / rel, pid, i)
            lines.append(f"{rel} {label}\n")
        (folder / list_name).write_text("".join(lines))
    return folder


def make_all(root: Path) -> Path:
    """Every layout under one ``data_root``, as the README puts the real datasets."""
    make_market_like(root / "Market-1501-v15.09.15", "market")
    make_market_like(root / "DukeMTMC-reID", "duke")
    make_cuhk03_np(root, "detected")
    make_cuhk03_np(root, "labeled")
    make_msmt17(root)
    return root
