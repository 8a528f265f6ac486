r"""Training and evaluation on several processes (GPUs or CPU cores, one or several machines) with ``torchrun``.

PyTorch's DistributedDataParallel (DDP) does the work: ``torchrun --nproc_per_node=N script.py``
starts N copies of the script, each a *rank* with its own device (GPU ``LOCAL_RANK`` with the
NCCL backend, or the CPU with gloo). Each rank trains on its share of every batch, and after
each backward pass DDP averages the gradients over the ranks, so every rank takes the same
optimizer step. This module holds the engine's side of it:

* :func:`init_distributed` joins the job from the environment variables torchrun sets;
* :class:`ParallelTraining` is what the :class:`~reid_core.engine.trainer.Trainer` uses: the
  model and criterion in one DDP module (the criterion's parameters, e.g. a margin head or
  QAConv's matcher, are averaged too), SyncBatchNorm as an option, the epoch statistics
  pooled over the ranks, each rank's random state in the checkpoint;
* :func:`extract_features_distributed` splits a test set across the ranks and gathers the
  features back in dataset order.

With one process (a notebook, ``python script.py``) nothing here changes anything. The
samplers' and losses' sides are :class:`~reid_core.samplers.DistributedIdentitySampler` and the
``batch_scope`` of the losses (:mod:`reid_core.collectives`).

Only rank 0 writes checkpoints, logs, progress bars and results; every rank must call the
trainer, the evaluation and ``Trainer.save`` at the same points, since they exchange tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, SequentialSampler, Subset

from reid_core.collectives import (
    broadcast_from_main,
    gather_rows,
    is_distributed,
    process_count,
    process_rank,
    sum_over_processes,
)
from reid_core.engine.features import Features, extract_features

__all__ = [
    "DistributedConfig",
    "ParallelTraining",
    "TrainingStep",
    "extract_features_distributed",
    "init_distributed",
    "shard_bounds",
    "shutdown_distributed",
]

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class DistributedConfig:
    """How the trainer wraps the model when it runs under ``torchrun``.

    Attributes:
        sync_bn: convert every BatchNorm of the model and criterion to ``SyncBatchNorm``, so
            that BN statistics are those of the global batch (CUDA only: PyTorch has no CPU
            kernels for it). Without it each rank normalises its own share.
        find_unused_parameters: let DDP tolerate parameters that get no gradient in a step
            (e.g. a classifier whose loss weight is 0); costs a graph traversal per step.
        forward_sync_buffers: copy rank 0's buffers (BN running statistics) to every rank at
            each forward pass (DDP's default).
    """

    sync_bn: bool = False
    find_unused_parameters: bool = False
    forward_sync_buffers: bool = True


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> torch.device:
    """Join the ``torchrun`` job this process belongs to, and pick its device.

    Reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``). On CUDA the rank uses GPU ``LOCAL_RANK`` and the NCCL backend, on the CPU
    the gloo backend. Without torchrun (no ``RANK`` in the environment) no group is created.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        timeout_s: how long a collective waits for the other ranks before failing.

    Returns:
        This process's device.

    Raises:
        ValueError: ``device`` is not one of the three, CUDA was asked for but is missing, or the
            node has fewer GPUs than processes.
        RuntimeError: some of torchrun's variables are set and others are missing.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device")
    present = [name for name in _TORCHRUN_VARIABLES if name in os.environ]
    if not present:
        return torch.device("cuda" if use_cuda else "cpu")
    missing = [name for name in _TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(f"torchrun's environment is incomplete: {missing} missing (launch with torchrun)")
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} GPUs: "
                "give torchrun --nproc_per_node at most the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        this_device = torch.device("cuda", local_rank)
    else:
        this_device = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return this_device


def shutdown_distributed() -> None:
    """Leave the process group (at the end of a torchrun script); nothing without one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class TrainingStep(nn.Module):
    """The model and the criterion as one module: ``step(images, labels) -> criterion(model(images), labels)``.

    DDP wraps this module, so the gradients of the criterion's parameters (margin heads, QAConv's
    matcher) are averaged over the ranks with the model's.
    """

    def __init__(self, model: nn.Module, criterion: Callable[[Any, Tensor], dict[str, Tensor]]) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Args: images (B, 3, H, W), labels (B,). Returns: the criterion's weighted loss terms."""
        return self.criterion(self.model(images), labels)


class ParallelTraining:
    """The trainer's multi-process side: DDP wrapping, pooled statistics, per-rank random state.

    Without a process group of several processes :attr:`step` is the plain
    :class:`TrainingStep` and every method returns its input.

    Args:
        model: the model, already on ``device``.
        criterion: the criterion (an ``nn.Module`` on ``device``, or a function).
        device: this rank's device.
        config: the :class:`DistributedConfig`.

    Attributes:
        step: the module the trainer calls, ``step(images, labels) -> terms``.
        rank, world_size: this process's rank and the number of processes.
        is_main: rank 0, the one that writes.
    """

    def __init__(self, model: nn.Module, criterion: Any, device: torch.device, config: DistributedConfig) -> None:
        self.rank, self.world_size = process_rank(), process_count()
        self.is_main = self.rank == 0
        self.device = device
        active = is_distributed()
        if config.sync_bn and active:
            if device.type != "cuda":
                raise ValueError(
                    f"sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernels), got {device}"
                )
            for module in (model, criterion):
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    raise ValueError("sync_bn converts the BatchNorm layers inside a model, not a bare BatchNorm")
                if isinstance(module, nn.Module):
                    nn.SyncBatchNorm.convert_sync_batchnorm(module)  # replaces the children in place
        step: nn.Module = TrainingStep(model, criterion)
        if active:
            step = DistributedDataParallel(
                step,
                device_ids=[torch.cuda.current_device() if device.index is None else device.index]
                if device.type == "cuda"
                else None,
                find_unused_parameters=config.find_unused_parameters,
                forward_sync_buffers=config.forward_sync_buffers,
            )
        self.step = step

    def pool_epoch(self, sums: dict[str, float], images: int) -> tuple[dict[str, float], int]:
        """Sum the epoch's per-step loss sums and image counts over the ranks, averaging the sums.

        Args:
            sums: this rank's sum over the epoch's steps of each logged term.
            images: this rank's images in the epoch.

        Returns:
            ``(sums averaged over ranks, images of all ranks)``; the same on every rank.
        """
        if not is_distributed():
            return sums, images
        keys = sorted(sums)
        local = torch.tensor([sums[k] for k in keys] + [float(images)], dtype=torch.float64)  # (T + 1,)
        total = sum_over_processes(local)  # (T + 1,)
        pooled = {k: float(v) / self.world_size for k, v in zip(keys, total[:-1].tolist())}
        return pooled, int(total[-1])

    def agree(self, stop_training: bool, lr_scale: float) -> tuple[bool, float]:
        """Rank 0's decision to stop and its learning-rate factor, on every rank (so none waits alone)."""
        if not is_distributed():
            return stop_training, lr_scale
        both = broadcast_from_main(torch.tensor([float(stop_training), lr_scale], dtype=torch.float64))
        return bool(both[0]), float(both[1])

    def random_states(self) -> dict[str, Tensor]:
        """Every rank's torch (and CUDA) random state, rows in rank order, for the checkpoint.

        Each rank draws its own augmentations, so resuming exactly needs each rank's state.
        A collective: every rank must call it.
        """
        if not is_distributed():
            return {}
        states = {"process_torch_rng": gather_rows(torch.get_rng_state().unsqueeze(0))}  # (N, L)
        if self.device.type == "cuda":
            states["process_cuda_rng"] = gather_rows(torch.cuda.get_rng_state(self.device).unsqueeze(0))  # (N, L')
        return states

    def restore_random_states(self, state: dict[str, Any]) -> None:
        """Restore this rank's random state from :meth:`random_states`' rows, when the checkpoint
        was written by as many ranks (else each rank keeps its fresh seed)."""
        rows = state.get("process_torch_rng")
        if not is_distributed() or rows is None or rows.shape[0] != self.world_size:
            return
        # clone: a row is a view into the (N, L) storage, which set_rng_state misreads (a crash in torch 2.14)
        torch.set_rng_state(rows[self.rank].cpu().clone())
        cuda_rows = state.get("process_cuda_rng")
        if self.device.type == "cuda" and cuda_rows is not None:
            torch.cuda.set_rng_state(cuda_rows[self.rank].cpu().clone(), self.device)


def shard_bounds(num_items: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` shards of ``range(num_items)``, sizes differing by at most 1.

    Example:
        >>> shard_bounds(7, 3)
        [(0, 3), (3, 5), (5, 7)]
    """
    if num_shards < 1 or num_items < 0:
        raise ValueError(f"need num_shards >= 1 and num_items >= 0, got {num_shards} and {num_items}")
    size, extra = divmod(num_items, num_shards)
    stops = np.cumsum([size + (i < extra) for i in range(num_shards)]).tolist()
    return list(zip([0] + stops[:-1], stops))


def extract_features_distributed(model: nn.Module, loader: DataLoader, **kwargs: Any) -> Features:
    """:func:`~reid_core.engine.features.extract_features` with the test set split across the ranks.

    Rank r extracts the r-th contiguous shard of ``loader.dataset`` (:func:`shard_bounds`); the
    shards are gathered in rank order, which is the dataset order, so the result equals
    single-process extraction. Every rank must call it, and every rank gets the whole result.
    Without a process group it is ``extract_features``.

    Args:
        model: the (unwrapped) model, in any mode (extraction runs in eval mode).
        loader: a test loader in dataset order (no shuffling).
        **kwargs: passed to ``extract_features`` (``device``, ``field``, ``flip``, ...); the
            progress bar shows on rank 0 only.

    Returns:
        :class:`Features` of the whole dataset, on the CPU.
    """
    if not is_distributed():
        return extract_features(model, loader, **kwargs)
    if not isinstance(loader.sampler, SequentialSampler):
        raise ValueError("extract_features_distributed needs a test loader in dataset order (shuffle=False)")
    num_items = len(loader.dataset)  # type: ignore[arg-type]
    world = process_count()
    if num_items < world:
        raise ValueError(f"the loader's dataset holds {num_items} images, fewer than the {world} processes")
    start, stop = shard_bounds(num_items, world)[process_rank()]
    shard = DataLoader(
        Subset(loader.dataset, range(start, stop)),
        batch_size=loader.batch_size,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )
    kwargs["progress"] = bool(kwargs.get("progress", True)) and process_rank() == 0
    local = extract_features(model, shard, **kwargs)
    return Features(
        gather_rows(local.features),  # (N_items, ...)
        gather_rows(torch.as_tensor(local.pids)).numpy(),  # (N_items,)
        gather_rows(torch.as_tensor(local.camids)).numpy(),  # (N_items,)
    )
