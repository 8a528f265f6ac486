r"""Graph Sampling (GS): batches made of a class and its nearest classes (Liao & Shao, CVPR 2022).

A metric loss learns only from the pairs it sees. Random P x K batches of many identities are
mostly easy: the negatives look nothing like the anchor. GS builds, at the start of every
epoch, a nearest-neighbour graph over the classes and fills each batch with a *seed* class and
its ``k = B / K - 1`` nearest classes, so every batch is made of look-alikes (arXiv 2104.01546,
Sec. 3; QAConv 2.1 code ``reid/utils/data/graph_sampler.py``):

1. one random image per class, embedded by the current model (see
   :func:`reid_core.samplers.class_distance.build_class_distance`);
2. the (C, C) class distance :math:`D` (for QAConv: :math:`D = -\text{score}`), diagonal
   :math:`+\infty`;
3. :math:`\mathcal{N}_k(c)` = the k columns of row c with the smallest distance;
4. batch :math:`c` = :math:`\{c\} \cup \mathcal{N}_k(c)`, K images per class, taken from a
   per-class shuffled list with a moving pointer that wraps around (reshuffling the list when
   it does), so a class's images are all used before any repeats;
5. the C batches are shuffled: an epoch is C iterations of B images, every class seeds one.

Everything per epoch is vectorised: the graph is one ``topk`` and the image pointers are
resolved for all C x (k + 1) class visits at once (``bench/graph_sampler.py`` compares it
with plain Python loops). Before the first :meth:`GraphSampler.update_graph` the sampler falls
back to PK sampling (:class:`reid_core.samplers.random_identity.RandomIdentitySampler`), as
QAConv 2.0 did for its first epoch (``gs_pre_epochs=1``).

Chapter: ``notebooks/05_graph_sampling.py``.

Example:
    >>> pids = [0, 0, 1, 1, 2, 2, 3, 3]
    >>> sampler = GraphSampler(pids, batch_size=4, num_instances=2, seed=0)
    >>> sampler.update_graph(torch.rand(4, 4))
    >>> len(sampler)  # C batches of batch_size
    16
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from reid_core.arrays import as_pid_array

__all__ = ["GraphSampler", "nearest_classes"]


def nearest_classes(class_dist: Tensor | np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest other classes of every class (one vectorised ``topk``).

    Args:
        class_dist: (C, C) distances between classes; the diagonal is ignored (treated as
            :math:`+\\infty`, as the paper's code adds 1e15 to it). Off-diagonal entries must
            be finite.
        k: neighbours per class, ``1 <= k < C``.

    Returns:
        (C, k) int64 class indices, row c sorted by increasing distance from c. Ties are
        broken by ``torch.topk`` (unspecified order).
    """
    dist = torch.as_tensor(class_dist)
    if dist.dim() != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"class_dist must be a square (C, C) matrix, got shape {tuple(dist.shape)}")
    num_classes = dist.shape[0]
    if not 1 <= k < num_classes:
        raise ValueError(f"k must satisfy 1 <= k < C = {num_classes}, got k = {k}")
    if not dist.is_floating_point():
        dist = dist.double()
    elif dist.dtype in (torch.float16, torch.bfloat16):
        dist = dist.float()  # topk on half is not supported on every device
    low, high = torch.aminmax(dist)  # NaN and +-inf propagate: a fast all-finite test
    if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
        bad = (~torch.isfinite(dist)).nonzero()  # (n_bad, 2) slower; only when some entry is not finite
        off_diag = bad[bad[:, 0] != bad[:, 1]]
        if len(off_diag):
            i, j = off_diag[0].tolist()
            raise ValueError(f"class_dist must be finite off the diagonal; entry ({i}, {j}) is {dist[i, j].item()}")
    # The k + 1 smallest of each row hold the k nearest others whatever the diagonal holds:
    # drop the class itself where it made the list, else the (k+1)-th. This avoids copying the
    # (C, C) matrix to overwrite its diagonal.
    if bool(torch.isnan(dist.diagonal()).any()):
        dist = dist.clone()  # (C, C) NaN would rank unpredictably: give it +inf in a copy
        dist.fill_diagonal_(float("inf"))
    _, index = torch.topk(dist, k + 1, dim=1, largest=False, sorted=True)  # (C, k + 1)
    index = index.cpu().numpy().astype(np.int64)
    is_self = index == np.arange(num_classes)[:, None]  # (C, k + 1) at most one True per row
    is_self[~is_self.any(axis=1), k] = True  # self not among them: drop the farthest
    return index[~is_self].reshape(num_classes, k)  # (C, k) keeps the sorted order


class GraphSampler(Sampler[int]):
    """Graph Sampling: each batch is a seed class plus its nearest classes, K images each.

    A flat sampler: consecutive ``batch_size`` indices form one batch, so use it as
    ``DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)``. Each batch
    is laid out class by class: the seed's K images first, then its neighbours' in order of
    increasing distance.

    The per-class image pointers persist across epochs (as in the paper's code), so images
    keep cycling through the whole class from one epoch to the next.

    Args:
        pids: (N,) the pid of each training sample, in dataset order. Classes are the sorted
            distinct pids; class index c is the c-th smallest pid (the row order of
            ``class_dist``).
        batch_size: B, images per batch (64 in the paper).
        num_instances: K, images per class in a batch (2 in QAConv 2.1 / CVPR, 4 in 2.0).
        seed: makes the sampler reproducible (together with :meth:`set_epoch`); ``None`` draws
            fresh randomness.

    Attributes:
        classes: (C,) the sorted distinct pids.
        num_neighbors: k = B / K - 1.
        neighbors: (C, k) nearest classes of each class from the last :meth:`update_graph`,
            or ``None`` before the first graph.
    """

    def __init__(
        self,
        pids: Sequence[int] | np.ndarray | Tensor,
        batch_size: int = 64,
        num_instances: int = 2,
        seed: int | None = None,
    ) -> None:
        pid_array = as_pid_array(pids)
        if num_instances < 1:
            raise ValueError(f"num_instances must be >= 1, got {num_instances}")
        if batch_size < 1 or batch_size % num_instances != 0:
            raise ValueError(
                f"batch_size must be a positive multiple of num_instances = {num_instances}, got {batch_size}"
            )
        classes_per_batch = batch_size // num_instances
        if classes_per_batch < 2:
            raise ValueError(
                f"a batch needs at least 2 classes (a seed and a neighbour): batch_size / num_instances = "
                f"{batch_size} / {num_instances} = {classes_per_batch}"
            )
        self.classes, labels = np.unique(pid_array, return_inverse=True)  # (C,), (N,)
        num_classes = len(self.classes)
        if classes_per_batch > num_classes:
            raise ValueError(
                f"k = batch_size / num_instances - 1 = {classes_per_batch - 1} neighbours need k < C, "
                f"but pids has only C = {num_classes} classes"
            )
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative int or None, got {seed}")
        self.pids = pid_array
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.num_neighbors = classes_per_batch - 1
        self.seed = seed
        self.epoch = 0
        self.neighbors: np.ndarray | None = None
        self._rng = np.random.default_rng(None if seed is None else [seed, 0])
        self._pk_sampler: Sampler[int] | None = None

        # Dataset indices grouped by class: class c owns members[start[c] : start[c] + count[c]].
        self._members = np.argsort(labels, kind="stable").astype(np.int64)  # (N,)
        self._count = np.bincount(labels, minlength=num_classes).astype(np.int64)  # (C,)
        self._start = np.concatenate(([0], np.cumsum(self._count)[:-1])).astype(np.int64)  # (C,)
        # State of the moving pointers: the current shuffled list of every class (same layout
        # as _members) and how far into it each class has been read.
        all_classes = np.arange(num_classes, dtype=np.int64)
        self._order = self._shuffled_lists(all_classes, self._rng)  # (N,)
        self._pointer = np.zeros(num_classes, dtype=np.int64)  # (C,)

    @property
    def num_classes(self) -> int:
        """C, the number of distinct pids."""
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        """Re-seed the epoch's shuffles from ``(seed, epoch)`` (and the PK fallback's).

        With a seed, the same sequence of calls (``update_graph``, ``set_epoch``, iteration)
        gives the same batches. Without ``set_epoch`` the random stream simply continues.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch
        if self.seed is not None:
            self._rng = np.random.default_rng([self.seed, 1, epoch])
        if self._pk_sampler is not None and hasattr(self._pk_sampler, "set_epoch"):
            self._pk_sampler.set_epoch(epoch)  # type: ignore[attr-defined]

    def update_graph(self, class_dist: Tensor | np.ndarray) -> None:
        """Build the class graph for the next epoch from a (C, C) class distance.

        Args:
            class_dist: (C, C) distances, rows/columns in sorted pid order (:attr:`classes`);
                smaller = more alike; the diagonal is ignored; off-diagonal entries finite.
                Any device; for QAConv pass ``-score``.
        """
        shape = tuple(torch.as_tensor(class_dist).shape)
        if shape != (self.num_classes, self.num_classes):
            raise ValueError(
                f"class_dist must have shape (C, C) = ({self.num_classes}, {self.num_classes}) "
                f"for the {self.num_classes} classes in pids, got {shape}"
            )
        self.neighbors = nearest_classes(class_dist, self.num_neighbors)  # (C, k)

    def set_neighbors(self, neighbors: Tensor | np.ndarray) -> None:
        """Use a class graph computed elsewhere (another process's :meth:`update_graph`).

        Args:
            neighbors: (C, k) int class indices, row c the k nearest classes of c.
        """
        array = np.asarray(torch.as_tensor(neighbors).cpu(), dtype=np.int64)
        expected = (self.num_classes, self.num_neighbors)
        if array.shape != expected:
            raise ValueError(f"neighbors must have shape (C, k) = {expected}, got {array.shape}")
        if array.size and (array.min() < 0 or array.max() >= self.num_classes):
            raise ValueError(
                f"neighbors must hold class indices in [0, {self.num_classes}), "
                f"got values in [{array.min()}, {array.max()}]"
            )
        self.neighbors = array

    def batch_classes(self) -> np.ndarray:
        """(C, k + 1) class indices of the batch seeded by each class: the seed, then its kNN."""
        if self.neighbors is None:
            raise RuntimeError("no graph yet: call update_graph(class_dist) first")
        seeds = np.arange(self.num_classes, dtype=np.int64)[:, None]  # (C, 1)
        return np.concatenate((seeds, self.neighbors), axis=1)  # (C, P)

    def sample_epoch(self) -> np.ndarray:
        """Draw one epoch of GS batches (advances the image pointers).

        Images are handed out batch by batch in seed order (the batch seeded by class 0
        first), as in the paper's code, and only then are the batches shuffled; so sorting the
        rows by their seed recovers the order in which each class's pointer advanced.

        Returns:
            (C, batch_size) dataset indices, one row per batch, rows in shuffled order; row
            layout: ``num_instances`` images of each class of :meth:`batch_classes`.
        """
        visits = self.batch_classes().reshape(-1)  # (C * P,) classes in seed order
        images = self._take_images(visits)  # (C * P, K)
        batches = images.reshape(self.num_classes, self.batch_size)  # (C, B)
        return batches[self._rng.permutation(self.num_classes)]  # (C, B)

    def __iter__(self) -> Iterator[int]:
        if self.neighbors is None:
            return iter(self._fallback())
        return iter(self.sample_epoch().reshape(-1).tolist())

    def __len__(self) -> int:
        if self.neighbors is None:
            return len(self._fallback())  # type: ignore[arg-type]
        return self.num_classes * self.batch_size

    # ------------------------------------------------------------------ internals

    def _fallback(self) -> Sampler[int]:
        """The PK sampler used before the first graph (built once, on first use)."""
        if self._pk_sampler is None:
            # Imported here: the PK sampler lives in its own module and is only needed
            # before the first graph.
            from reid_core.samplers.random_identity import RandomIdentitySampler

            self._pk_sampler = RandomIdentitySampler(
                self.pids.tolist(), self.batch_size, self.num_instances, seed=self.seed
            )
            if hasattr(self._pk_sampler, "set_epoch"):
                self._pk_sampler.set_epoch(self.epoch)  # type: ignore[attr-defined]
        return self._pk_sampler

    def _shuffled_lists(self, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One fresh random permutation of the images of each listed class, concatenated.

        All permutations come from one ``argsort`` of random keys within segments, instead
        of one ``shuffle`` call per class.

        Args:
            classes: (S,) class indices (repeats allowed: one permutation per entry).
            rng: random generator.

        Returns:
            (sum of count[classes],) dataset indices: segment i is a permutation of the
            images of ``classes[i]``.
        """
        length = self._count[classes]  # (S,)
        seg_start = np.cumsum(length) - length  # (S,)
        seg_of = np.repeat(np.arange(len(classes)), length)  # (L,) segment of each slot
        local = np.arange(int(length.sum())) - seg_start[seg_of]  # (L,) 0..n-1 in each segment
        # Sorting by (segment, random 32 bits) keeps segments in place and shuffles inside
        # each one; packed into one uint64 key, a single sort does it.
        key = (seg_of.astype(np.uint64) << np.uint64(32)) | rng.integers(0, 2**32, size=len(seg_of), dtype=np.uint64)
        order = np.argsort(key, kind="stable")  # (L,)
        return self._members[self._start[classes][seg_of] + local[order]]  # (L,)

    def _take_images(self, visits: np.ndarray) -> np.ndarray:
        """Resolve the moving pointers for a sequence of class visits, all at once.

        The j-th visit (in sequence order) to class c reads positions
        ``pointer[c] + j*K ... pointer[c] + j*K + K - 1`` of c's endless stream: its current
        shuffled list, then fresh shuffles of it, one after another. A position's round is
        ``pos // n_c`` (round 0 = the current list) and its slot ``pos % n_c``. This is exactly
        what a Python loop with a pointer that reshuffles at the end of the list produces.

        Args:
            visits: (V,) class index of every visit, in the order images are handed out.

        Returns:
            (V, K) dataset indices.
        """
        k_inst = self.num_instances
        num_classes = self.num_classes
        # Rank of each visit among the visits to the same class.
        # uint16 keys let numpy use its radix sort (most datasets have < 65,536 classes).
        sort_key = visits.astype(np.uint16) if num_classes <= 2**16 else visits
        by_class = np.argsort(sort_key, kind="stable")  # (V,)
        visits_per_class = np.bincount(visits, minlength=num_classes)  # (C,)
        first_visit = np.cumsum(visits_per_class) - visits_per_class  # (C,)
        rank = np.empty_like(visits)  # (V,)
        rank[by_class] = np.arange(len(visits)) - first_visit[visits[by_class]]

        count = self._count[visits][:, None]  # (V, 1)
        position = self._pointer[visits][:, None] + rank[:, None] * k_inst + np.arange(k_inst)  # (V, K)
        round_ = position // count  # (V, K)
        slot = position % count  # (V, K)

        # Fresh lists: class c needs rounds 1..R_c, R_c = (pointer + demand) // n. The last one
        # becomes c's current list (even when nothing was read from it yet, like a pointer
        # that hit the end and reshuffled).
        end = self._pointer + visits_per_class * k_inst  # (C,)
        rounds = end // self._count  # (C,)
        fresh_classes = np.repeat(np.arange(num_classes, dtype=np.int64), rounds)  # (S,)
        fresh = self._shuffled_lists(fresh_classes, self._rng)  # (L,)
        fresh_len = self._count[fresh_classes]  # (S,)
        fresh_start = np.cumsum(fresh_len) - fresh_len  # (S,) offset of each fresh list
        first_fresh = np.cumsum(rounds) - rounds  # (C,) index of class c's round 1 list

        cls = np.broadcast_to(visits[:, None], position.shape)  # (V, K)
        images = np.empty(position.shape, dtype=np.int64)  # (V, K)
        old = round_ == 0
        images[old] = self._order[self._start[cls[old]] + slot[old]]
        new = ~old
        segment = first_fresh[cls[new]] + round_[new] - 1
        images[new] = fresh[fresh_start[segment] + slot[new]]

        # Advance the state: classes that wrapped keep their last fresh list.
        wrapped = np.nonzero(rounds > 0)[0]  # (W,)
        if len(wrapped):
            size = self._count[wrapped]  # (W,)
            last = first_fresh[wrapped] + rounds[wrapped] - 1  # (W,) their last fresh list
            src = np.repeat(fresh_start[last], size)  # (sum n,)
            dst = np.repeat(self._start[wrapped], size)  # (sum n,)
            within = np.arange(len(src)) - np.repeat(np.cumsum(size) - size, size)  # (sum n,)
            self._order[dst + within] = fresh[src + within]
        self._pointer = end % self._count
        return images
