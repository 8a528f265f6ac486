"""Market-1501 (Zheng et al. ICCV 2015), and the folder layout many re-ID datasets share.

Layout (the book page ``book/datasets.md``)::

    Market-1501-v15.09.15/
        bounding_box_train/  12,936 images, 751 ids
        query/                3,368 images, 750 ids
        bounding_box_test/   19,732 images: 750 ids + distractors (0000) + junk (-1)
        images/              (Market-1501+500k only) ~500k extra distractors

File names ``0002_c1s1_000451_03.jpg``: pid, camera 1-6, sequence, frame, box index.
After dropping junk the gallery holds 15,913 images.

URL: http://www.liangzheng.org/Project/project_reid.html

Chapter: 01 (the datasets and their statistics).
"""

from __future__ import annotations

import os
from pathlib import Path

from reid_core.data.base import (
    DatasetLayoutError,
    Item,
    ReIDDataset,
    extension_case_twins,
    find_dataset_dir,
    not_read_note,
    parse_market_folder,
    relabel,
    report_notes,
)

__all__ = ["Market1501", "MarketLayoutDataset", "read_market_layout", "MARKET_SUBFOLDERS"]

MARKET_SUBFOLDERS: tuple[str, str, str] = ("bounding_box_train", "query", "bounding_box_test")
"""The train, query and gallery folders of the Market-1501 layout."""


def read_market_layout(
    dataset_dir: Path,
    layout: str,
    num_cameras: int | None,
    extra_gallery_dirs: tuple[str, ...] = (),
    verbose: bool = True,
) -> tuple[list[Item], list[Item], list[Item]]:
    """Read a folder in Market-1501 layout into train / query / gallery lists.

    Args:
        dataset_dir: the folder holding ``bounding_box_train``, ``query``, ``bounding_box_test``.
        layout: a description of the expected layout, for error messages.
        num_cameras: camera numbers must lie in ``1..num_cameras`` (``None``: any).
        extra_gallery_dirs: further folders under ``dataset_dir`` whose images join the gallery
            (e.g. Market-1501+500k's ``images``).
        verbose: print the note on the entries not read and the extension-case twins (else it
            is a :class:`~reid_core.data.base.DatasetNote` warning).

    Returns:
        ``(train, query, gallery)``; train relabelled to ``0..C-1``, junk (-1) dropped.
    """
    train_dir, query_dir, gallery_dir = (dataset_dir / name for name in MARKET_SUBFOLDERS)
    train, ignored_train = parse_market_folder(train_dir, layout, num_cameras)
    query, ignored_query = parse_market_folder(query_dir, layout, num_cameras)
    gallery, ignored_gallery = parse_market_folder(gallery_dir, layout, num_cameras)
    ignored = ignored_train + ignored_query + ignored_gallery
    for extra in extra_gallery_dirs:
        extra_items, extra_ignored = parse_market_folder(dataset_dir / extra, layout, num_cameras)
        gallery += extra_items
        ignored += extra_ignored
    twins = extension_case_twins(path for path, _, _ in train + query + gallery)
    report_notes(not_read_note(dataset_dir, ignored, twins), verbose)
    return relabel(train), query, gallery


class MarketLayoutDataset(ReIDDataset):
    """A dataset stored in the Market-1501 folder layout; subclasses set the class attributes.

    Args:
        root: the dataset folder itself, or its parent holding one of ``folder_names``.
        verbose: print the statistics table.
        extra_gallery_dirs: further folders whose images join the gallery.

    Raises:
        DatasetLayoutError: a missing or empty folder, or a file name that does not parse.
    """

    dataset_name = "Market-1501 layout"
    folder_names: tuple[str, ...] = ()
    num_cameras: int | None = None
    name_example = "0002_c1s1_000451_03.jpg"

    def __init__(
        self, root: str | os.PathLike[str], verbose: bool = True, extra_gallery_dirs: tuple[str, ...] = ()
    ) -> None:
        layout = self.expected_layout()
        self.dataset_dir = find_dataset_dir(root, self.folder_names, MARKET_SUBFOLDERS[0], self.dataset_name, layout)
        for extra in extra_gallery_dirs:
            if not (self.dataset_dir / extra).is_dir():
                raise DatasetLayoutError(f"{self.dataset_name}: missing folder '{self.dataset_dir / extra}'")
        train, query, gallery = read_market_layout(
            self.dataset_dir, layout, self.num_cameras, extra_gallery_dirs, verbose
        )
        super().__init__(train, query, gallery, name=self.dataset_name, verbose=verbose)

    @classmethod
    def expected_layout(cls) -> str:
        """A description of the expected folder layout, used in error messages."""
        folder = cls.folder_names[0] if cls.folder_names else "<dataset>"
        return (
            f"the {cls.dataset_name} layout: '{folder}/' holding "
            f"{', '.join(n + '/' for n in MARKET_SUBFOLDERS)} with images named like "
            f"'{cls.name_example}' ({{pid}}_c{{camera}}..., pid -1 = junk, 0 = distractor)"
        )


class Market1501(MarketLayoutDataset):
    """Market-1501: 1,501 ids, 6 cameras, 32,668 DPM boxes (Zheng et al. ICCV 2015).

    Standard counts (train / query / gallery after junk removal): 12,936 images of 751 ids /
    3,368 / 15,913.

    Args:
        root: the dataset folder itself, or its parent holding ``Market-1501-v15.09.15`` or
            ``market1501`` (torchreid's ``market1501/Market-1501-v15.09.15`` works too).
        market1501_500k: add the ~500k distractors of the ``images`` folder to the gallery.
        verbose: print the statistics table.

    Raises:
        DatasetLayoutError: a missing or empty folder, or a file name that does not parse.

    Example:
        >>> data = Market1501("data")  # doctest: +SKIP
        >>> path, pid, camid = data.train[0]  # doctest: +SKIP
    """

    dataset_name = "Market-1501"
    folder_names = (
        "Market-1501-v15.09.15",
        "market1501",
        "Market-1501",
        "market1501/Market-1501-v15.09.15",
    )
    num_cameras = 6
    name_example = "0002_c1s1_000451_03.jpg"

    def __init__(self, root: str | os.PathLike[str], market1501_500k: bool = False, verbose: bool = True) -> None:
        super().__init__(root, verbose=verbose, extra_gallery_dirs=("images",) if market1501_500k else ())
