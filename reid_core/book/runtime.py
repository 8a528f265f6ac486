"""Where a notebook runs and writes: its device, its folders, and the checkpoint folder of a run.

Every chapter takes ``device`` ("auto", "cpu", "cuda", "cuda:1", ...), ``data_root`` and
``results_dir`` as papermill parameters; these functions turn them into what the trainer needs,
the same way in every chapter. A relative folder is relative to the working directory of the
run: the folder papermill (or ``tools/run_notebooks.py``, which passes absolute paths) was
started from, or the notebook's folder in Jupyter; ``None`` is the repository's own folder.

Chapters: all (the set-up cell of each notebook).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from reid_core.engine.trainer import default_device

__all__ = ["resolve_device", "resolve_path", "checkpoint_dir", "REPOSITORY_ROOT"]

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding ``reid_core/``, ``notebooks/`` and the default ``data/`` and ``results/``."""


def resolve_path(path: str | os.PathLike[str] | None, default: str, name: str = "path") -> Path:
    """A folder parameter as an absolute path.

    Args:
        path: the parameter's value: ``None`` for ``default``; ``~`` is expanded; a relative
            path is taken relative to the current working directory (the folder the run was
            started from; papermill keeps it unless given ``--cwd``).
        default: the folder under :data:`REPOSITORY_ROOT` used for ``None``, e.g. ``"data"``.
        name: the parameter's name, for the error message.

    Returns:
        The absolute path (it need not exist yet).

    Raises:
        TypeError: ``path`` is neither None nor a str or path.
    """
    if path is None:
        return REPOSITORY_ROOT / default
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a folder (a str) or None, got {type(path).__name__} {path!r}")
    return Path(os.path.abspath(Path(path).expanduser()))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; any other value is parsed by torch.

    Raises:
        ValueError: for a string torch cannot parse (naming the valid forms), or CUDA asked for where
            there is none.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine (use 'auto' or 'cpu')")
    return resolved


def checkpoint_dir(results_dir: str | os.PathLike[str], notebook: str, run: str, profile: str) -> str | None:
    """The folder a run's checkpoints go to: ``<results_dir>/../checkpoints/<notebook>/<run>``.

    Only the ``paper`` profile checkpoints (its runs take hours on a GPU and resume after an
    interruption); the CPU profiles take minutes and return ``None``.

    Args:
        results_dir: the notebook's ``results_dir`` parameter.
        notebook: the notebook's stem, e.g. ``"03_alignedreid"``.
        run: the run's name within the notebook (dataset, method, arm).
        profile: the notebook's ``profile`` parameter.
    """
    if profile != "paper":
        return None
    return str(Path(results_dir).parent / "checkpoints" / notebook / run)
