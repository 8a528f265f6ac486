r"""CMC and mAP under the Market-1501 rule, vectorised in torch, chunked over queries.

For a query :math:`q` the **filtered ranked list** is the gallery sorted by distance, with
every gallery image of the query's identity seen by the query's camera removed, and every
junk image (pid ``-1``) removed; distractors (pid ``0``) stay, as negatives (Zheng et al. 2015; the book page ``book/datasets.md``).
With :math:`n_q` true matches left and the :math:`i`-th of them at (1-based) rank
:math:`r_{q,i}` of the filtered list,

.. math::
    \mathrm{AP}_q = \frac{1}{n_q}\sum_{i=1}^{n_q}\frac{i}{r_{q,i}}, \qquad
    \mathrm{CMC}(k) = \frac{1}{|\mathcal{Q}|}\sum_{q\in\mathcal{Q}}[\,r_{q,1}\le k\,],
    \qquad \mathrm{mAP} = \frac{1}{|\mathcal{Q}|}\sum_{q\in\mathcal{Q}}\mathrm{AP}_q,

where :math:`\mathcal{Q}` is the set of queries with :math:`n_q \ge 1` (the others are
skipped, as torchreid and open-reid do). AP is the mean of the precision at each true match
(torchreid, scikit-learn >= 0.19), not the MATLAB code's trapezoid rule.

**No full sort.** :math:`r_{q,i} = i + \#\{\text{valid negatives ranked before match } i\}`,
and a negative ranked after the last match changes nothing. So per row only the few true
matches are sorted (they are read from the gallery grouped by identity, not searched for);
one comparison with the last match's distance and a ``nonzero`` list the negatives that can
matter (typically a few percent of the gallery); a binary search (``torch.searchsorted``)
places each of them between the sorted matches, and a per-row histogram's cumulative sum
gives the negatives before every match. The whole (Q, G) block is touched by three cheap
passes (a NaN check, the comparison, ``nonzero``) instead of an :math:`O(G \log G)` sort of
every row.

**Ties** are ordered as a *stable sort by distance, then by gallery index* would order them:
gallery item :math:`j` ranks before :math:`k` iff :math:`d_j < d_k` or
(:math:`d_j = d_k` and :math:`j < k`).

Chapters: 01 (the protocol, CMC and mAP), book page "Evaluation at scale".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from reid_core.arrays import ArrayLike
from reid_core.evaluation.distance import Metric, available_memory_bytes, check_memory, make_distance_fn

__all__ = [
    "RankResult",
    "evaluate_rank",
    "evaluate_rank_detailed",
    "evaluate_features",
    "DistanceSource",
]

DistanceSource = Union[np.ndarray, Tensor, Callable[[int, int], ArrayLike]]

# Working bytes per (query, gallery) element of one chunk: the "closer than the last match"
# mask and, at worst, an int64 index per element from its nonzero (Market-1501 rule); the
# random keys and masks of single-gallery-shot sampling; a distance block computed by a
# callable (float32 block, e.g. one matrix-product result, with room for one temporary).
_MASK_BYTES = 10
_SAMPLING_BYTES = 48
_BLOCK_BYTES = 12
# The short list of close items is processed in slices of at most this many items, each
# needing about _REDUCED_BYTES per item (indices, keys, buckets).
_REDUCED_CAP = 1_000_000
_REDUCED_BYTES = 96
# Default working-set budget of one chunk, capped by a quarter of the memory available. A GPU
# gets more: its kernels need large blocks to be efficient, and its memory is not shared
# with the rest of the program's data.
# Distances computed per chunk (evaluate_features) want more queries per chunk: a matrix
# product of 100 rows runs at about half the speed of one of 500 rows.
_CHUNK_BUDGET_BYTES = 256 * 2**20
_COMPUTED_CHUNK_BUDGET_BYTES = 1 * 2**30
_CUDA_CHUNK_BUDGET_BYTES = 2 * 2**30
# Show a progress bar only for evaluations big enough to take seconds.
_PROGRESS_MIN_ELEMENTS = 200_000_000


@dataclass(frozen=True)
class RankResult:
    """Everything :func:`evaluate_rank_detailed` measures.

    Attributes:
        cmc: (max_rank,) float64, ``cmc[k - 1]`` = CMC(k), the fraction of valid queries whose
            first true match is within the top k of the filtered list.
        mAP: mean of ``average_precision`` over the valid queries, in [0, 1].
        average_precision: (Q,) float64 AP of every query; NaN for a skipped query.
        first_match_rank: (Q,) float64 1-based rank of the first true match in the filtered
            list (the mean over repeats for single-gallery-shot); NaN for a skipped query.
        valid_query: (Q,) bool, True where the query has at least one true match.
        num_valid_queries: the number of valid queries (the denominator of CMC and mAP).
    """

    cmc: np.ndarray
    mAP: float
    average_precision: np.ndarray
    first_match_rank: np.ndarray
    valid_query: np.ndarray
    num_valid_queries: int


def evaluate_rank(
    distmat: DistanceSource,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    *,
    cuhk03_single_gallery_shot: bool = False,
    num_repeats: int = 10,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, float]:
    """CMC curve and mAP of a query-by-gallery distance matrix (Market-1501 rule).

    See the module docstring for the equations, the filtering and the tie rule; the
    single-gallery-shot option is described in :func:`evaluate_rank_detailed`.

    Args:
        distmat: (Q, G) distances as a numpy array or a torch tensor (CPU or CUDA; the work
            runs on its device), or a callable ``dist_fn(start, end) -> (end - start, G)``
            block, so that the full matrix never exists (peak memory bounded by one chunk).
        q_pids: (Q,) integer identity of each query.
        g_pids: (G,) integer identity of each gallery image (0 = distractor, -1 = junk).
        q_camids: (Q,) integer camera of each query.
        g_camids: (G,) integer camera of each gallery image.
        max_rank: length of the returned CMC curve (may exceed G: the curve then stays flat).
        cuhk03_single_gallery_shot: use the classic CUHK03 rule instead (see
            :func:`evaluate_rank_detailed`).
        num_repeats: random repeats for the single-gallery-shot rule.
        seed: seed of the single-gallery-shot sampling.
        chunk_size: queries per chunk; ``None`` picks one from a working budget of 256 MiB
            on the CPU (1 GiB when the blocks are computed by a callable), 2 GiB on a GPU (at
            most a quarter of the free memory).
        progress: show a tqdm bar; ``None`` shows it only for large evaluations.

    Returns:
        ``(cmc, mAP)``: (max_rank,) float64 numpy CMC and the mAP as a float in [0, 1].

    Raises:
        ValueError: on mismatched shapes, non-integer ids, NaN distances, or when no query
            has a valid match.
        MemoryError: when ``chunk_size`` queries' working set will not fit in memory.

    Example:
        >>> cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
        >>> print(f"rank-1 {cmc[0]:.1%}  mAP {mAP:.1%}")
    """
    result = evaluate_rank_detailed(
        distmat,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        max_rank,
        cuhk03_single_gallery_shot=cuhk03_single_gallery_shot,
        num_repeats=num_repeats,
        seed=seed,
        chunk_size=chunk_size,
        progress=progress,
    )
    return result.cmc, result.mAP


def evaluate_features(
    qf: ArrayLike,
    gf: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    metric: Metric = "euclidean",
    max_rank: int = 50,
    *,
    chunk_size: int | None = None,
    cuhk03_single_gallery_shot: bool = False,
    num_repeats: int = 10,
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[np.ndarray, float]:
    """:func:`evaluate_rank` straight from features, never holding the (Q, G) matrix.

    Distances are computed one chunk of queries at a time
    (:func:`~reid_core.evaluation.distance.make_distance_fn`) and ranked at once, so peak
    memory is the features plus one ``chunk_size x G`` block and its working set. This is the
    API for MSMT17-sized test sets (11,659 x 82,161).

    Args:
        qf: (Q, D) query features (the work runs on their device).
        gf: (G, D) gallery features.
        q_pids, g_pids, q_camids, g_camids: as in :func:`evaluate_rank`.
        metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
        max_rank, chunk_size, cuhk03_single_gallery_shot, num_repeats, seed, progress: as in
            :func:`evaluate_rank`.

    Returns:
        ``(cmc, mAP)`` as :func:`evaluate_rank`.
    """
    qf_t = torch.as_tensor(qf)
    gf_t = torch.as_tensor(gf)
    if not (qf_t.is_floating_point() and gf_t.is_floating_point()):
        raise ValueError(f"qf and gf must be floating-point features, got {qf_t.dtype} and {gf_t.dtype}")
    return evaluate_rank(
        make_distance_fn(qf_t, gf_t, metric),
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        max_rank,
        cuhk03_single_gallery_shot=cuhk03_single_gallery_shot,
        num_repeats=num_repeats,
        seed=seed,
        chunk_size=chunk_size,
        progress=progress,
    )


def evaluate_rank_detailed(
    distmat: DistanceSource,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    *,
    cuhk03_single_gallery_shot: bool = False,
    num_repeats: int = 10,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> RankResult:
    """:func:`evaluate_rank` with the per-query figures (AP, first-match rank, validity).

    **CUHK03 single-gallery-shot rule** (``cuhk03_single_gallery_shot=True``; Li et al.
    CVPR'14, as in open-reid / torchreid, Zhong et al. 2017): only gallery images from *another*
    camera than the query's count (junk ``-1`` dropped); in each of ``num_repeats`` repeats one
    gallery image is drawn uniformly at random per gallery identity (every distinct pid,
    distractor pid 0 included, is one identity), and the query is ranked against that sampled
    gallery. CMC is averaged over queries and repeats. The AP of one repeat is that of the
    sampled list (one true match, so AP = 1 / its rank) and is averaged over repeats; the
    protocol itself usually reports no mAP. A query is valid when its identity has a
    cross-camera gallery image. The draw of repeat ``r`` uses the raw 64-bit stream of numpy's
    ``default_rng([seed, r])``, one value per (query, gallery) pair in row order, so the
    result depends on ``seed`` only, not on ``chunk_size`` or the device.

    Args:
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank: as in :func:`evaluate_rank`.
        cuhk03_single_gallery_shot: use the rule above instead of the Market-1501 rule.
        num_repeats: repeats of the single-gallery-shot sampling (>= 1).
        seed: seed of the sampling.
        chunk_size: queries per chunk (``None``: automatic).
        progress: show a tqdm bar (``None``: only for large evaluations).

    Returns:
        A :class:`RankResult`.
    """
    if not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be an integer >= 1, got {max_rank!r}")
    if cuhk03_single_gallery_shot and num_repeats < 1:
        raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
    num_q, num_g = _check_lengths(q_pids, g_pids, q_camids, g_camids)
    get_block, device = _distance_source(distmat, num_q, num_g)

    q_pid_t = _as_id_tensor(q_pids, "q_pids", device)  # (Q,)
    g_pid_t = _as_id_tensor(g_pids, "g_pids", device)  # (G,)
    q_cam_t = _as_id_tensor(q_camids, "q_camids", device)  # (Q,)
    g_cam_t = _as_id_tensor(g_camids, "g_camids", device)  # (G,)

    repeats = num_repeats if cuhk03_single_gallery_shot else 1
    chunk = _resolve_chunk_size(chunk_size, num_q, num_g, device, callable(distmat), cuhk03_single_gallery_shot)
    # (g_pid_code, num_ids): dense identity codes for the per-identity sampling.
    g_pid_code, num_ids = (None, 0)
    rngs: list[np.random.Generator] = []
    if cuhk03_single_gallery_shot:
        _, g_pid_code = torch.unique(g_pid_t, return_inverse=True)  # (G,)
        num_ids = int(g_pid_code.max()) + 1
        rngs = [np.random.default_rng([seed, r]) for r in range(repeats)]

    groups = _GalleryGroups.build(g_pid_t, g_cam_t)
    first_rank_hist = torch.zeros(max_rank + 1, dtype=torch.float64, device=device)  # last bin: beyond
    ap_sum = torch.zeros(num_q, dtype=torch.float64, device=device)
    rank_sum = torch.zeros(num_q, dtype=torch.float64, device=device)
    valid_query = torch.zeros(num_q, dtype=torch.bool, device=device)

    starts = range(0, num_q, chunk)
    show = progress if progress is not None else num_q * num_g * repeats >= _PROGRESS_MIN_ELEMENTS
    for start in tqdm(starts, desc="evaluate_rank", unit="chunk", disable=not show):
        end = min(start + chunk, num_q)
        dist = _checked_block(get_block(start, end), start, end, num_g, device)  # (B, G)
        q_pid, q_cam = q_pid_t[start:end], q_cam_t[start:end]  # (B,)
        cross_camera = None
        if cuhk03_single_gallery_shot:
            not_junk = (g_pid_t != -1).unsqueeze(0)  # (1, G)
            cross_camera = not_junk & (g_cam_t.unsqueeze(0) != q_cam.unsqueeze(1))  # (B, G)
        for rng in rngs or [None]:
            keep = None  # Market-1501 rule: the filter is applied inside _rank_block
            if rng is not None:
                assert cross_camera is not None and g_pid_code is not None  # set with the rngs
                # One raw 64-bit draw per (query, gallery) pair, in row order: chunking cannot
                # change which draw a pair gets. The top 30 bits are the key.
                raw = rng.bit_generator.random_raw((end - start, num_g)) >> np.uint64(34)  # (B, G)
                keys = torch.from_numpy(raw.astype(np.int64)).to(device)  # (B, G)
                keep = _sample_one_per_identity(keys, cross_camera, g_pid_code, num_ids)  # (B, G)
            first_rank, ap, has_match = _rank_block(dist, q_pid, q_cam, groups, keep)  # (B,) x 3
            valid_query[start:end] |= has_match
            ap_sum[start:end] += ap
            rank_sum[start:end] += first_rank.double()
            ranks_in = first_rank[has_match].clamp(max=max_rank + 1) - 1  # (B',) 0-based bins
            first_rank_hist += torch.bincount(ranks_in, minlength=max_rank + 1).double()

    num_valid = int(valid_query.sum())
    if num_valid == 0:
        raise ValueError(
            "no query has a valid match in the gallery (every true match is junk, or seen by the "
            "query's own camera): check q_pids/g_pids and q_camids/g_camids"
        )
    cmc = (first_rank_hist[:max_rank].cumsum(0) / (num_valid * repeats)).cpu().numpy()  # (max_rank,)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=device)
    average_precision = torch.where(valid_query, ap_sum / repeats, nan).cpu().numpy()  # (Q,)
    first_match_rank = torch.where(valid_query, rank_sum / repeats, nan).cpu().numpy()  # (Q,)
    valid_np = valid_query.cpu().numpy()
    return RankResult(
        cmc=cmc,
        mAP=float(average_precision[valid_np].mean()),
        average_precision=average_precision,
        first_match_rank=first_match_rank,
        valid_query=valid_np,
        num_valid_queries=num_valid,
    )


@dataclass(frozen=True)
class _GalleryGroups:
    """The gallery sorted by identity, so a query's same-id images are one slice.

    Attributes:
        order: (G,) gallery indices sorted by pid (stable: ascending index within a pid).
        sorted_pid: (G,) ``g_pid[order]``.
        g_pid: (G,) gallery pids.
        g_cam: (G,) gallery cameras.
    """

    order: Tensor
    sorted_pid: Tensor
    g_pid: Tensor
    g_cam: Tensor

    @staticmethod
    def build(g_pid: Tensor, g_cam: Tensor) -> "_GalleryGroups":
        sorted_pid, order = torch.sort(g_pid, stable=True)  # (G,), (G,)
        return _GalleryGroups(order=order, sorted_pid=sorted_pid, g_pid=g_pid, g_cam=g_cam)


def _rank_block(
    dist: Tensor, q_pid: Tensor, q_cam: Tensor, groups: _GalleryGroups, keep: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """First-match rank and AP of each row, without sorting the negatives.

    Only three passes touch the whole (B, G) block: a NaN check, the comparison with each
    row's farthest true match and the ``nonzero`` that lists what is closer. Negatives beyond
    the farthest match cannot change any rank, so the rest works on that short list.

    Args:
        dist: (B, G) distances.
        q_pid: (B,) query pids.
        q_cam: (B,) query cameras.
        groups: the gallery grouped by pid.
        keep: (B, G) bool gallery items each row may use (single-gallery-shot), or ``None``
            for the Market-1501 rule (drop junk and same-id same-camera images).

    Returns:
        ``(first_rank, ap, has_match)``: (B,) int64 1-based rank of the first match in the
        filtered list (0 where none), (B,) float64 AP (0 where none), (B,) bool.
    """
    num_b, num_g = dist.shape
    device = dist.device
    pos_dist, pos_index, n_pos = _sorted_matches(dist, q_pid, q_cam, groups, keep)  # (B, P) x 2, (B,)
    has_match = n_pos > 0  # (B,)
    max_pos = pos_dist.shape[1]
    if max_pos == 0 or not bool(has_match.any()):
        zeros = torch.zeros(num_b, dtype=torch.int64, device=device)
        return zeros, zeros.double(), has_match

    # Every gallery item no farther than the row's last match: the only negatives that count.
    last = pos_dist.gather(1, (n_pos - 1).clamp(min=0).unsqueeze(1))  # (B, 1)
    last = torch.where(has_match.unsqueeze(1), last, float("-inf"))  # (B, 1)
    closer = dist <= last  # (B, G)
    if keep is not None:
        closer &= keep  # sampled gallery: only the drawn items can be negatives
    close_items = closer.view(-1).nonzero().squeeze(1)  # (N,) flat indices, row-major
    del closer
    pos_keys = _row_distance_keys(pos_dist, torch.arange(num_b, device=device).unsqueeze(1))  # (B, P)
    hist = torch.zeros(num_b * (max_pos + 1), dtype=torch.int64, device=device)  # (B*(P+1),)
    # The short list is processed in slices so that its working set stays bounded even when a
    # poor model leaves most of the gallery before the last match.
    for s in range(0, close_items.numel(), _REDUCED_CAP):
        hist += _negative_buckets_histogram(
            dist, close_items[s : s + _REDUCED_CAP], q_pid, groups.g_pid, pos_dist, pos_index, pos_keys
        )
    neg_before = hist.view(num_b, max_pos + 1)[:, :max_pos].cumsum(1)  # (B, P): negatives before match i

    i = torch.arange(1, max_pos + 1, device=device, dtype=torch.float64)  # (P,)
    rank = i + neg_before.double()  # (B, P): 1-based rank of match i in the filtered list
    is_real = i.unsqueeze(0) <= n_pos.unsqueeze(1)  # (B, P): not padding
    precision = torch.where(is_real, i / rank, 0.0)  # (B, P)
    ap = precision.sum(1) / n_pos.clamp(min=1)  # (B,)
    first_rank = torch.where(has_match, neg_before[:, 0] + 1, 0)  # (B,)
    return first_rank, ap, has_match


def _negative_buckets_histogram(
    dist: Tensor,
    flat: Tensor,
    q_pid: Tensor,
    g_pid: Tensor,
    pos_dist: Tensor,
    pos_index: Tensor,
    pos_keys: Tensor,
) -> Tensor:
    """Histogram of how many matches precede each valid negative among the given items.

    Args:
        dist: (B, G) distances.
        flat: (N,) flat indices into ``dist`` of the items no farther than their row's last
            match (and allowed to the row, under single-gallery-shot).
        q_pid: (B,) query pids.
        g_pid: (G,) gallery pids.
        pos_dist: (B, P) sorted match distances (padded with +inf).
        pos_index: (B, P) their gallery indices (padded with G).
        pos_keys: (B, P) their (row, distance) keys, see :func:`_row_distance_keys`.

    Returns:
        (B * (P + 1),) int64 counts: entry ``b * (P + 1) + j`` is the number of valid
        negatives of row b preceded by exactly j matches.
    """
    num_b, num_g = dist.shape
    max_pos = pos_dist.shape[1]
    rows = flat // num_g  # (N,)
    cols = flat - rows * num_g  # (N,)
    pid = g_pid.index_select(0, cols)  # (N,)
    negative = (pid != q_pid.index_select(0, rows)) & (pid != -1)  # (N,): other ids, not junk
    # Matches and junk stay in the list (no compaction pass) and are binned apart at the end.
    item_dist = dist.view(-1).index_select(0, flat)  # (N,) in the order of flat

    # Matches strictly before each negative, by one binary search in the flattened (B, P)
    # keys, which are sorted because they order (row, distance).
    flat_keys = pos_keys.view(-1)  # (B*P,)
    item_keys = _row_distance_keys(item_dist, rows)  # (N,)
    before = torch.searchsorted(flat_keys, item_keys)  # (N,)
    tied = flat_keys[before.clamp(max=flat_keys.numel() - 1)] == item_keys  # (N,)
    tied &= negative
    bucket = before - rows * max_pos  # (N,) matches before it, within its row
    if bool(tied.any()):
        # Same key: order exactly by (distance, gallery index), in the input's precision.
        t = tied.nonzero().squeeze(1)  # (T,)
        bucket[t] += _count_tied_matches(item_dist[t], cols[t], rows[t], pos_dist, pos_index, pos_keys, item_keys[t])
    dump = num_b * (max_pos + 1)  # one extra bin for the items that are not negatives
    slot = torch.where(negative, rows * (max_pos + 1) + bucket, dump)  # (N,)
    return torch.bincount(slot, minlength=dump + 1)[:dump]  # (B*(P+1),)


def _sorted_matches(
    dist: Tensor, q_pid: Tensor, q_cam: Tensor, groups: _GalleryGroups, keep: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The valid true matches of each row, sorted by (distance, gallery index), padded.

    Args:
        dist: (B, G) distances.
        q_pid: (B,) query pids.
        q_cam: (B,) query cameras.
        groups: the gallery grouped by pid.
        keep: (B, G) allowed items, or ``None`` for the Market-1501 rule.

    Returns:
        ``(pos_dist, pos_index, n_pos)``: (B, P) distances padded with ``+inf``, (B, P) gallery
        indices padded with G, (B,) the number of matches per row.
    """
    num_b, num_g = dist.shape
    lo = torch.searchsorted(groups.sorted_pid, q_pid)  # (B,)
    hi = torch.searchsorted(groups.sorted_pid, q_pid, right=True)  # (B,)
    width = int((hi - lo).max())
    slot = torch.arange(width, device=dist.device)  # (S,)
    in_group = slot.unsqueeze(0) < (hi - lo).unsqueeze(1)  # (B, S)
    cand = groups.order[(lo.unsqueeze(1) + slot).clamp(max=num_g - 1)]  # (B, S) same-pid gallery items
    if keep is None:
        ok = (groups.g_pid[cand] != -1) & (groups.g_cam[cand] != q_cam.unsqueeze(1))  # (B, S)
    else:
        ok = keep.gather(1, cand)  # (B, S)
    is_pos = in_group & ok  # (B, S)
    pos_dist = torch.where(is_pos, dist.gather(1, cand), float("inf"))  # (B, S)
    pos_index = torch.where(is_pos, cand, num_g)  # (B, S)
    # Padding (index G) goes after real matches at +inf: order by index, then stably by distance.
    pos_index, order = torch.sort(pos_index, dim=1)  # (B, S)
    pos_dist = pos_dist.gather(1, order)  # (B, S)
    pos_dist, order = torch.sort(pos_dist, dim=1, stable=True)  # (B, S)
    pos_index = pos_index.gather(1, order)  # (B, S)
    return pos_dist, pos_index, is_pos.sum(1)


def _row_distance_keys(d: Tensor, rows: Tensor) -> Tensor:
    """int64 keys ordered like (row, float32(distance)).

    Non-negative float32 bit patterns are ordered like their values and negative ones in
    reverse, so flipping gives an order-preserving unsigned image of the float. Rounding a
    float64 distance to float32 never reverses an order, only merges values, so equal keys
    are settled exactly by :func:`_count_tied_matches`.

    Args:
        d: distances (any float dtype, no NaN).
        rows: row ids, broadcastable to ``d``.

    Returns:
        int64 keys of ``d``'s shape.
    """
    d32 = d.float() + 0.0  # -0.0 + 0.0 = +0.0: one key for zero
    bits = d32.view(torch.int32).long()  # signed bit pattern
    unsigned = torch.where(bits >= 0, bits + 2**31, -1 - bits)  # in [0, 2^32), same order as d32
    return rows * 2**32 + unsigned


def _count_tied_matches(
    d: Tensor, col: Tensor, row: Tensor, pos_dist: Tensor, pos_index: Tensor, pos_keys: Tensor, keys: Tensor
) -> Tensor:
    """For negatives whose key equals a match's key, count those matches ranked before them.

    A match is before the negative iff its distance is smaller, or equal with a lower gallery
    index (the tie rule).

    Args:
        d: (T,) distances of the tied negatives.
        col: (T,) their gallery indices.
        row: (T,) their rows.
        pos_dist: (B, P) sorted match distances.
        pos_index: (B, P) their gallery indices.
        pos_keys: (B, P) their keys.
        keys: (T,) keys of the tied negatives.

    Returns:
        (T,) int64 counts.
    """
    out = torch.empty_like(col)
    step = max(1, 4_000_000 // pos_dist.shape[1])  # bound the (t, P) comparison
    for s in range(0, col.numel(), step):
        r, c, dd, k = row[s : s + step], col[s : s + step], d[s : s + step], keys[s : s + step]  # (t,)
        same_key = pos_keys[r] == k.unsqueeze(1)  # (t, P)
        pd = pos_dist[r]  # (t, P)
        earlier = (pd < dd.unsqueeze(1)) | ((pd == dd.unsqueeze(1)) & (pos_index[r] < c.unsqueeze(1)))  # (t, P)
        out[s : s + step] = (same_key & earlier).sum(1)
    return out


def _sample_one_per_identity(keys: Tensor, candidate: Tensor, g_pid_code: Tensor, num_ids: int) -> Tensor:
    """Keep, per row and gallery identity, the candidate with the smallest random key.

    Args:
        keys: (B, G) int64 uniform random keys in [0, 2^30).
        candidate: (B, G) bool, the items a row may draw from.
        g_pid_code: (G,) int64 identity code in [0, num_ids).
        num_ids: number of identity codes.

    Returns:
        (B, G) bool, exactly one True per (row, identity) that has a candidate.
    """
    num_b, num_g = keys.shape
    # Integer keys with the column in the low bits are unique, so exactly one item wins.
    int_keys = keys * 2**33 + torch.arange(num_g, device=keys.device)  # (B, G)
    int_keys = int_keys.masked_fill(~candidate, torch.iinfo(torch.int64).max)  # (B, G)
    code = g_pid_code.unsqueeze(0).expand(num_b, num_g)  # (B, G)
    best = torch.full((num_b, num_ids), torch.iinfo(torch.int64).max, dtype=torch.int64, device=keys.device)
    best.scatter_reduce_(1, code, int_keys, reduce="amin")  # (B, num_ids)
    return candidate & (int_keys == best.gather(1, code))  # (B, G)


def _check_lengths(q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike, g_camids: ArrayLike) -> tuple[int, int]:
    """Q and G from the id arrays, which must be 1-D and agree in length."""
    shapes = {name: tuple(np.shape(x)) for name, x in
              (("q_pids", q_pids), ("g_pids", g_pids), ("q_camids", q_camids), ("g_camids", g_camids))}
    for name, shape in shapes.items():
        if len(shape) != 1:
            raise ValueError(f"{name} must be 1-D, got shape {shape}")
    if shapes["q_pids"] != shapes["q_camids"]:
        raise ValueError(f"q_pids {shapes['q_pids']} and q_camids {shapes['q_camids']} differ in length")
    if shapes["g_pids"] != shapes["g_camids"]:
        raise ValueError(f"g_pids {shapes['g_pids']} and g_camids {shapes['g_camids']} differ in length")
    num_q, num_g = shapes["q_pids"][0], shapes["g_pids"][0]
    if num_q == 0 or num_g == 0:
        raise ValueError(f"need at least one query and one gallery item, got Q={num_q}, G={num_g}")
    return num_q, num_g


def _as_id_tensor(x: ArrayLike, name: str, device: torch.device) -> Tensor:
    """An integer id array as an int64 tensor on ``device``; anything else is a ValueError naming ``name``."""
    if not isinstance(x, Tensor):
        array = np.asarray(x)
        if array.dtype.kind not in "iu":  # strings, objects, floats, booleans
            raise ValueError(f"{name} must hold integers, got numpy dtype {array.dtype} (e.g. {array.flat[0]!r})")
        x = array
    t = torch.as_tensor(x)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
    return t.to(device=device, dtype=torch.int64)


def _distance_source(distmat: DistanceSource, num_q: int, num_g: int) -> tuple[Callable[[int, int], Tensor], torch.device]:
    """A block getter over the distances, and the device the work runs on."""
    if callable(distmat):
        probe = torch.as_tensor(distmat(0, 1))  # one row, to learn the device
        fn = distmat
        return (lambda s, e: torch.as_tensor(fn(s, e))), probe.device
    if isinstance(distmat, np.ndarray) and any(st < 0 for st in distmat.strides):
        distmat = np.ascontiguousarray(distmat)  # torch cannot view negative strides
    full = torch.as_tensor(distmat)
    if full.dim() != 2 or tuple(full.shape) != (num_q, num_g):
        raise ValueError(
            f"distmat must have shape (len(q_pids), len(g_pids)) = {(num_q, num_g)}, got {tuple(full.shape)}"
        )
    return (lambda s, e: full[s:e]), full.device


def _checked_block(block: Tensor, start: int, end: int, num_g: int, device: torch.device) -> Tensor:
    """Validate one (end - start, G) block and bring it to a float dtype searchsorted takes."""
    if tuple(block.shape) != (end - start, num_g):
        raise ValueError(f"distance block for queries [{start}, {end}) must have shape {(end - start, num_g)}, got {tuple(block.shape)}")
    if block.dtype == torch.bool or block.is_complex():
        raise ValueError(f"distmat must be real-valued, got dtype {block.dtype}")
    if not block.is_floating_point():
        block = block.double()  # integer distances: exact in float64
    elif block.dtype in (torch.float16, torch.bfloat16):
        block = block.float()  # widening keeps the order exactly
    block = block.to(device).contiguous()  # searchsorted needs contiguous rows
    # One fast reduction finds NaN in the common case; inf - inf also gives NaN, so confirm.
    if bool(block.sum().isnan()) and bool(torch.isnan(block).any()):
        raise ValueError(f"distmat has NaN distances in query rows [{start}, {end})")
    return block


def _resolve_chunk_size(
    chunk_size: int | None, num_q: int, num_g: int, device: torch.device, from_callable: bool, sampling: bool
) -> int:
    """The queries per chunk: given (and checked against free memory) or picked automatically."""
    per_element = _MASK_BYTES + (_SAMPLING_BYTES if sampling else 0) + (_BLOCK_BYTES if from_callable else 0)
    if chunk_size is None:
        if device.type == "cuda":
            cap = _CUDA_CHUNK_BUDGET_BYTES
        else:
            cap = _COMPUTED_CHUNK_BUDGET_BYTES if from_callable else _CHUNK_BUDGET_BYTES
        budget = min(cap, available_memory_bytes(device) // 4)
        return min(num_q, _largest_chunk(budget, num_g, per_element))
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    chunk = int(min(chunk_size, num_q))
    fits = _largest_chunk(available_memory_bytes(device) // 2, num_g, per_element)
    check_memory(
        _working_bytes(chunk, num_g, per_element),
        device,
        what=f"evaluate_rank with chunk_size={chunk} over {num_g} gallery items",
        advice=f"pass chunk_size <= {fits} (or chunk_size=None to pick one)"
        + ("" if from_callable else ", or evaluate_features(qf, gf, ...) to avoid the full matrix"),
    )
    return chunk


def _working_bytes(chunk: int, num_g: int, per_element: int) -> int:
    """Peak working bytes of one chunk: its (chunk, G) masks and one slice of the short list."""
    return chunk * num_g * per_element + min(_REDUCED_CAP, chunk * num_g) * _REDUCED_BYTES


def _largest_chunk(budget: int, num_g: int, per_element: int) -> int:
    """The most queries per chunk whose :func:`_working_bytes` fit in ``budget`` (at least 1)."""
    uncapped = min(budget // (num_g * (per_element + _REDUCED_BYTES)), _REDUCED_CAP // num_g)
    capped = max(0, budget - _REDUCED_CAP * _REDUCED_BYTES) // (num_g * per_element)
    return int(max(1, uncapped, capped if capped * num_g >= _REDUCED_CAP else 0))
