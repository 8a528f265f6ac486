"""What a checkpoint was trained with, so that a run resumes only the run it belongs to.

A notebook's checkpoint folder is named after the notebook, the run and the dataset, not after
the recipe. Without a check, a second run with another learning rate would find the first
run's ``last.pt``, "resume" it at its last epoch, train nothing and report the first run's
accuracy under the second run's settings. So the trainer stores a *fingerprint* of the run in
every checkpoint and, before resuming, compares it with the fingerprint of the run about to
start; any difference stops the run with :class:`CheckpointMismatchError`, which names the
fields that differ and how to start afresh.

The fingerprint is a flat dict of plain values (what ``torch.load(weights_only=True)`` reads):

* ``recipe.<field>``: every :class:`~reid_core.engine.trainer.TrainConfig` field but those that
  say where and how often to checkpoint and what to print (:data:`NOT_RECIPE`). One field may
  differ: ``epochs`` may grow (an interrupted 120-epoch run may go on to 150), as long as the
  learning rates of the epochs already trained stay the same (a step schedule: yes; a cosine
  one, which depends on the total: no); it may never fall below the epochs already trained;
* ``model.class``, ``model.state``: the model's class and one ``"name (shape) dtype"`` string per
  entry of its state dict (another backbone, embedding size or number of classes);
* ``criterion.class``, ``criterion.state``: the same for a criterion with state (a margin head);
* ``optimizer.class``, ``optimizer.groups``: the optimizer's type and, per parameter group, the
  number of tensors and the learning-rate multiplier;
* ``data.samples``, ``data.items_sha256``, ``data.batches_per_epoch``: the size of the training
  set, a SHA-256 of its ``(file name, pid, camid)`` items (or of a ``TensorDataset``'s tensors;
  ``None`` when the dataset exposes neither) and the loader's batches per epoch.

Chapters: every notebook's ``paper`` profile (the runs that checkpoint).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reid_core.engine.checkpoint import CheckpointError
from reid_core.engine.schedules import build_lr_schedule

__all__ = [
    "CheckpointMismatchError",
    "FINGERPRINT_KEY",
    "NOT_RECIPE",
    "check_fingerprint",
    "fingerprint_differences",
    "run_fingerprint",
]

NOT_RECIPE: frozenset[str] = frozenset({"checkpoint_dir", "checkpoint_every", "resume", "progress"})
"""TrainConfig fields that do not change what a run computes, left out of the fingerprint."""

FINGERPRINT_KEY = "fingerprint"
"""The checkpoint entry that holds the fingerprint."""
_EPOCHS = "recipe.epochs"


class CheckpointMismatchError(CheckpointError):
    """A checkpoint belongs to another run (another recipe, model, optimizer or data)."""


def _plain(value: Any) -> Any:
    """Tuples as lists, so that a fingerprint compares equal after a round trip through torch.save."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _state_entries(module: nn.Module) -> list[str]:
    return [
        f"{name} {tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
        for name, tensor in module.state_dict().items()
    ]


def _data_digest(dataset: Any) -> str | None:
    """SHA-256 of a dataset's item list (file names, not folders: a moved dataset still matches)."""
    digest = hashlib.sha256()
    items = getattr(dataset, "items", None)
    tensors = getattr(dataset, "tensors", None)
    if isinstance(items, Iterable) and not isinstance(items, (str, bytes)):
        for path, pid, camid in items:
            digest.update(f"{os.path.basename(os.fspath(path))}\t{int(pid)}\t{int(camid)}\n".encode())
        return digest.hexdigest()
    if isinstance(tensors, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in tensors):
        for tensor in tensors:
            digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
    return None


def _length(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def run_fingerprint(
    config: Any, model: nn.Module, criterion: Any, optimizer: torch.optim.Optimizer, loader: Any
) -> dict[str, Any]:
    """The fingerprint of a run (see the module docstring for its fields).

    Args:
        config: the run's TrainConfig (a dataclass).
        model: the model being trained.
        criterion: the criterion; its state counts when it is an ``nn.Module``.
        optimizer: the optimizer built for the run.
        loader: the training loader (its ``dataset`` is digested when it has one).

    Returns:
        name -> plain value (str, int, float, bool, None, lists).
    """
    if not is_dataclass(config):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    fingerprint: dict[str, Any] = {f"recipe.{k}": _plain(v) for k, v in asdict(config).items() if k not in NOT_RECIPE}
    fingerprint["model.class"] = type(model).__qualname__
    fingerprint["model.state"] = _state_entries(model)
    if isinstance(criterion, nn.Module):
        fingerprint["criterion.class"] = type(criterion).__qualname__
        fingerprint["criterion.state"] = _state_entries(criterion)
    fingerprint["optimizer.class"] = type(optimizer).__qualname__
    fingerprint["optimizer.groups"] = [[len(g["params"]), float(g.get("lr_mult", 1.0))] for g in optimizer.param_groups]
    dataset = getattr(loader, "dataset", None)
    fingerprint["data.samples"] = _length(dataset) if dataset is not None else None
    fingerprint["data.items_sha256"] = _data_digest(dataset) if dataset is not None else None
    fingerprint["data.batches_per_epoch"] = _length(loader)
    return fingerprint


def _first_difference(saved: list[Any], current: list[Any]) -> tuple[Any, Any]:
    for a, b in zip(saved, current):
        if a != b:
            return a, b
    n = min(len(saved), len(current))
    return (saved[n] if len(saved) > n else "-"), (current[n] if len(current) > n else "-")


def _describe(key: str, saved: Any, current: Any) -> str:
    if isinstance(saved, list) and isinstance(current, list) and key.endswith(".state"):
        old, new = _first_difference(saved, current)
        return (
            f"{key}: {len(saved)} entries in the checkpoint, {len(current)} in this run; first difference: "
            f"checkpoint {old!r}, this run {new!r}"
        )
    return f"{key}: checkpoint {saved!r}, this run {current!r}"


def _lr_factors(fingerprint: Mapping[str, Any], epochs_done: int) -> list[float]:
    """The schedule's factor at every iteration of the first ``epochs_done`` epochs (as the trainer sets it)."""
    schedule = build_lr_schedule(
        fingerprint["recipe.scheduler"],
        fingerprint[_EPOCHS],
        fingerprint["recipe.milestones"],
        fingerprint["recipe.gamma"],
        fingerprint["recipe.warmup_epochs"],
        fingerprint["recipe.warmup_factor"],
        fingerprint["recipe.decay_start"],
    )
    per_epoch = [
        n for n in (fingerprint.get("data.batches_per_epoch"), fingerprint.get("recipe.max_iters_per_epoch")) if n
    ]
    n = min(per_epoch) if per_epoch else 1
    return [schedule(epoch + i / n) for epoch in range(epochs_done) for i in range(n)]


def _epochs_difference(saved: Mapping[str, Any], current: Mapping[str, Any], epochs_done: int) -> str | None:
    """Why a changed ``epochs`` cannot resume, or None when it can (see the module docstring)."""
    old, new = saved.get(_EPOCHS), current.get(_EPOCHS)
    if old == new:
        return None
    if not isinstance(new, int) or epochs_done > new:
        return (
            f"{_EPOCHS}: the checkpoint has trained {epochs_done} of {old} epochs, this run asks for {new} "
            f"(it would report the longer training as this shorter one)"
        )
    try:
        same_rates = _lr_factors(saved, epochs_done) == _lr_factors(current, epochs_done)
    except (KeyError, TypeError, ValueError):
        same_rates = False
    if not same_rates:
        return (
            f"{_EPOCHS}: checkpoint {old}, this run {new}, and the {current.get('recipe.scheduler')} "
            f"schedule gives the {epochs_done} epochs already trained other learning rates with {new} epochs"
        )
    return None


def fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any], epochs_done: int = 0) -> list[str]:
    """One line per field that differs between two fingerprints (empty when the run may resume).

    Args:
        saved: the checkpoint's fingerprint.
        current: the fingerprint of the run about to start.
        epochs_done: the epochs the checkpoint has trained (``epochs`` may grow, see the module docstring).
    """
    lines = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if key == _EPOCHS:
            line = _epochs_difference(saved, current, epochs_done)
            lines += [line] if line else []
        elif _plain(old) != _plain(new):
            lines.append(_describe(key, _plain(old), _plain(new)))
    return lines


def check_fingerprint(state: Mapping[str, Any], current: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Stop unless the checkpoint ``state`` (read from ``path``) was written by this run.

    Raises:
        CheckpointMismatchError: the fingerprints differ, or the checkpoint holds none; the
            message lists the differing fields and how to start afresh.
    """
    path = Path(path)
    remedy = (
        f"To start this run afresh, delete '{path.parent}' (or move it away); to keep both runs, give this "
        f"one another checkpoint_dir (a notebook puts it beside results_dir: pass another results_dir)."
    )
    saved = state.get(FINGERPRINT_KEY)
    if not isinstance(saved, Mapping):
        raise CheckpointMismatchError(
            f"checkpoint '{path}' holds no fingerprint of the run that wrote it (an older reid_core), so it "
            f"cannot be checked against this run's recipe, model and data. {remedy}"
        )
    differences = fingerprint_differences(saved, current, int(state.get("epoch", 0)))
    if differences:
        listed = "\n".join(f"  - {line}" for line in differences)
        raise CheckpointMismatchError(
            f"checkpoint '{path}' was written by another run; resuming it would report that run's training "
            f"under this run's settings. What differs:\n{listed}\n{remedy}"
        )
