"""Dataset readers on tiny folders built in each dataset's real layout.

Every expectation below is worked out by hand from the file names written here and the
protocol (the book page ``book/datasets.md``): camid = camera - 1, junk (-1) dropped, distractors (0) kept,
training pids relabelled 0..C-1 in increasing order of the original pid.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from reid_core.data.base import DatasetLayoutError
from reid_core.data.cuhk03 import CUHK03
from reid_core.data.dukemtmc import DukeMTMCreID
from reid_core.data.market1501 import Market1501
from reid_core.data.msmt17 import MSMT17
from reid_core.data.registry import DATASETS, build_dataset
from reid_core.data.synthreid.reader import SynthReID


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (8, 4)) -> np.ndarray:
    """Write a tiny RGB image (H, W) = size; returns its pixels (H, W, 3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def make_market(folder: Path, ext: str = ".jpg", cam_train: int = 6) -> Path:
    """A tiny Market-1501 folder; counts worked out in ``test_market_lists``."""
    names = {
        "bounding_box_train": [
            "0015_c1s1_000001_01",
            "0002_c2s1_000002_01",
            "0002_c3s2_000003_01",
            "0007_c1s1_000004_01",
            f"0007_c{cam_train}s1_000005_01",
        ],
        "query": ["0003_c1s1_000006_00", "0003_c2s1_000007_00", "0009_c3s1_000008_00"],
        "bounding_box_test": [
            "0003_c2s1_000009_01",
            "0003_c4s1_000010_01",
            "0009_c1s1_000011_01",
            "0000_c5s1_000012_01",
            "-1_c1s1_000013_01",
            "-1_c6s1_000014_01",
        ],
    }
    for sub, stems in names.items():
        for i, stem in enumerate(stems):
            write_image(folder / sub / f"{stem}{ext}", seed=i)
    (folder / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")
    return folder


def test_market_lists(tmp_path: Path) -> None:
    root = make_market(tmp_path / "Market-1501-v15.09.15")
    data = Market1501(root, verbose=False)
    train = sorted((Path(p).name, pid, cam) for p, pid, cam in data.train)
    # original pids 2, 7, 15 -> 0, 1, 2; camera c1..c6 -> 0..5
    assert train == [
        ("0002_c2s1_000002_01.jpg", 0, 1),
        ("0002_c3s2_000003_01.jpg", 0, 2),
        ("0007_c1s1_000004_01.jpg", 1, 0),
        ("0007_c6s1_000005_01.jpg", 1, 5),
        ("0015_c1s1_000001_01.jpg", 2, 0),
    ]
    assert sorted((pid, cam) for _, pid, cam in data.query) == [(3, 0), (3, 1), (9, 2)]
    # junk -1 dropped, distractor 0 kept, pids as in the files
    assert sorted((pid, cam) for _, pid, cam in data.gallery) == [(0, 4), (3, 1), (3, 3), (9, 0)]
    assert all(Path(p).is_file() for p, _, _ in data.train + data.query + data.gallery)
    assert (data.num_train_pids, data.num_train_imgs, data.num_train_cams) == (3, 5, 4)
    assert data.statistics() == {
        "train": {"ids": 3, "images": 5, "cameras": 4},
        "query": {"ids": 2, "images": 3, "cameras": 3},
        "gallery": {"ids": 3, "images": 4, "cameras": 4},
    }


@pytest.mark.parametrize("folder_name", ["Market-1501-v15.09.15", "market1501"])
def test_market_root_is_parent(tmp_path: Path, folder_name: str) -> None:
    make_market(tmp_path / folder_name)
    assert Market1501(tmp_path, verbose=False).num_train_imgs == 5


def test_market_prints_statistics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_market(tmp_path / "market1501")
    Market1501(tmp_path)
    out = capsys.readouterr().out
    assert "# ids | # images | # cameras" in out
    assert "Thumbs.db" in out  # the non-image file is reported, not silently skipped
    rows = {
        line.split("|")[0].strip(): [int(x) for x in line.split("|")[1:]]
        for line in out.splitlines()
        if line.strip().startswith(("train", "query", "gallery"))
    }
    assert rows == {"train": [3, 5, 4], "query": [2, 3, 3], "gallery": [3, 4, 4]}


def test_market_500k_adds_distractors(tmp_path: Path) -> None:
    root = make_market(tmp_path / "market1501")
    write_image(root / "images" / "0000_c1s1_999999_01.jpg")
    write_image(root / "images" / "0000_c2s1_999998_01.jpg")
    assert len(Market1501(root, market1501_500k=True, verbose=False).gallery) == 4 + 2
    (root / "images" / "0000_c1s1_999999_01.jpg").unlink()
    (root / "images" / "0000_c2s1_999998_01.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match="images"):
        Market1501(root, market1501_500k=True, verbose=False)


def test_market_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetLayoutError, match=str(missing)):
        Market1501(missing, verbose=False)
    with pytest.raises(DatasetLayoutError, match="Market-1501-v15.09.15") as info:
        Market1501(tmp_path, verbose=False)  # exists but holds no dataset
    assert str(tmp_path) in str(info.value)

    root = make_market(tmp_path / "m")
    bad = root / "bounding_box_train" / "foo.jpg"
    write_image(bad)
    with pytest.raises(DatasetLayoutError, match="foo.jpg") as info:
        Market1501(root, verbose=False)
    assert str(bad) in str(info.value) and "bounding_box_train" in str(info.value)
    bad.unlink()

    for image in (root / "bounding_box_test").iterdir():
        image.unlink()
    with pytest.raises(DatasetLayoutError, match="holds no image") as info:
        Market1501(root, verbose=False)
    assert str(root / "bounding_box_test") in str(info.value)
    (root / "bounding_box_test").rmdir()
    with pytest.raises(DatasetLayoutError, match="missing folder") as info:
        Market1501(root, verbose=False)
    assert str(root / "bounding_box_test") in str(info.value)


def test_market_rejects_camera_out_of_range(tmp_path: Path) -> None:
    root = make_market(tmp_path / "m", cam_train=7)
    with pytest.raises(DatasetLayoutError, match="c7"):
        Market1501(root, verbose=False)


def test_duke_and_synthreid(tmp_path: Path) -> None:
    duke = make_market(tmp_path / "DukeMTMC-reID", cam_train=8)  # Duke has 8 cameras
    data = DukeMTMCreID(tmp_path, verbose=False)
    assert data.dataset_dir == duke and max(cam for _, _, cam in data.train) == 7
    synth = make_market(tmp_path / "synth", cam_train=12)  # SynthReID: any camera count
    data = SynthReID(synth, verbose=False)
    assert data.name == "SynthReID" and max(cam for _, _, cam in data.train) == 11
    with pytest.raises(DatasetLayoutError, match="DukeMTMC-reID"):
        DukeMTMCreID(tmp_path / "synth" / "query", verbose=False)


# ---------------------------------------------------------------- CUHK03 (a): CUHK03-NP folders


def make_cuhk03_np(root: Path, split: str) -> Path:
    folder = root / "cuhk03-np" / split
    for stem in ("0001_c1_1", "0001_c2_2", "0004_c1_3", "0004_c2_4", "0004_c2_5"):
        write_image(folder / "bounding_box_train" / f"{stem}.png")
    for stem in ("0002_c1_1", "0002_c2_2"):
        write_image(folder / "query" / f"{stem}.png")
    for stem in ("0002_c1_3", "0002_c2_4", "0003_c1_1"):
        write_image(folder / "bounding_box_test" / f"{stem}.png")
    return folder


def test_cuhk03_np(tmp_path: Path) -> None:
    make_cuhk03_np(tmp_path, "labeled")
    data = CUHK03(tmp_path, split="labeled", verbose=False)
    assert data.source == "cuhk03-np"
    assert sorted((pid, cam) for _, pid, cam in data.train) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 1)]
    assert sorted((pid, cam) for _, pid, cam in data.query) == [(2, 0), (2, 1)]
    assert sorted((pid, cam) for _, pid, cam in data.gallery) == [(2, 0), (2, 1), (3, 0)]
    assert all(p.endswith(".png") for p, _, _ in data.train)
    for root in (tmp_path / "cuhk03-np", tmp_path / "cuhk03-np" / "labeled"):
        assert CUHK03(root, verbose=False).gallery == data.gallery
    with pytest.raises(DatasetLayoutError, match="neither source") as info:
        CUHK03(tmp_path, split="detected", verbose=False)  # only labeled/ exists
    assert str(tmp_path) in str(info.value) and "cuhk-03.mat" in str(info.value)


def test_cuhk03_unknown_split(tmp_path: Path) -> None:
    make_cuhk03_np(tmp_path, "labeled")
    with pytest.raises(DatasetLayoutError, match="unknown split 'foo'"):
        CUHK03(tmp_path, split="foo", verbose=False)  # type: ignore[arg-type]


# --------------------------------------------- CUHK03 (b): cuhk-03.mat (v7.3) + split .mat files

# (pair, ids in the pair) and which of the 10 cells are empty, per (pair, id)
PAIRS = [3, 2, 1, 1, 1]
EMPTY_CELLS = {(1, 2): {4, 9}, (2, 1): {0, 1, 2, 3, 4}}  # (pair, id) 1-based -> empty cell indices


def write_v73_mat(path: Path, split: str) -> dict[str, np.ndarray]:
    """A tiny ``cuhk-03.mat`` the way MATLAB v7.3 stores it: an HDF5 file (512-byte user block)
    whose ``split`` dataset holds object references to 5 cells of (10, ids) references, each
    to an image stored transposed as (3, W, H) uint8, or to a (2,) uint64 for an empty cell.

    Returns:
        the expected extracted file name -> (H, W, 3) pixels.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    expected: dict[str, np.ndarray] = {}
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = iter(range(10**6))

        def store(array: np.ndarray) -> h5py.Reference:
            return refs.create_dataset(f"r{next(counter)}", data=array).ref

        pair_refs = []
        for pair, num_ids in enumerate(PAIRS, start=1):
            cells = np.empty((10, num_ids), dtype=h5py.ref_dtype)  # MATLAB (ids, 10) transposed
            for pid in range(1, num_ids + 1):
                for image in range(10):
                    if image in EMPTY_CELLS.get((pair, pid), set()):
                        cells[image, pid - 1] = store(np.zeros(2, dtype=np.uint64))
                        continue
                    h, w = 6 + image % 3, 4 + pid % 2
                    pixels = np.random.default_rng(pair * 1000 + pid * 10 + image).integers(
                        0, 256, (h, w, 3), dtype=np.uint8
                    )
                    cells[image, pid - 1] = store(pixels.T)  # stored (3, W, H)
                    view = 1 if image < 5 else 2
                    expected[f"{pair}_{pid:03d}_{view}_{image + 1:02d}.png"] = pixels
            pair_refs.append(store(cells))
        f.create_dataset(split, data=np.array(pair_refs, dtype=h5py.ref_dtype).reshape(1, 5))
    with open(path, "r+b") as handle:  # MATLAB's text header lives in the user block
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")
    return expected


def write_split_mat(
    path: Path, names: list[str], labels: list[int], train: list[int], query: list[int], gallery: list[int]
) -> None:
    """A protocol split file (MATLAB v5): cell ``filelist``, ``labels``, 1-based index columns."""
    filelist = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        filelist[i, 0] = name
    column = lambda values: np.array(values, dtype=np.float64).reshape(-1, 1)  # noqa: E731
    savemat(
        path,
        {
            "filelist": filelist,
            "labels": column(labels),
            "train_idx": column(train),
            "query_idx": column(query),
            "gallery_idx": column(gallery),
        },
    )


def make_cuhk03_release(root: Path, split: str = "labeled") -> tuple[dict[str, np.ndarray], list[str]]:
    expected = write_v73_mat(root / "cuhk03_release" / "cuhk-03.mat", split)
    names = sorted(expected)
    # global label of each file: pair p, id i -> 10 * p + i (any ids, as long as they differ)
    labels = [10 * int(n.split("_")[0]) + int(n.split("_")[1]) for n in names]
    train_ids, test_ids = {12, 31, 11}, {13, 21, 22, 41, 51}
    train = [i + 1 for i, lab in enumerate(labels) if lab in train_ids]
    test = [i for i, lab in enumerate(labels) if lab in test_ids]
    query, seen = [], set()
    for i in test:  # first image of each (id, view) is a query
        key = (labels[i], names[i].split("_")[2])
        if key not in seen:
            seen.add(key)
            query.append(i + 1)
    gallery = [i + 1 for i in test if i + 1 not in query]
    write_split_mat(root / f"cuhk03_new_protocol_config_{split}.mat", names, labels, train, query, gallery)
    return expected, names


def test_cuhk03_from_mat(tmp_path: Path) -> None:
    expected, names = make_cuhk03_release(tmp_path)
    data = CUHK03(tmp_path, split="labeled", verbose=False)
    assert data.source == "cuhk-03.mat"
    image_dir = tmp_path / "images_labeled"
    written = sorted(p.name for p in image_dir.glob("*.png"))
    assert written == sorted(expected)  # every non-empty cell, and only those
    assert len(written) == 10 * sum(PAIRS) - 2 - 5
    for name, pixels in expected.items():  # images un-transposed back to (H, W, 3)
        np.testing.assert_array_equal(np.asarray(Image.open(image_dir / name)), pixels)

    # train ids 11, 12, 31 -> 0, 1, 2 (sorted); 11 and 12 have 10 images, 12 lacks two: 8
    train_counts = np.bincount([pid for _, pid, _ in data.train])
    assert train_counts.tolist() == [10, 8, 10]
    assert {Path(p).name.split("_")[1] for p, pid, _ in data.train if pid == 2} == {"001"}
    for p, _, cam in data.train + data.query + data.gallery:
        assert cam == int(Path(p).name.split("_")[2]) - 1  # view - 1
    # query: one per (id, view); id 21 has no view-1 image (cells 1-5 empty)
    assert sorted((pid, cam) for _, pid, cam in data.query) == [
        (13, 0),
        (13, 1),
        (21, 1),
        (22, 0),
        (22, 1),
        (41, 0),
        (41, 1),
        (51, 0),
        (51, 1),
    ]
    assert len(data.gallery) == 4 * 10 + 5 - 9  # test images minus queries
    assert data.num_gallery_pids == 5


def test_cuhk03_extracts_once(tmp_path: Path) -> None:
    make_cuhk03_release(tmp_path)
    CUHK03(tmp_path, verbose=False)
    victim = tmp_path / "images_labeled" / "1_001_1_01.png"
    victim.unlink()
    # the extraction is marked complete, so a missing file is reported, not silently re-made
    with pytest.raises(DatasetLayoutError, match="1_001_1_01.png") as info:
        CUHK03(tmp_path, verbose=False)
    assert "images_labeled" in str(info.value)


def test_cuhk03_mat_errors(tmp_path: Path) -> None:
    make_cuhk03_release(tmp_path, "labeled")
    with pytest.raises(DatasetLayoutError, match="cuhk03_new_protocol_config_detected.mat"):
        CUHK03(tmp_path, split="detected", verbose=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetLayoutError, match="neither source") as info:
        CUHK03(empty, verbose=False)
    assert str(empty) in str(info.value)


def test_cuhk03_split_file_with_bad_name(tmp_path: Path) -> None:
    make_cuhk03_release(tmp_path)
    write_split_mat(
        tmp_path / "cuhk03_new_protocol_config_labeled.mat", ["1_001_1_01.png", "foo.png"], [1, 2], [1], [2], [2]
    )
    with pytest.raises(DatasetLayoutError, match="foo.png") as info:
        CUHK03(tmp_path, verbose=False)
    assert "cuhk03_new_protocol_config_labeled.mat" in str(info.value)


# ------------------------------------------------------------------------------------- MSMT17


def make_msmt17(root: Path, version: str = "v1") -> Path:
    folder = root / ("MSMT17_V1" if version == "v1" else "MSMT17_V2")
    train_dir, test_dir = ("train", "test") if version == "v1" else ("mask_train_v2", "mask_test_v2")
    lists = {
        "list_train.txt": (
            train_dir,
            [
                ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
                ("0000/0000_001_05_0303morning_0016_0.jpg", 0),
                ("0003/0003_000_15_0113noon_0001_1.jpg", 3),
            ],
        ),
        "list_val.txt": (train_dir, [("0001/0001_000_02_0302afternoon_0100_0.jpg", 1)]),
        "list_query.txt": (
            test_dir,
            [("0000/0000_000_03_0114noon_0002_0.jpg", 0), ("0002/0002_000_04_0114noon_0003_0.jpg", 2)],
        ),
        "list_gallery.txt": (
            test_dir,
            [
                ("0000/0000_001_07_0114noon_0004_0.jpg", 0),
                ("0002/0002_001_09_0114noon_0005_0.jpg", 2),
                ("0005/0005_000_10_0114noon_0006_0.jpg", 5),
            ],
        ),
    }
    for list_name, (sub, lines) in lists.items():
        for i, (rel, _) in enumerate(lines):
            write_image(folder / sub / rel, seed=i)
        (folder / list_name).write_text("".join(f"{rel} {pid}\n" for rel, pid in lines))
    return folder


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_msmt17(tmp_path: Path, version: str) -> None:
    folder = make_msmt17(tmp_path / "msmt17", version)
    for root in (folder, tmp_path / "msmt17", tmp_path):
        data = MSMT17(root, verbose=False)
        assert data.version == version
    # train = list_train + list_val; pids 0, 3, 1 -> 0, 2, 1; camera field - 1
    assert sorted((pid, cam) for _, pid, cam in data.train) == [(0, 0), (0, 4), (1, 1), (2, 14)]
    assert sorted((pid, cam) for _, pid, cam in data.query) == [(0, 2), (2, 3)]
    assert sorted((pid, cam) for _, pid, cam in data.gallery) == [(0, 6), (2, 8), (5, 9)]
    assert all(Path(p).is_file() for p, _, _ in data.train + data.query + data.gallery)


def test_msmt17_errors(tmp_path: Path) -> None:
    folder = make_msmt17(tmp_path)
    with open(folder / "list_query.txt", "a") as handle:
        handle.write("0002/broken.jpg\n")
    with pytest.raises(DatasetLayoutError, match="line 3") as info:
        MSMT17(tmp_path, verbose=False)
    assert str(folder / "list_query.txt") in str(info.value)

    (folder / "list_query.txt").write_text("0002/0002_000_16_0114noon_0003_0.jpg 2\n")
    with pytest.raises(DatasetLayoutError, match="camera 16"):
        MSMT17(tmp_path, verbose=False)

    (folder / "list_query.txt").write_text("0002/0002_009_04_0114noon_0003_0.jpg 2\n")
    with pytest.raises(DatasetLayoutError, match="0002_009_04_0114noon_0003_0.jpg"):
        MSMT17(tmp_path, verbose=False)  # listed but absent

    (folder / "list_val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="list_val.txt") as info:
        MSMT17(tmp_path, verbose=False)
    assert str(folder) in str(info.value)

    with pytest.raises(DatasetLayoutError, match="MSMT17_V2"):
        MSMT17(tmp_path, version="v2", verbose=False)


# ------------------------------------------------------------------------------------ registry


def test_registry(tmp_path: Path) -> None:
    assert set(DATASETS) == {"market1501", "dukemtmcreid", "cuhk03", "msmt17", "synthreid"}
    make_market(tmp_path / "market1501")
    assert isinstance(build_dataset("Market1501", tmp_path, verbose=False), Market1501)
    with pytest.raises(ValueError, match="market1501") as info:
        build_dataset("market", tmp_path)
    assert all(name in str(info.value) for name in DATASETS)
