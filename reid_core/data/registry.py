"""Dataset registry: a plain dict of reader classes and ``build_dataset``.

Notebooks pick the dataset by name (the ``dataset`` parameter of the ``paper`` profile).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from reid_core.data.base import ReIDDataset
from reid_core.data.cuhk03 import CUHK03
from reid_core.data.dukemtmc import DukeMTMCreID
from reid_core.data.market1501 import Market1501
from reid_core.data.msmt17 import MSMT17
from reid_core.data.synthreid.reader import SynthReID

__all__ = ["DATASETS", "build_dataset"]

DATASETS: dict[str, Callable[..., ReIDDataset]] = {
    "market1501": Market1501,
    "dukemtmcreid": DukeMTMCreID,
    "cuhk03": CUHK03,
    "msmt17": MSMT17,
    "synthreid": SynthReID,
}
"""Reader class of each dataset name."""


def build_dataset(name: str, root: str | os.PathLike[str], **kwargs: Any) -> ReIDDataset:
    """Build a dataset reader by name.

    Args:
        name: one of :data:`DATASETS` (case-insensitive).
        root: passed to the reader.
        **kwargs: the reader's options (e.g. ``split="detected"`` for CUHK03, ``verbose``).

    Returns:
        The reader, with ``train``, ``query`` and ``gallery`` lists.

    Raises:
        ValueError: an unknown name; the message lists the valid names.
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {sorted(DATASETS)}")
    return DATASETS[key](root, **kwargs)
