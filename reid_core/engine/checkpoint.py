"""Checkpoints written atomically and read back with ``torch.load(weights_only=True)``.

A checkpoint is written to a temporary file in the target folder, flushed to disk, then
renamed over the target (``os.replace`` is atomic on POSIX), so a crash mid-write never leaves
a truncated ``last.pt``. A process killed during a save (``kill -9``, a lost node) cannot remove
its temporary file: :func:`remove_stale_temp_files` does it at the next start. Loading uses
``weights_only=True``: only tensors, numbers, strings and containers of them are accepted, so a
checkpoint cannot run code when it is opened.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import torch

from reid_core.files import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "remove_stale_temp_files", "CheckpointError"]


_TEMP_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or holds something other than what was expected."""


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that interrupted saves of ``path`` left in its folder.

    Call it when a run starts, before it writes: a folder belongs to one run at a time, so any
    ``.<name>.*.tmp`` beside ``path`` is the remains of a killed save (as large as a checkpoint).

    Args:
        path: the checkpoint file, e.g. ``checkpoints/run/last.pt`` (it need not exist).

    Returns:
        The files removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f"{glob.escape(_temp_prefix(path))}*{_TEMP_SUFFIX}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically.

    Args:
        state: tensors, numbers, strings, and dicts/lists/tuples of them (what
            ``weights_only=True`` can read back).
        path: target file; its folder is created if missing.

    Returns:
        The path written.
    """
    path = Path(path)
    return atomic_write(
        path,
        lambda handle: torch.save(state, handle),
        sync=True,
        temp_prefix=_temp_prefix(path),
        temp_suffix=_TEMP_SUFFIX,
    )


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, unreadable, or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle errors, truncated zip, disallowed globals
        raise CheckpointError(f"could not read checkpoint {path}: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state
