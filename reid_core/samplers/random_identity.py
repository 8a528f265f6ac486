"""PK sampling: batches of P identities x K images (Hermans, Beyer, Leibe 2017).

Batch-hard triplet mining needs positives in every batch, so each batch holds
P = batch_size / K identities with K images each.

Per epoch (torchreid's semantics, made exact):

1. each identity's images are shuffled and cut into groups of K (an incomplete last group is
   dropped); an identity with fewer than K images gives one group holding all its images
   plus K - n repeats drawn with replacement, so images repeat only when they must;
2. batches take the next group of P *distinct* identities until the groups run out.

torchreid picks the P identities uniformly among those with groups left and stops when fewer
than P remain, so the number of batches is random. Here the number of batches B is the
largest one for which the groups can fill B batches of P distinct identities,
:math:`\\max\\{B : \\sum_i \\min(g_i, B) \\ge BP\\}` with :math:`g_i` the groups of identity i.
It depends only on the dataset, so ``__len__`` is exact. The groups kept are trimmed to
exactly BP (at most P - 1 dropped, taken from the identities with the most groups); then at
each step an identity whose remaining groups equal the remaining batches must be in the
batch, and the others are drawn without replacement with probability proportional to their
remaining groups, which spreads the large identities over the epoch.

Chapter: 01 (baseline), 02 (metric learning), 03 (AlignedReID's TriHard).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from reid_core.arrays import as_pid_array

__all__ = ["RandomIdentitySampler"]


def max_num_batches(groups_per_id: np.ndarray, ids_per_batch: int) -> int:
    """The largest B with :math:`\\sum_i \\min(g_i, B) \\ge B P` (enough groups for B batches
    of P distinct identities); the feasible B form an interval [0, B*], found by bisection.

    Args:
        groups_per_id: (N,) groups g_i of each identity.
        ids_per_batch: P.

    Returns:
        B*.
    """
    low, high = 0, int(groups_per_id.sum()) // ids_per_batch
    while low < high:
        mid = (low + high + 1) // 2
        if int(np.minimum(groups_per_id, mid).sum()) >= mid * ids_per_batch:
            low = mid
        else:
            high = mid - 1
    return low


class RandomIdentitySampler(Sampler[int]):
    """Flat sampler whose consecutive ``batch_size`` indices form one P x K batch.

    Args:
        pids: the pid of each training sample, in dataset order (e.g. ``ImageDataset.pids``).
        batch_size: P * K.
        num_instances: K, images per identity in a batch.
        seed: seed of the shuffling; ``None`` draws one from torch's global generator at
            construction (so ``torch.manual_seed`` makes runs reproducible).

    Raises:
        ValueError: ``batch_size`` not a positive multiple of ``num_instances``, or more
            identities per batch than the dataset holds.

    Example:
        >>> sampler = RandomIdentitySampler([0, 0, 1, 1, 2, 2], batch_size=4, num_instances=2, seed=0)
        >>> len(sampler)
        4
        >>> loader = DataLoader(dataset, batch_size=4, sampler=sampler)  # doctest: +SKIP
    """

    def __init__(
        self, pids: Sequence[int] | Tensor | np.ndarray, batch_size: int, num_instances: int, seed: int | None = None
    ) -> None:
        pid_array = as_pid_array(pids)  # (N,)
        if num_instances < 1:
            raise ValueError(f"num_instances must be >= 1, got {num_instances}")
        if batch_size < num_instances or batch_size % num_instances != 0:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of num_instances ({num_instances})"
            )
        unique_pids, inverse = np.unique(pid_array, return_inverse=True)
        self.num_pids_per_batch = batch_size // num_instances  # P
        if self.num_pids_per_batch > len(unique_pids):
            raise ValueError(
                f"batch_size / num_instances = {self.num_pids_per_batch} identities per batch, but pids holds "
                f"only {len(unique_pids)} identities"
            )
        self.batch_size, self.num_instances = batch_size, num_instances
        order = np.argsort(inverse, kind="stable")  # sample indices grouped by identity
        bounds = np.cumsum(np.bincount(inverse))[:-1]
        self.indices_per_id: list[np.ndarray] = np.split(order, bounds)  # N_ids arrays of sample indices
        counts = np.array([len(ix) for ix in self.indices_per_id])  # (N_ids,)
        self.groups_per_id = np.maximum(counts // num_instances, 1)  # g_i
        self.num_batches = max_num_batches(self.groups_per_id, self.num_pids_per_batch)
        self.seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for this epoch: the order depends only on ``(seed, epoch)``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Number of indices per epoch, ``num_batches * batch_size`` (the same every epoch)."""
        return self.num_batches * self.batch_size

    def _groups(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        """Step 1: each identity's images shuffled and cut into groups of K."""
        k = self.num_instances
        groups = []
        for indices in self.indices_per_id:
            if len(indices) < k:  # all its images, plus repeats only for the missing places
                extra = rng.choice(indices, size=k - len(indices), replace=True)
                group = rng.permutation(np.concatenate([indices, extra]))  # (K,)
                groups.append([group])
            else:
                shuffled = rng.permutation(indices)
                groups.append([shuffled[j * k : (j + 1) * k] for j in range(len(indices) // k)])
        return groups

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """All indices of one epoch, in batch order.

        Args:
            epoch: the epoch whose shuffle to compute.

        Returns:
            (len(self),) int64 sample indices; row b of ``.reshape(-1, batch_size)`` is batch b.
        """
        rng = np.random.default_rng([self.seed, epoch])
        groups = self._groups(rng)
        p, num_batches = self.num_pids_per_batch, self.num_batches
        remaining = np.minimum(self.groups_per_id, num_batches)  # (N_ids,) groups each id will give
        excess = int(remaining.sum()) - num_batches * p  # < P by maximality of B
        for _ in range(excess):  # trim from the identities with the most groups, ties at random
            largest = np.flatnonzero(remaining == remaining.max())
            remaining[rng.choice(largest)] -= 1
        next_group = np.zeros(len(groups), dtype=np.int64)  # (N_ids,) next group to use
        batches = []
        for batches_left in range(num_batches, 0, -1):
            forced = np.flatnonzero(remaining == batches_left)  # must appear in every batch left
            optional = np.flatnonzero((remaining > 0) & (remaining < batches_left))
            weights = remaining[optional] / remaining[optional].sum() if len(optional) else None
            chosen = rng.choice(optional, size=p - len(forced), replace=False, p=weights)
            batch_ids = rng.permutation(np.concatenate([forced, chosen]))  # (P,)
            batches.append(np.concatenate([groups[i][next_group[i]] for i in batch_ids]))  # (P*K,)
            next_group[batch_ids] += 1
            remaining[batch_ids] -= 1
        return np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        """Yield this epoch's indices, then move to the next epoch (unless ``set_epoch`` is
        called again), so that plain repeated iteration reshuffles."""
        indices = self.epoch_indices(self.epoch)
        self.epoch += 1
        return iter(indices.tolist())

    def __repr__(self) -> str:
        return (
            f"RandomIdentitySampler(P={self.num_pids_per_batch}, K={self.num_instances}, "
            f"{len(self.indices_per_id)} ids, {self.num_batches} batches/epoch, seed={self.seed})"
        )
