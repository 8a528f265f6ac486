"""The common base of every re-ID dataset reader: three lists of ``(path, pid, camid)``.

A reader turns a dataset folder into ``train``, ``query`` and ``gallery`` lists, following
the standard protocol (the book page ``book/datasets.md``): camera ids are 0-based, training pids are
relabelled to ``0..C-1`` (sorted by the original pid, so the mapping does not depend on the
order files are listed in), query and gallery pids stay as in the files, junk boxes (pid -1)
are dropped and distractors (pid 0 in Market-1501 / DukeMTMC-reID) stay in the gallery.

Chapter: 01 (the datasets and their statistics).
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "DatasetLayoutError",
    "DatasetNote",
    "Item",
    "ReIDDataset",
    "IMAGE_EXTENSIONS",
    "MARKET_NAME_PATTERN",
    "find_dataset_dir",
    "extension_case_twins",
    "list_images",
    "not_read_note",
    "report_notes",
    "parse_market_folder",
    "relabel",
    "drop_junk",
]

Item = tuple[str, int, int]
"""One sample: ``(image path, person id, 0-based camera id)``."""

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
"""File endings read as images; every other entry of a folder (Market-1501's ``Thumbs.db``, a
sub-folder, a link to a folder) is counted and reported, never parsed."""

MARKET_NAME_PATTERN = re.compile(r"^(-?\d+)_c(\d+)")
"""Market-1501 style file names, ``0002_c1s1_000451_03.jpg``: group 1 the pid (-1 junk,
0 distractor), group 2 the 1-based camera (the book page ``book/datasets.md``)."""


class DatasetLayoutError(ValueError):
    """A dataset folder is missing, empty, or does not have the expected layout.

    The message names the offending path and describes the layout expected there.
    """


class DatasetNote(UserWarning):
    """Something about a dataset folder worth knowing that does not stop the reading: entries not
    read, a list file's byte-order mark, duplicated list lines, images whose extensions differ only
    in case. Readers print it with the statistics (``verbose=True``) or warn with this class."""


def report_notes(notes: Sequence[str], verbose: bool) -> None:
    """Print each note (``verbose``) or issue it as a :class:`DatasetNote` warning: never drop one."""
    for note in notes:
        if verbose:
            print(f"note: {note}")
        else:
            warnings.warn(note, DatasetNote, stacklevel=3)


def find_dataset_dir(
    root: str | os.PathLike[str], folder_names: Sequence[str], marker: str, dataset: str, layout: str
) -> Path:
    """Locate a dataset folder given either the folder itself or a parent holding it.

    Args:
        root: the dataset folder, or a folder containing it under one of ``folder_names``.
        folder_names: standard (relative) names of the dataset folder, tried in order.
        marker: a sub-path whose presence identifies the dataset folder
            (e.g. ``"bounding_box_train"``).
        dataset: the dataset's name, for the error message.
        layout: a description of the expected layout, for the error message.

    Returns:
        The dataset folder.

    Raises:
        DatasetLayoutError: ``root`` does not exist, or neither it nor any standard sub-folder
            holds ``marker``.
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DatasetLayoutError(f"{dataset}: root folder '{root_path}' does not exist. Expected {layout}")
    candidates = [root_path] + [root_path / name for name in folder_names]
    for candidate in candidates:
        if (candidate / marker).exists():
            return candidate
    tried = ", ".join(f"'{c}'" for c in candidates)
    raise DatasetLayoutError(
        f"{dataset}: no '{marker}' found in {tried}. Pass the dataset folder itself or its parent "
        f"holding one of {list(folder_names)}. Expected {layout}"
    )


def list_images(folder: Path, layout: str) -> tuple[list[Path], list[Path]]:
    """List the image files of a folder, sorted by name.

    Args:
        folder: the folder to list (not recursive).
        layout: a description of the expected layout, for error messages.

    Returns:
        ``(images, others)``: image files (by extension, see :data:`IMAGE_EXTENSIONS`; a link to
        an image file counts) and every other entry, not read (other files, sub-folders, links
        to folders), both sorted.

    Raises:
        DatasetLayoutError: the folder is missing or holds no image, or it holds a symbolic link
            that leads nowhere (a dangling link, e.g. into an unmounted disk, or a loop).
    """
    if not folder.is_dir():
        raise DatasetLayoutError(f"missing folder '{folder}'. Expected {layout}")
    images, others = [], []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() and not entry.exists():
            _raise_broken_link(entry)
        if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(entry)
        else:
            others.append(entry)
    if not images:
        raise DatasetLayoutError(f"folder '{folder}' holds no image ({sorted(IMAGE_EXTENSIONS)}). Expected {layout}")
    return images, others


def _raise_broken_link(link: Path) -> None:
    try:
        os.stat(link)
    except OSError as error:
        why = "loops back on itself" if error.errno == errno.ELOOP else "does not exist"
    else:  # pragma: no cover - the caller saw it broken; it came back in between
        return
    raise DatasetLayoutError(
        f"'{link}' is a symbolic link to '{os.readlink(link)}', which {why} (an unmounted disk or a moved "
        f"dataset?); the image behind it cannot be read. Repair or remove the link."
    )


def extension_case_twins(paths: Iterable[str | os.PathLike[str]]) -> list[list[Path]]:
    """Groups of images that differ only in the case of their extension (``a.jpg`` and ``a.JPG``).

    Both are read as two images; usually one is an accidental copy, which would count twice.

    Returns:
        One sorted list of two or more paths per group, the groups sorted.
    """
    groups: dict[tuple[Path, str], list[Path]] = {}
    for path in map(Path, paths):
        groups.setdefault((path.with_suffix(""), path.suffix.lower()), []).append(path)
    return sorted(sorted(group) for group in groups.values() if len(group) > 1)


def not_read_note(folder: Path, others: Sequence[Path], twins: Sequence[Sequence[Path]]) -> list[str]:
    """The reader's note on a dataset folder: what was not read, and the twins that were.

    Args:
        folder: the dataset folder (the note names entries relative to it).
        others: entries not read (from :func:`list_images`).
        twins: from :func:`extension_case_twins`.

    Returns:
        Zero, one or two lines.
    """

    def name(path: Path) -> str:
        relative = path.relative_to(folder) if path.is_relative_to(folder) else path
        return f"{relative}/" if path.is_dir() else str(relative)

    notes = []
    if others:
        more = f", ... ({len(others) - 10} more)" if len(others) > 10 else ""
        shown = ", ".join(name(p) for p in others[:10]) + more
        entries = "entry" if len(others) == 1 else "entries"
        notes.append(f"{len(others)} {entries} under '{folder}' not read (not image files: {shown})")
    if twins:
        shown = "; ".join(" and ".join(name(p) for p in group) for group in twins[:5])
        notes.append(
            f"{len(twins)} image(s) under '{folder}' have a twin whose extension differs only in case "
            f"({shown}); both are read, so a copy counts twice: remove one of each pair"
        )
    return notes


def parse_market_folder(folder: Path, layout: str, num_cameras: int | None) -> tuple[list[Item], list[Path]]:
    """Read a folder of Market-1501 style images (``{pid}_c{cam}...``) into items.

    Junk (pid -1) is dropped here; distractors (pid 0) are kept.

    Args:
        folder: e.g. ``.../bounding_box_train``.
        layout: a description of the expected layout, for error messages.
        num_cameras: the number of cameras of the dataset (camera numbers must lie in
            ``1..num_cameras``), or ``None`` for any positive camera number.

    Returns:
        ``(items, ignored)``: ``(path, pid, camid)`` with camid 0-based, in file-name order,
        and the entries that were not read (non-image files, folders).

    Raises:
        DatasetLayoutError: missing/empty folder, a file name that does not parse, or a
            camera number out of range.
    """
    images, others = list_images(folder, layout)
    items: list[Item] = []
    for path in images:
        match = MARKET_NAME_PATTERN.match(path.name)
        if match is None:
            raise DatasetLayoutError(
                f"file name '{path}' does not parse as '{{pid}}_c{{camera}}...' "
                f"(e.g. 0002_c1s1_000451_03.jpg). Expected {layout}"
            )
        pid, cam = int(match.group(1)), int(match.group(2))
        if pid < -1:
            raise DatasetLayoutError(f"file '{path}' has pid {pid}; expected -1 (junk), 0 or a positive id")
        if cam < 1 or (num_cameras is not None and cam > num_cameras):
            expected = f"1..{num_cameras}" if num_cameras is not None else ">= 1"
            raise DatasetLayoutError(f"file '{path}' has camera c{cam}; expected camera {expected}")
        items.append((str(path), pid, cam - 1))
    return drop_junk(items), others


def drop_junk(items: Iterable[Item]) -> list[Item]:
    """Drop junk boxes (pid -1), as the standard protocol does.

    Zheng et al. 2015; the book page ``book/datasets.md``.
    """
    return [item for item in items if item[1] != -1]


def relabel(items: Sequence[Item]) -> list[Item]:
    """Map pids to ``0..C-1`` in increasing order of the original pid.

    Args:
        items: ``(path, pid, camid)`` samples.

    Returns:
        The same samples, in the same order, with consecutive pids.
    """
    label_of = {pid: label for label, pid in enumerate(sorted({pid for _, pid, _ in items}))}
    return [(path, label_of[pid], camid) for path, pid, camid in items]


def _subset_statistics(items: Sequence[Item]) -> dict[str, int]:
    """Number of identities, images and cameras of one subset."""
    return {
        "ids": len({pid for _, pid, _ in items}),
        "images": len(items),
        "cameras": len({camid for _, _, camid in items}),
    }


class ReIDDataset:
    """A re-ID dataset split into ``train``, ``query`` and ``gallery`` lists.

    Args:
        train: ``(path, pid, camid)`` training samples with pids already ``0..C-1``.
        query: query samples, pids as in the files.
        gallery: gallery samples, pids as in the files (distractors included).
        name: the dataset's name, printed in the statistics table.
        verbose: print the statistics table.

    Raises:
        DatasetLayoutError: a subset is empty or the training pids are not ``0..C-1``.
    """

    def __init__(
        self, train: list[Item], query: list[Item], gallery: list[Item], name: str, verbose: bool = True
    ) -> None:
        self.name = name
        self.train, self.query, self.gallery = train, query, gallery
        for subset, items in (("train", train), ("query", query), ("gallery", gallery)):
            if not items:
                raise DatasetLayoutError(f"{name}: the {subset} subset is empty")
        train_pids = sorted({pid for _, pid, _ in train})
        if train_pids != list(range(len(train_pids))):
            raise DatasetLayoutError(f"{name}: training pids must be relabelled to 0..C-1")
        if verbose:
            self.print_statistics()

    @property
    def num_train_pids(self) -> int:
        """Number of training identities C (the classifier's width)."""
        return len({pid for _, pid, _ in self.train})

    @property
    def num_train_imgs(self) -> int:
        """Number of training images."""
        return len(self.train)

    @property
    def num_train_cams(self) -> int:
        """Number of cameras seen in training."""
        return len({camid for _, _, camid in self.train})

    @property
    def num_query_pids(self) -> int:
        """Number of query identities."""
        return len({pid for _, pid, _ in self.query})

    @property
    def num_query_imgs(self) -> int:
        """Number of query images."""
        return len(self.query)

    @property
    def num_query_cams(self) -> int:
        """Number of cameras seen in the query set."""
        return len({camid for _, _, camid in self.query})

    @property
    def num_gallery_pids(self) -> int:
        """Number of gallery identities (distractor pid 0 counts as one)."""
        return len({pid for _, pid, _ in self.gallery})

    @property
    def num_gallery_imgs(self) -> int:
        """Number of gallery images."""
        return len(self.gallery)

    @property
    def num_gallery_cams(self) -> int:
        """Number of cameras seen in the gallery."""
        return len({camid for _, _, camid in self.gallery})

    def statistics(self) -> dict[str, dict[str, int]]:
        """The standard table as a dict.

        Returns:
            ``{"train" | "query" | "gallery": {"ids": int, "images": int, "cameras": int}}``.
        """
        return {
            "train": _subset_statistics(self.train),
            "query": _subset_statistics(self.query),
            "gallery": _subset_statistics(self.gallery),
        }

    def format_statistics(self) -> str:
        """The standard table (subset | # ids | # images | # cameras) as text."""
        stats = self.statistics()
        lines = [
            f"=> {self.name} loaded",
            "  ----------------------------------------",
            "  subset   | # ids | # images | # cameras",
            "  ----------------------------------------",
        ]
        for subset in ("train", "query", "gallery"):
            s = stats[subset]
            lines.append(f"  {subset:<8} | {s['ids']:5d} | {s['images']:8d} | {s['cameras']:9d}")
        lines.append("  ----------------------------------------")
        return "\n".join(lines)

    def print_statistics(self) -> None:
        """Print the standard statistics table."""
        print(self.format_statistics())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(train={self.num_train_imgs} images / {self.num_train_pids} ids, "
            f"query={self.num_query_imgs}, gallery={self.num_gallery_imgs})"
        )
