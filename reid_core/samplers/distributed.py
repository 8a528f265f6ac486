r"""Identity samplers under ``torchrun``: each process takes whole P x K groups of every global batch.

With N processes, a step trains on a *global batch* of G images, G/N on each process. The
distributed sampler runs the single-process sampler (PK or Graph Sampling) with the global batch
size G on every process, from the same seed, so every process computes the same epoch; process
r then keeps the r-th of the N equal slices of each global batch:

.. math::
    \text{batch}_r(t) = \text{global}(t)\big[rG/N,\ (r+1)G/N\big), \qquad
    \text{global}(t) = \text{the single-process sampler's batch } t \text{ of size } G.

Both samplers lay a batch out identity by identity, K images each, so a slice of G/N images (a
multiple of K) holds whole identities: an identity's K images of a step are all on one process,
and the global batch holds each identity at most once, so no identity is on two processes in
the same step. Every process gets the same number of batches (those of the global sampler), and
N processes with G/N images each see exactly the images of one process with G. The Graph
Sampler's class graph must be the same on every process:
:class:`~reid_core.samplers.graph_epoch.GraphSamplingCallback` builds it on rank 0 and
broadcasts it.

Chapters: the engine's multi-process training (README, "Training on several GPUs").

Example:
    >>> pk = RandomIdentitySampler(pids, batch_size=64, num_instances=4, seed=0)  # the global batch
    >>> sampler = DistributedIdentitySampler(pk)  # rank and N from torchrun
    >>> loader = DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler, drop_last=True)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from reid_core.collectives import gather_rows, is_distributed, process_count, process_rank

__all__ = ["DistributedIdentitySampler"]


class DistributedIdentitySampler(Sampler[int]):
    """This process's slice of every batch of a global identity sampler.

    Args:
        sampler: a flat identity sampler with ``batch_size`` (the global batch G),
            ``num_instances`` (K) and a ``seed`` (a ``RandomIdentitySampler`` or a
            ``GraphSampler``), built with the same arguments on every process.
        num_replicas: N; default: the process group's size (1 without one).
        rank: r in ``0..N-1``; default: this process's rank.

    Attributes:
        batch_size: G / N, the images of one batch on this process (give it to the DataLoader).
        sampler: the global sampler (``set_epoch``, ``update_graph``... go to it).

    Raises:
        ValueError: G / N is not a whole number of K-image groups, the sampler has no seed,
            or (with a process group) the processes' samplers were built with different seeds.
    """

    def __init__(self, sampler: Sampler[int], num_replicas: int | None = None, rank: int | None = None) -> None:
        for name in ("batch_size", "num_instances", "seed"):
            if not hasattr(sampler, name):
                raise TypeError(f"sampler must have a .{name} (an identity sampler), got {type(sampler).__name__}")
        num_replicas = process_count() if num_replicas is None else int(num_replicas)
        rank = process_rank() if rank is None else int(rank)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas} and {rank}")
        global_batch, k = int(sampler.batch_size), int(sampler.num_instances)  # type: ignore[attr-defined]
        if global_batch % (num_replicas * k) != 0:
            raise ValueError(
                f"the global batch_size ({global_batch}) must split into {num_replicas} processes x whole groups "
                f"of num_instances = {k} images: make it a multiple of {num_replicas * k}"
            )
        seed = sampler.seed  # type: ignore[attr-defined]
        if seed is None:
            raise ValueError("the sampler needs a seed: every process must draw the same global batches")
        if is_distributed():
            seeds = gather_rows(torch.tensor([int(seed)], dtype=torch.int64)).tolist()
            if len(set(seeds)) != 1:
                raise ValueError(f"the processes' samplers have different seeds {seeds} (rank order): give them one")
        self.sampler, self.num_replicas, self.rank = sampler, num_replicas, rank
        self.global_batch_size = global_batch
        self.batch_size = global_batch // num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to the global sampler (every process computes the same epoch)."""
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __len__(self) -> int:
        """This process's indices per epoch: (global batches) x G / N."""
        return len(self.sampler) // self.global_batch_size * self.batch_size  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        indices = np.fromiter(iter(self.sampler), dtype=np.int64)  # (T * G,) every process's batches
        num_batches = len(indices) // self.global_batch_size
        batches = indices[: num_batches * self.global_batch_size].reshape(num_batches, self.num_replicas, -1)
        return iter(batches[:, self.rank].reshape(-1).tolist())  # (T * G / N,) this process's slices

    def __repr__(self) -> str:
        return (
            f"DistributedIdentitySampler(rank {self.rank} of {self.num_replicas}, {self.batch_size} of "
            f"{self.global_batch_size} images per batch, {self.sampler!r})"
        )
