"""DukeMTMC-reID (Ristani et al. ECCVW 2016; Zheng et al. ICCV 2017), in Market-1501 layout.

Layout (the book page ``book/datasets.md``)::

    DukeMTMC-reID/
        bounding_box_train/  16,522 images, 702 ids
        query/                2,228 images, 702 ids
        bounding_box_test/   17,661 images (702 ids + single-camera distractor ids)

File names ``0001_c2_f0046182.jpg``: pid, camera 1-8, frame. The dataset has been withdrawn by
Duke; this reader serves copies researchers already hold.

Chapter: 01 (the datasets and their statistics).
"""

from __future__ import annotations

from reid_core.data.market1501 import MarketLayoutDataset

__all__ = ["DukeMTMCreID"]


class DukeMTMCreID(MarketLayoutDataset):
    """DukeMTMC-reID: 1,404 ids seen by >= 2 of 8 cameras, 702 for training.

    Standard counts (train / query / gallery): 16,522 images of 702 ids / 2,228 / 17,661.

    Args:
        root: the dataset folder itself, or its parent holding ``DukeMTMC-reID``
            (torchreid's ``dukemtmc-reid/DukeMTMC-reID`` works too).
        verbose: print the statistics table.

    Raises:
        DatasetLayoutError: a missing or empty folder, or a file name that does not parse.
    """

    dataset_name = "DukeMTMC-reID"
    folder_names = ("DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmcreid")
    num_cameras = 8
    name_example = "0001_c2_f0046182.jpg"
