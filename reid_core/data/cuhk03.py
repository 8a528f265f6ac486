"""CUHK03 (Li et al. CVPR 2014) under the 767/700 protocol of Zhong et al. (CVPR 2017).

The new protocol (Zhong et al. 2017) trains on 767 ids and tests on 700; each test id gives one
query image per camera, the rest is the gallery, and evaluation follows the Market-1501 rule.

==========  =======  =====  =======
version     train    query  gallery
==========  =======  =====  =======
labeled     7,368    1,400  5,328
detected    7,365    1,400  5,332
==========  =======  =====  =======

Two sources are read, auto-detected from what lies under ``root``:

(a) the CUHK03-NP folders (person-re-ranking repository)::

        cuhk03-np/{labeled,detected}/{bounding_box_train,query,bounding_box_test}/*.png

    with Market-1501 style names (``{pid}_c{camera}...``).

(b) the original release plus the protocol's split files (torchreid's layout)::

        cuhk03_release/cuhk-03.mat                       MATLAB v7.3 (HDF5)
        cuhk03_new_protocol_config_{labeled,detected}.mat  MATLAB v5

    ``cuhk-03.mat`` holds cells ``labeled`` and ``detected``: 5 camera pairs, each a cell of
    (ids x 10) image references (images 1-5 from the pair's first camera, 6-10 from the
    second; empty cells where an id has fewer images); each image is stored transposed,
    (3, W, H). The split file holds ``filelist`` (names ``{pair}_{pid:03d}_{view}_{img:02d}.png``),
    ``labels`` (the pid of each file) and 1-based ``train_idx``, ``query_idx``, ``gallery_idx``.
    The images are extracted once to ``images_{split}/`` under the dataset folder.

URL: http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html ;
https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP

Chapter: 01 (the datasets and their statistics).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from reid_core.data.base import DatasetLayoutError, Item, ReIDDataset, relabel
from reid_core.data.market1501 import MARKET_SUBFOLDERS, read_market_layout

__all__ = ["CUHK03", "extract_cuhk03_images", "read_cuhk03_split"]

SPLITS: tuple[str, str] = ("labeled", "detected")
RELEASE_MAT = Path("cuhk03_release") / "cuhk-03.mat"
SPLIT_MAT = "cuhk03_new_protocol_config_{split}.mat"
SPLIT_FIELDS: tuple[str, ...] = ("train_idx", "query_idx", "gallery_idx", "labels", "filelist")
EXTRACTED_NAME = re.compile(r"^([1-5])_(\d{3})_([12])_(\d{2})\.png$")
"""torchreid's names for extracted images: camera pair, pid within the pair, view, image."""
DONE_MARKER = ".extraction_complete"

LAYOUT = (
    "either (a) CUHK03-NP: 'cuhk03-np/{labeled,detected}/{bounding_box_train,query,bounding_box_test}/' "
    "with .png images named '{pid}_c{camera}...'; or (b) 'cuhk03_release/cuhk-03.mat' (MATLAB v7.3) plus "
    "'cuhk03_new_protocol_config_{labeled,detected}.mat' beside cuhk03_release/ (or inside it)"
)


def _find_np_dir(root: Path, split: str) -> Path | None:
    """The CUHK03-NP folder holding ``{split}/bounding_box_train``, if any."""
    if root.name == split and (root / MARKET_SUBFOLDERS[0]).is_dir():  # given cuhk03-np/{split} itself
        return root.parent
    for candidate in (root, root / "cuhk03-np", root / "cuhk03" / "cuhk03-np"):
        if (candidate / split / MARKET_SUBFOLDERS[0]).is_dir():
            return candidate
    return None


def _find_release_dir(root: Path) -> Path | None:
    """The folder holding ``cuhk03_release/cuhk-03.mat``, if any."""
    for candidate in (root, root / "cuhk03"):
        if (candidate / RELEASE_MAT).is_file():
            return candidate
    return None


def extract_cuhk03_images(
    mat_path: str | os.PathLike[str], split: str, out_dir: str | os.PathLike[str], show_progress: bool = True
) -> tuple[int, int]:
    """Write the images of one version of ``cuhk-03.mat`` as PNG files.

    File names follow torchreid, ``{pair}_{pid:03d}_{view}_{img:02d}.png`` (all 1-based; view 1
    for images 1-5, 2 for 6-10), which are also the names in the protocol's split files.

    Args:
        mat_path: path of ``cuhk-03.mat`` (MATLAB v7.3, read with h5py).
        split: ``"labeled"`` or ``"detected"``.
        out_dir: folder to write to (created).
        show_progress: show a tqdm bar.

    Returns:
        ``(written, empty)``: the number of images written and of empty cells (ids with fewer
        than 10 images; they hold no image).

    Raises:
        DatasetLayoutError: the file is not HDF5, lacks the ``split`` cell, or a cell does not
            have the expected shape.
    """
    import h5py
    from PIL import Image
    from tqdm import tqdm

    mat_path, out_dir = Path(mat_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        mat = h5py.File(mat_path, "r")
    except OSError as error:
        raise DatasetLayoutError(f"'{mat_path}' is not a MATLAB v7.3 (HDF5) file: {error}") from error
    with mat:
        if split not in mat:
            raise DatasetLayoutError(f"'{mat_path}' has no '{split}' cell (found {sorted(mat.keys())})")
        pair_refs = np.asarray(mat[split][()]).ravel()  # (5,) references, one per camera pair
        pairs = []
        for pair_index, pair_ref in enumerate(pair_refs):
            cells = np.asarray(mat[pair_ref][()]).T  # stored (10, ids) -> (ids, 10)
            if cells.ndim != 2 or cells.shape[1] != 10:
                raise DatasetLayoutError(
                    f"'{mat_path}': {split} camera pair {pair_index + 1} is a cell of shape "
                    f"{cells.shape}; expected (ids, 10)"
                )
            pairs.append(cells)
        written, empty = 0, 0
        bar = tqdm(
            total=sum(c.size for c in pairs), desc=f"extract CUHK03 {split}", unit="img", disable=not show_progress
        )
        for pair_index, cells in enumerate(pairs):
            for pid_index in range(cells.shape[0]):
                for image_index in range(10):
                    data = np.asarray(mat[cells[pid_index, image_index]][()])
                    bar.update(1)
                    if data.ndim != 3:  # MATLAB stores an empty cell as its (2,) size vector
                        empty += 1
                        continue
                    image = data.T  # stored (3, W, H) -> (H, W, 3)
                    if image.shape[2] != 3 or image.dtype != np.uint8:
                        raise DatasetLayoutError(
                            f"'{mat_path}': {split} pair {pair_index + 1} id {pid_index + 1} image "
                            f"{image_index + 1} has shape {data.shape} {data.dtype}; expected (3, W, H) uint8"
                        )
                    view = 1 if image_index < 5 else 2
                    name = f"{pair_index + 1}_{pid_index + 1:03d}_{view}_{image_index + 1:02d}.png"
                    Image.fromarray(np.ascontiguousarray(image)).save(out_dir / name)
                    written += 1
        bar.close()
    return written, empty


def _matlab_string(value: Any) -> str:
    """A MATLAB char cell element as loaded by scipy (a str or a 1-element array of str)."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"expected one string, got an array of shape {value.shape}")
        value = value.ravel()[0]
    return str(value)


def read_cuhk03_split(
    split_path: str | os.PathLike[str], image_dir: str | os.PathLike[str]
) -> tuple[list[Item], list[Item], list[Item]]:
    """Build the 767/700 lists from a ``cuhk03_new_protocol_config_*.mat`` file.

    Args:
        split_path: the split file (MATLAB v5, read with ``scipy.io.loadmat``).
        image_dir: the folder holding the extracted images named as in ``filelist``.

    Returns:
        ``(train, query, gallery)``: camid = view - 1; train pids relabelled to ``0..C-1``
        by increasing original label; query and gallery keep the file's labels.

    Raises:
        DatasetLayoutError: a missing field, an index out of range, a name that does not parse,
            or a listed image missing from ``image_dir``.
    """
    from scipy.io import loadmat

    split_path, image_dir = Path(split_path), Path(image_dir)
    try:
        config = loadmat(split_path)
    except Exception as error:  # scipy raises several types for a bad file
        raise DatasetLayoutError(f"cannot read split file '{split_path}' (MATLAB v5 expected): {error}") from error
    missing = [f for f in SPLIT_FIELDS if f not in config]
    if missing:
        raise DatasetLayoutError(f"split file '{split_path}' lacks fields {missing}; expected {list(SPLIT_FIELDS)}")
    labels = np.asarray(config["labels"]).ravel().astype(np.int64)  # (N,)
    try:
        names = [_matlab_string(v) for v in np.asarray(config["filelist"], dtype=object).ravel()]
    except ValueError as error:
        raise DatasetLayoutError(f"split file '{split_path}': filelist is not a cell of strings ({error})") from error
    if len(names) != len(labels):
        raise DatasetLayoutError(f"split file '{split_path}': {len(names)} files but {len(labels)} labels")

    def subset(field: str) -> list[Item]:
        index = np.asarray(config[field]).ravel().astype(np.int64) - 1  # 1-based -> 0-based
        if index.size and (index.min() < 0 or index.max() >= len(names)):
            raise DatasetLayoutError(f"split file '{split_path}': {field} has indices outside 1..{len(names)}")
        items = []
        for i in index:
            match = EXTRACTED_NAME.match(names[i])
            if match is None:
                raise DatasetLayoutError(
                    f"split file '{split_path}': file name '{names[i]}' does not parse as "
                    "'{pair}_{pid:03d}_{view}_{img:02d}.png'"
                )
            items.append((str(image_dir / names[i]), int(labels[i]), int(match.group(3)) - 1))
        return items

    train, query, gallery = subset("train_idx"), subset("query_idx"), subset("gallery_idx")
    absent = [p for p, _, _ in train + query + gallery if not os.path.isfile(p)]
    if absent:
        raise DatasetLayoutError(
            f"{len(absent)} image(s) listed in '{split_path}' are missing from '{image_dir}' "
            f"(first: '{absent[0]}'); delete '{image_dir}' to extract the images again"
        )
    return relabel(train), query, gallery


class CUHK03(ReIDDataset):
    """CUHK03 under the 767/700 protocol, read from CUHK03-NP folders or from ``cuhk-03.mat``.

    Args:
        root: a folder holding either source (see the module docstring), or its parent
            holding ``cuhk03-np/`` or ``cuhk03/``, or the ``cuhk03-np/{split}`` folder itself.
        split: ``"labeled"`` (hand-drawn boxes) or ``"detected"`` (DPM boxes).
        verbose: print the statistics table (and the extraction progress).

    Attributes:
        source: ``"cuhk03-np"`` or ``"cuhk-03.mat"``, whichever was found (CUHK03-NP first).

    Raises:
        DatasetLayoutError: an unknown split, neither source under ``root``, a missing split
            file, or a file that does not parse.
    """

    def __init__(
        self, root: str | os.PathLike[str], split: Literal["labeled", "detected"] = "labeled", verbose: bool = True
    ) -> None:
        if split not in SPLITS:
            raise DatasetLayoutError(f"CUHK03: unknown split {split!r}; expected one of {list(SPLITS)}")
        self.split = split
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise DatasetLayoutError(f"CUHK03: root folder '{root_path}' does not exist. Expected {LAYOUT}")
        np_dir = _find_np_dir(root_path, split)
        release_dir = _find_release_dir(root_path)
        if np_dir is not None:
            self.source = "cuhk03-np"
            self.dataset_dir = np_dir / split
            train, query, gallery = read_market_layout(self.dataset_dir, LAYOUT, None, verbose=verbose)
        elif release_dir is not None:
            self.source = "cuhk-03.mat"
            self.dataset_dir = release_dir
            train, query, gallery = self._read_release(release_dir, split, verbose)
        else:
            raise DatasetLayoutError(
                f"CUHK03: found neither source under '{root_path}' for split '{split}'. Expected {LAYOUT}"
            )
        super().__init__(train, query, gallery, name=f"CUHK03 ({split}, 767/700)", verbose=verbose)

    @staticmethod
    def _read_release(release_dir: Path, split: str, verbose: bool) -> tuple[list[Item], list[Item], list[Item]]:
        """Extract the images once, then read the protocol's split file."""
        split_name = SPLIT_MAT.format(split=split)
        split_candidates = [release_dir / split_name, release_dir / RELEASE_MAT.parent / split_name]
        split_path = next((p for p in split_candidates if p.is_file()), None)
        if split_path is None:
            raise DatasetLayoutError(
                f"CUHK03: found '{release_dir / RELEASE_MAT}' but no split file at "
                f"{' or '.join(repr(str(p)) for p in split_candidates)}. Expected {LAYOUT}"
            )
        image_dir = release_dir / f"images_{split}"
        if not (image_dir / DONE_MARKER).is_file():
            if verbose:
                print(f"Extracting the {split} images of '{release_dir / RELEASE_MAT}' to '{image_dir}' (once)")
            written, empty = extract_cuhk03_images(release_dir / RELEASE_MAT, split, image_dir, show_progress=verbose)
            if verbose:
                print(f"wrote {written} images ({empty} empty cells: ids with fewer than 10 images)")
            (image_dir / DONE_MARKER).write_text(f"{written}\n")
        return read_cuhk03_split(split_path, image_dir)
