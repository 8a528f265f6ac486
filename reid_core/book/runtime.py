"""Where a notebook runs and writes: its device, and the checkpoint folder of a run.

Every chapter takes ``device`` ("auto", "cpu", "cuda", "cuda:1", ...) and ``results_dir`` as
papermill parameters; these two functions turn them into what the trainer needs, the same way
in every chapter.

Chapters: all (the set-up cell of each notebook).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from reid_core.engine.trainer import default_device

__all__ = ["resolve_device", "checkpoint_dir"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; any other value is parsed by torch.

    Raises:
        ValueError: for a string torch cannot parse, naming the parameter and the valid forms.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return default_device()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc


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
