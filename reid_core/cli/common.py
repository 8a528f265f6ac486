"""What the ``reid`` verbs share: the model and device options, image folders, labels, embeddings.

Identities come from file names in the Market-1501 style, ``{pid}_c{camera}...``
(``0002_c1s1_000451_03.jpg``: pid 2, camera 1; pid -1 junk, 0 distractor). Folders of one's own
crops need no such names for ``reid extract`` and ``reid rank``; ``reid evaluate`` and
``reid calibrate`` need identities and cameras, so they read a dataset (or a folder of named
crops, ``--dataset folder``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from reid_core.book.runtime import resolve_device as book_resolve_device
from reid_core.data import DATASETS, DatasetLayoutError, build_dataset
from reid_core.data.base import IMAGE_EXTENSIONS, MARKET_NAME_PATTERN, Item
from reid_core.data.base import list_images as base_list_images
from reid_core.engine.features import extract_features
from reid_core.engine.loaders import build_test_loader
from reid_core.engine.model_card import LoadedModel, load_model
from reid_core.files import atomic_write

__all__ = [
    "CLIError",
    "LabelledSets",
    "add_model_arguments",
    "atomic_write",
    "embed_images",
    "labels_from_names",
    "list_images",
    "load_from_args",
    "read_labelled_sets",
    "resolve_device",
]

FOLDER_DATASET = "folder"
FOLDER_LAYOUT = (
    "a folder holding query/ and gallery/ (or bounding_box_test/), and optionally "
    "bounding_box_train/ or train/, with images named '{pid}_c{camera}...' (e.g. 0002_c1s1_000451_03.jpg)"
)


class CLIError(Exception):
    """A user error the ``reid`` command reports in one line (no traceback)."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--device`` and ``--batch-size``, shared by every verb."""
    parser.add_argument(
        "--model",
        required=True,
        metavar="CKPT",
        help="a model file written by reid_core (save_model), e.g. by chapter 01",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")


def resolve_device(name: str) -> torch.device:
    """``--device``: :func:`reid_core.book.resolve_device`, its errors as :class:`CLIError`."""
    try:
        return book_resolve_device(name)
    except ValueError as err:
        raise CLIError(f"--device: {err}") from err


def load_from_args(args: argparse.Namespace) -> LoadedModel:
    """Load ``--model`` onto ``--device``."""
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    return load_model(args.model, device=resolve_device(args.device))


def list_images(folder: str | os.PathLike[str], what: str = "--images") -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted by path.

    Other files are counted and reported on stdout (never silently dropped).

    Raises:
        CLIError: the folder is missing or holds no image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise CLIError(f"{what} {root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    others = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if not images:
        raise CLIError(f"{what} {root}: no image file ({', '.join(sorted(IMAGE_EXTENSIONS))}) found")
    if others:
        names = ", ".join(str(p.relative_to(root)) for p in others[:3])
        print(f"note: {len(others)} non-image file(s) under {root} not read (e.g. {names})")
    return images


def labels_from_names(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray] | None:
    """(pids, 0-based camids) from Market-style names, or ``None`` unless every name parses."""
    pids, cams = [], []
    for path in paths:
        match = MARKET_NAME_PATTERN.match(Path(path).name)
        if match is None:
            return None
        pids.append(int(match.group(1)))
        cams.append(int(match.group(2)) - 1)
    return np.array(pids, dtype=np.int64), np.array(cams, dtype=np.int64)


def embed_images(
    loaded: LoadedModel,
    paths: Sequence[str | os.PathLike[str]],
    batch_size: int = 64,
    desc: str = "features",
    progress: bool = True,
) -> Tensor:
    """The card's embedding of every image, in order: (N, D) float32 on the CPU.

    Reuses the test transform and :func:`~reid_core.engine.features.extract_features` (flip
    averaging and normalisation as the card says).

    Raises:
        CLIError: the card's embedding field is not a (N, D) vector.
    """
    card = loaded.card
    items: list[Item] = [(os.fspath(p), 0, 0) for p in paths]  # labels are not used here
    loader = build_test_loader(items, card.height, card.width, batch_size=batch_size, mean=card.mean, std=card.std)
    feats = extract_features(
        loaded.model,
        loader,
        loaded.device,
        field=card.embedding_field,
        flip=card.flip,
        normalize=card.normalize,
        progress=progress,
        desc=desc,
    ).features
    if feats.dim() != 2:
        raise CLIError(
            f"{loaded.path}: the embedding field {card.embedding_field!r} has shape "
            f"{tuple(feats.shape)}; the reid command needs one (N, D) vector per image"
        )
    return feats


@dataclass
class LabelledSets:
    """Labelled train / query / gallery lists of a dataset, as the checks need them.

    Attributes:
        name: what was read (for messages).
        train: training items (may be empty for ``--dataset folder``).
        query, gallery: test items, pids as in the files.
        train_identities: the *original* training pids (from the file names), or ``None``
            when the names do not carry them (the overlap check then says it did not run).
    """

    name: str
    train: list[Item]
    query: list[Item]
    gallery: list[Item]
    train_identities: list[int] | None


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _read_folder(root: Path) -> LabelledSets:
    """``--dataset folder``: query/ + gallery/ (+ optional train/) of Market-style names, junk kept."""
    if not root.is_dir():
        raise CLIError(f"--data {root}: no such folder. Expected {FOLDER_LAYOUT}")
    query_dir = _first_dir(root, ("query",))
    gallery_dir = _first_dir(root, ("gallery", "bounding_box_test"))
    if query_dir is None or gallery_dir is None:
        raise CLIError(f"--data {root}: no query/ or gallery/ folder. Expected {FOLDER_LAYOUT}")
    sets: dict[str, list[Item]] = {}
    train_dir = _first_dir(root, ("train", "bounding_box_train"))
    for name, folder in (("query", query_dir), ("gallery", gallery_dir), ("train", train_dir)):
        if folder is None:
            sets[name] = []
            continue
        items, ignored = _parse_keep_junk(folder)
        if ignored:
            print(f"note: {len(ignored)} non-image file(s) in {folder} not read (e.g. {ignored[0].name})")
        sets[name] = items
    train_ids = sorted({pid for _, pid, _ in sets["train"]}) if sets["train"] else None
    return LabelledSets(f"folder {root}", sets["train"], sets["query"], sets["gallery"], train_ids)


def _parse_keep_junk(folder: Path) -> tuple[list[Item], list[Path]]:
    """Market-style names of one folder into items; unlike the dataset readers, junk (pid -1) stays,
    so that the protocol check can report it."""
    try:
        images, others = base_list_images(folder, FOLDER_LAYOUT)
    except DatasetLayoutError as err:
        raise CLIError(str(err)) from err
    items: list[Item] = []
    for path in images:
        match = MARKET_NAME_PATTERN.match(path.name)
        if match is None:
            raise CLIError(f"file name '{path}' does not parse as '{{pid}}_c{{camera}}...'. Expected {FOLDER_LAYOUT}")
        items.append((str(path), int(match.group(1)), int(match.group(2)) - 1))
    return items, others


def read_labelled_sets(dataset: str, root: str | os.PathLike[str]) -> LabelledSets:
    """Read ``--dataset`` at ``--data``: a registered dataset or ``folder``.

    Raises:
        CLIError: an unknown dataset name or a folder that does not have its layout.
    """
    root = Path(root)
    if dataset == FOLDER_DATASET:
        return _read_folder(root)
    if dataset.lower() not in DATASETS:
        raise CLIError(f"--dataset {dataset!r} is not known; valid: {sorted(DATASETS) + [FOLDER_DATASET]}")
    try:
        data = build_dataset(dataset, root, verbose=False)
    except DatasetLayoutError as err:
        raise CLIError(str(err)) from err
    names = labels_from_names([Path(p) for p, _, _ in data.train])
    train_ids = sorted(set(names[0].tolist())) if names is not None else None
    return LabelledSets(f"{dataset} at {root}", list(data.train), list(data.query), list(data.gallery), train_ids)
