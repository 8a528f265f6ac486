"""Reader for SynthReID, the book's procedurally rendered dataset, in Market-1501 layout.

``render_synthreid(root, ...)`` (reid_core.data) writes ``bounding_box_train``, ``query`` and
``bounding_box_test`` with Market-1501 file names (``0001_c1s1_000151_01.jpg``, distractors
pid 0000, junk -1), so the same parsing serves synthetic and real data.

Chapter: 01 (the datasets and their statistics), and every chapter's ``synth`` profile.
"""

from __future__ import annotations

from reid_core.data.market1501 import MarketLayoutDataset

__all__ = ["SynthReID"]


class SynthReID(MarketLayoutDataset):
    """SynthReID read from the folder ``render_synthreid`` wrote.

    Args:
        root: the folder ``render_synthreid`` wrote, or its parent holding ``synthreid``.
        verbose: print the statistics table.

    Raises:
        DatasetLayoutError: a missing or empty folder, or a file name that does not parse.
    """

    dataset_name = "SynthReID"
    folder_names = ("synthreid", "SynthReID")
    num_cameras = None  # the renderer's num_cameras is a parameter
    name_example = "0001_c1s1_000151_01.jpg"
