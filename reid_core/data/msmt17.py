"""MSMT17 (Wei et al. CVPR 2018), versions V1 and V2, read from its list files.

Layout (the book page ``book/datasets.md``)::

    MSMT17_V1/                         MSMT17_V2/ (faces masked)
        train/  test/                      mask_train_v2/  mask_test_v2/
        list_train.txt  list_val.txt  list_query.txt  list_gallery.txt

A list line is ``0000/0000_000_01_0303morning_0015_0.jpg 0``: the path relative to the train
or test folder, then the pid (0-based within its split). The file name's fields are pid,
per-id index, camera 01-15, date + time slot, frame, box index; camid = camera - 1.

Counts: 4,101 ids, 15 cameras; train 1,041 ids / 32,621 images (list_train + list_val, as
torchreid), query 11,659, gallery 82,161 (3,060 test ids).

URL: https://www.pkuvmc.com/dataset.html

Chapter: 01 (the datasets and their statistics).
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Literal

from reid_core.data.base import DatasetLayoutError, Item, ReIDDataset, relabel, report_notes

__all__ = ["MSMT17", "read_msmt17_list"]

NUM_CAMERAS = 15
LIST_FILES: tuple[str, ...] = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
VERSIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # version: (folder, train image folder names, test image folder names)
    "v1": ("MSMT17_V1", ("train",), ("test",)),
    "v2": ("MSMT17_V2", ("mask_train_v2", "mask_train_V2"), ("mask_test_v2", "mask_test_V2")),
}
LAYOUT = (
    "'MSMT17_V1/' holding train/, test/, list_train.txt, list_val.txt, list_query.txt, list_gallery.txt, "
    "or 'MSMT17_V2/' holding mask_train_v2/, mask_test_v2/ and the same lists; a list line reads "
    "'0000/0000_000_01_0303morning_0015_0.jpg 0'"
)


def read_msmt17_list(list_path: Path, image_dir: Path, notes: list[str] | None = None) -> list[Item]:
    """Parse one MSMT17 list file.

    A UTF-8 byte-order mark at its start (an editor on Windows adds one) is skipped, and a line
    that repeats an earlier one is read once; both are reported in ``notes``.

    Args:
        list_path: e.g. ``MSMT17_V1/list_train.txt``.
        image_dir: the folder the listed paths are relative to.
        notes: if given, the reader's notes on this list are appended to it.

    Returns:
        ``(path, pid, camid)`` per distinct non-empty line, pid as listed, camid = camera field - 1.

    Raises:
        DatasetLayoutError: a missing or empty list, a line that does not parse, a camera
            outside 1..15, an image listed twice with two pids, or a listed image that does
            not exist.
    """
    if not list_path.is_file():
        raise DatasetLayoutError(f"MSMT17: missing list file '{list_path}'. Expected {LAYOUT}")
    raw = list_path.read_bytes()
    notes = [] if notes is None else notes
    if raw.startswith(codecs.BOM_UTF8):
        notes.append(f"MSMT17: '{list_path}' starts with a UTF-8 byte-order mark; it was skipped")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetLayoutError(f"MSMT17: list file '{list_path}' is not UTF-8 text ({error})") from error
    items: list[Item] = []
    first_line: dict[str, tuple[int, int]] = {}  # relative path -> (line number, pid)
    repeats: list[tuple[int, int]] = []  # (line, the earlier line it repeats)
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"'{list_path}' line {line_number} ({line.strip()!r})"
        if len(fields) != 2:
            raise DatasetLayoutError(f"MSMT17: {where} does not read '<relative path> <pid>'")
        rel_path, pid_text = fields
        name_fields = Path(rel_path).name.split("_")
        try:
            pid, camera = int(pid_text), int(name_fields[2])
        except (ValueError, IndexError) as error:
            raise DatasetLayoutError(
                f"MSMT17: {where} does not parse; expected e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0'"
            ) from error
        if not 1 <= camera <= NUM_CAMERAS:
            raise DatasetLayoutError(f"MSMT17: {where} has camera {camera}; expected 1..{NUM_CAMERAS}")
        if rel_path in first_line:
            earlier, earlier_pid = first_line[rel_path]
            if earlier_pid != pid:
                raise DatasetLayoutError(
                    f"MSMT17: {where} lists the image of line {earlier} again with another pid ({earlier_pid} there)"
                )
            repeats.append((line_number, earlier))
            continue
        first_line[rel_path] = (line_number, pid)
        items.append((str(image_dir / rel_path), pid, camera - 1))
    if repeats:
        shown = ", ".join(f"line {line} repeats line {earlier}" for line, earlier in repeats[:5])
        notes.append(
            f"MSMT17: '{list_path}' has {len(repeats)} duplicated line(s) ({shown}"
            f"{', ...' if len(repeats) > 5 else ''}); each image was read once"
        )
    if not items:
        raise DatasetLayoutError(f"MSMT17: list file '{list_path}' is empty")
    absent = [path for path, _, _ in items if not os.path.isfile(path)]
    if absent:
        raise DatasetLayoutError(
            f"MSMT17: {len(absent)} image(s) listed in '{list_path}' are missing under '{image_dir}' "
            f"(first: '{absent[0]}')"
        )
    return items


def _find_version_dir(root: Path, version: str) -> tuple[str, Path]:
    """The (version, folder) found under ``root``: the folder itself or a standard sub-folder."""
    versions = ("v1", "v2") if version == "auto" else (version,)
    tried = []
    for v in versions:
        folder_name, train_names, _ = VERSIONS[v]
        for candidate in (root, root / folder_name, root / "msmt17" / folder_name):
            tried.append(candidate)
            has_images = any((candidate / name).is_dir() for name in train_names)
            if has_images and (candidate / LIST_FILES[0]).is_file():
                return v, candidate
    listed = ", ".join(f"'{p}'" for p in dict.fromkeys(tried))
    raise DatasetLayoutError(f"MSMT17 ({version}): no dataset folder among {listed}. Expected {LAYOUT}")


def _existing(folder: Path, names: tuple[str, ...]) -> Path:
    """The first of ``folder / name`` that exists (the V2 folders' case varies)."""
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    raise DatasetLayoutError(f"MSMT17: missing folder '{folder / names[0]}'. Expected {LAYOUT}")


class MSMT17(ReIDDataset):
    """MSMT17: 4,101 ids, 126,441 boxes, 15 cameras (Wei et al. CVPR 2018).

    Args:
        root: the ``MSMT17_V1`` / ``MSMT17_V2`` folder itself, or its parent (``msmt17/MSMT17_V1``
            works too).
        version: ``"auto"`` (V1 if present, else V2), ``"v1"`` or ``"v2"``.
        verbose: print the statistics table.

    Attributes:
        version: the version read, ``"v1"`` or ``"v2"``.

    Raises:
        DatasetLayoutError: a missing folder or list, or a list line that does not parse.
    """

    def __init__(
        self, root: str | os.PathLike[str], version: Literal["auto", "v1", "v2"] = "auto", verbose: bool = True
    ) -> None:
        if version not in ("auto", "v1", "v2"):
            raise DatasetLayoutError(f"MSMT17: unknown version {version!r}; expected 'auto', 'v1' or 'v2'")
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise DatasetLayoutError(f"MSMT17: root folder '{root_path}' does not exist. Expected {LAYOUT}")
        self.version, self.dataset_dir = _find_version_dir(root_path, version)
        _, train_names, test_names = VERSIONS[self.version]
        train_dir = _existing(self.dataset_dir, train_names)
        test_dir = _existing(self.dataset_dir, test_names)
        notes: list[str] = []
        train = read_msmt17_list(self.dataset_dir / "list_train.txt", train_dir, notes)
        train += read_msmt17_list(self.dataset_dir / "list_val.txt", train_dir, notes)  # as torchreid
        query = read_msmt17_list(self.dataset_dir / "list_query.txt", test_dir, notes)
        gallery = read_msmt17_list(self.dataset_dir / "list_gallery.txt", test_dir, notes)
        report_notes(notes, verbose)
        super().__init__(relabel(train), query, gallery, name=f"MSMT17 ({self.version.upper()})", verbose=verbose)
