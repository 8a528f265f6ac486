r"""CMC, mAP, mINP and MAP@R under the Market-1501 rule, vectorised in torch, chunked over queries.

For a query :math:`q` the **filtered ranked list** is the gallery sorted by distance, with
every gallery image of the query's identity seen by the query's camera removed, and every
junk image (pid ``-1``) removed; distractors (pid ``0``) stay, as negatives (the Market-1501
protocol, ``zheng2015market``; book page "Datasets"). With :math:`n_q` true matches left
and the :math:`i`-th of them at (1-based) rank :math:`r_{q,i}` of the filtered list,

.. math::
    \mathrm{CMC}(k) = \frac{1}{|\mathcal{Q}|}\sum_{q\in\mathcal{Q}}[\,r_{q,1}\le k\,], \qquad
    \mathrm{mAP} = \frac{1}{|\mathcal{Q}|}\sum_{q\in\mathcal{Q}}\mathrm{AP}_q, \qquad
    \mathrm{mINP} = \frac{1}{|\mathcal{Q}|}\sum_{q\in\mathcal{Q}}\frac{n_q}{r_{q,n_q}},

where :math:`\mathcal{Q}` is the set of queries with :math:`n_q \ge 1` (the others are
skipped, as torchreid and open-reid do, and counted). AP, INP, MAP@R and R-precision of one
query are defined in :mod:`reid_core.evaluation.per_query_metrics`; all of them are functions
of the ranks :math:`r_{q,i}`, so one pass gives them all.

**No sort.** The ranks are counts: :math:`r_{q,i} = i + \#\{\text{valid negatives ranked
before match } i\}`. :mod:`reid_core.evaluation.rank_counts` finds them with a fixed number
of passes over each row (an affine map onto a grid of cells, a table lookup, a histogram),
so the time depends on Q and G, not on how deep a weak model leaves its true matches.

**Ties** are ordered as a *stable sort by distance, then by gallery index* would order them:
gallery item :math:`j` ranks before :math:`k` iff :math:`d_j < d_k` or
(:math:`d_j = d_k` and :math:`j < k`).

Chapters: 01 (the protocol, CMC and mAP), book page "Evaluation at scale".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from reid_core.arrays import ArrayLike
from reid_core.evaluation.distance import Metric, available_memory_bytes, check_memory, make_distance_fn
from reid_core.evaluation.per_query_metrics import query_metrics
from reid_core.evaluation.rank_counts import GalleryGroups, GridWorkspace, grid_working_bytes, match_ranks

__all__ = [
    "RankResult",
    "evaluate_rank",
    "evaluate_rank_detailed",
    "evaluate_features",
    "DistanceSource",
]

DistanceSource = Union[np.ndarray, Tensor, Callable[[int, int], ArrayLike]]

# Working bytes per (query, gallery) element of one chunk: a float64 or contiguous copy of
# the block when the input needs one; the random keys and masks of single-gallery-shot
# sampling; a distance block computed by a callable (float32 block, e.g. one matrix-product
# result, with room for one temporary). The grid pass works on slices of the chunk: cache-sized
# on the CPU, the whole chunk on a GPU (see grid_working_bytes).
_COPY_BYTES = 8
_SAMPLING_BYTES = 48
_BLOCK_BYTES = 12
# CPU slices of about this many elements keep the grid pass's buffers in the cache: with
# slices of 4M elements the same passes ran about twice as slow.
_CPU_SLICE_ELEMENTS = 2**21
# A GPU slice is the whole chunk, below this bound (int32 cell indices).
_MAX_SLICE_ELEMENTS = 2**30
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
    r"""Everything :func:`evaluate_rank_detailed` measures.

    The per-query formulas are those of :mod:`reid_core.evaluation.per_query_metrics`; every
    mean below is over the valid queries (at least one true match in the filtered list).

    Attributes:
        cmc: (max_rank,) float64, ``cmc[k - 1]`` = CMC(k), the fraction of valid queries whose
            first true match is within the top k of the filtered list.
        mAP: mean of ``average_precision``, in [0, 1].
        average_precision: (Q,) float64 AP of every query,
            :math:`\frac{1}{n}\sum_i i / r_i`; NaN for a skipped query.
        first_match_rank: (Q,) float64 1-based rank of the first true match in the filtered
            list (the mean over repeats for single-gallery-shot); NaN for a skipped query.
        valid_query: (Q,) bool, True where the query has at least one true match.
        num_valid_queries: the number of valid queries (the denominator of every mean).
        mINP: mean of ``inverse_negative_penalty``, in (0, 1] (Ye et al., TPAMI 2021,
            ``ye2021deep``).
        inverse_negative_penalty: (Q,) float64 INP of every query, :math:`n / r_n`, the
            precision at the hardest (last) true match; NaN for a skipped query.
        map_at_r: mean over valid queries of MAP@R,
            :math:`\frac{1}{R}\sum_{i:\, r_i \le R} i / r_i` with :math:`R = n` the number of
            valid true matches (Musgrave et al., ECCV 2020, ``musgrave2020metric``).
        r_precision: mean over valid queries of R-precision, :math:`\#\{i : r_i \le R\} / R`
            (Musgrave et al., ECCV 2020).
        num_queries_without_match: queries skipped because no valid true match is left
            (Q - num_valid_queries).
    """

    cmc: np.ndarray
    mAP: float
    average_precision: np.ndarray
    first_match_rank: np.ndarray
    valid_query: np.ndarray
    num_valid_queries: int
    mINP: float
    inverse_negative_penalty: np.ndarray
    map_at_r: float
    r_precision: float
    num_queries_without_match: int


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
    single-gallery-shot option is described in :func:`evaluate_rank_detailed`, which also
    returns mINP, MAP@R, R-precision and the per-query figures from the same pass.

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
    """:func:`evaluate_rank` with every per-query figure and the other metrics of one pass.

    Besides CMC and mAP it gives mINP, MAP@R and R-precision, the per-query AP, INP and
    first-match rank, and the count of queries without a valid match (see
    :class:`RankResult`); all come from the same ranks of the true matches.

    **CUHK03 single-gallery-shot rule** (``cuhk03_single_gallery_shot=True``; Li et al.
    CVPR'14, ``li2014deepreid``, as in open-reid / torchreid): only gallery images from
    *another* camera than the query's count (junk ``-1`` dropped); in each of ``num_repeats``
    repeats one gallery image is drawn uniformly at random per gallery identity (every
    distinct pid, distractor pid 0 included, is one identity), and the query is ranked against
    that sampled gallery. CMC is averaged over queries and repeats. Every per-query metric of
    one repeat is that of the sampled list (one true match at rank r: AP = INP = 1 / r,
    MAP@R = R-precision = [r = 1]) and is averaged over repeats; the protocol itself usually
    reports no mAP. A query is valid when its identity has a cross-camera gallery image. The
    draw of repeat ``r`` uses the raw 64-bit stream of numpy's ``default_rng([seed, r])``, one
    value per (query, gallery) pair in row order, so the result depends on ``seed`` only,
    not on ``chunk_size`` or the device.

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
    slice_rows = _slice_rows(chunk, num_g, device)
    workspace = GridWorkspace(slice_rows * num_g, device)
    # (g_pid_code, num_ids): dense identity codes for the per-identity sampling.
    g_pid_code, num_ids = (None, 0)
    rngs: list[np.random.Generator] = []
    if cuhk03_single_gallery_shot:
        _, g_pid_code = torch.unique(g_pid_t, return_inverse=True)  # (G,)
        num_ids = int(g_pid_code.max()) + 1
        rngs = [np.random.default_rng([seed, r]) for r in range(repeats)]

    groups = GalleryGroups.build(g_pid_t, g_cam_t)
    sums = _MetricSums(num_q, max_rank, device)
    starts = range(0, num_q, chunk)
    show = progress if progress is not None else num_q * num_g * repeats >= _PROGRESS_MIN_ELEMENTS
    for start in tqdm(starts, desc="evaluate_rank", unit="chunk", disable=not show):
        end = min(start + chunk, num_q)
        dist = _checked_block(get_block(start, end), start, end, num_g, device)  # (B, G)
        cross_camera = None
        if cuhk03_single_gallery_shot:
            not_junk = (g_pid_t != -1).unsqueeze(0)  # (1, G)
            cross_camera = not_junk & (g_cam_t.unsqueeze(0) != q_cam_t[start:end].unsqueeze(1))  # (B, G)
        for repeat, rng in enumerate(rngs or [None]):
            keep = None  # Market-1501 rule: the filter is applied by match_ranks
            if rng is not None:
                assert cross_camera is not None and g_pid_code is not None  # set with the rngs
                # One raw 64-bit draw per (query, gallery) pair, in row order: chunking cannot
                # change which draw a pair gets. The top 30 bits are the key.
                raw = rng.bit_generator.random_raw((end - start, num_g)) >> np.uint64(34)  # (B, G)
                keys = torch.from_numpy(raw.astype(np.int64)).to(device)  # (B, G)
                keep = _sample_one_per_identity(keys, cross_camera, g_pid_code, num_ids)  # (B, G)
            for s in range(0, end - start, slice_rows):
                e = min(s + slice_rows, end - start)
                if repeat == 0:  # checked slice by slice, while the slice is in the cache for the pass
                    _check_no_nan(dist[s:e], start + s, start + e)
                ranks, n_pos = match_ranks(
                    dist[s:e],
                    q_pid_t[start + s : start + e],
                    q_cam_t[start + s : start + e],
                    groups,
                    None if keep is None else keep[s:e],
                    workspace,
                )  # (b, P), (b,)
                sums.add(start + s, ranks, n_pos)
    return sums.result(repeats)


class _MetricSums:
    """Running sums of the per-query metrics over chunks, slices and repeats.

    Args:
        num_q: number of queries.
        max_rank: length of the CMC curve.
        device: where the sums live.
    """

    def __init__(self, num_q: int, max_rank: int, device: torch.device) -> None:
        self.max_rank = max_rank
        self.first_rank_hist = torch.zeros(max_rank + 1, dtype=torch.float64, device=device)  # last bin: beyond
        self.ap, self.inp, self.map_at_r, self.r_precision, self.first_rank = (
            torch.zeros(num_q, dtype=torch.float64, device=device) for _ in range(5)
        )  # (Q,) each: sums over repeats
        self.valid_query = torch.zeros(num_q, dtype=torch.bool, device=device)

    def add(self, start: int, ranks: Tensor, n_pos: Tensor) -> None:
        """Add the metrics of queries ``start .. start + B - 1`` from (B, P) ranks and (B,) match counts."""
        m = query_metrics(ranks, n_pos)
        end = start + n_pos.shape[0]
        self.valid_query[start:end] |= m.has_match
        self.ap[start:end] += m.average_precision
        self.inp[start:end] += m.inverse_negative_penalty
        self.map_at_r[start:end] += m.map_at_r
        self.r_precision[start:end] += m.r_precision
        self.first_rank[start:end] += m.first_rank.double()
        bins = m.first_rank[m.has_match].clamp(max=self.max_rank + 1) - 1  # (B',) 0-based bins
        self.first_rank_hist += torch.bincount(bins, minlength=self.max_rank + 1).double()

    def result(self, repeats: int) -> RankResult:
        """The :class:`RankResult`: means over valid queries of the per-query means over repeats."""
        valid = self.valid_query
        num_valid = int(valid.sum())
        if num_valid == 0:
            raise ValueError(
                "no query has a valid match in the gallery (every true match is junk, or seen by the "
                "query's own camera): check q_pids/g_pids and q_camids/g_camids"
            )
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=valid.device)

        def per_query(total: Tensor) -> np.ndarray:
            return torch.where(valid, total / repeats, nan).cpu().numpy()  # (Q,)

        average_precision, inp = per_query(self.ap), per_query(self.inp)
        valid_np = valid.cpu().numpy()
        return RankResult(
            cmc=(self.first_rank_hist[: self.max_rank].cumsum(0) / (num_valid * repeats)).cpu().numpy(),
            mAP=float(average_precision[valid_np].mean()),
            average_precision=average_precision,
            first_match_rank=per_query(self.first_rank),
            valid_query=valid_np,
            num_valid_queries=num_valid,
            mINP=float(inp[valid_np].mean()),
            inverse_negative_penalty=inp,
            map_at_r=float(per_query(self.map_at_r)[valid_np].mean()),
            r_precision=float(per_query(self.r_precision)[valid_np].mean()),
            num_queries_without_match=int(valid_np.size - num_valid),
        )


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
    shapes = {
        name: tuple(np.shape(x))
        for name, x in (("q_pids", q_pids), ("g_pids", g_pids), ("q_camids", q_camids), ("g_camids", g_camids))
    }
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


def _distance_source(
    distmat: DistanceSource, num_q: int, num_g: int
) -> tuple[Callable[[int, int], Tensor], torch.device]:
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
    """Validate one (end - start, G) block's shape and dtype; bring it to float32 or float64."""
    if tuple(block.shape) != (end - start, num_g):
        raise ValueError(
            f"distance block for queries [{start}, {end}) must have shape {(end - start, num_g)}, got "
            f"{tuple(block.shape)}"
        )
    if block.dtype == torch.bool or block.is_complex():
        raise ValueError(f"distmat must be real-valued, got dtype {block.dtype}")
    if not block.is_floating_point():
        block = block.double()  # integer distances: exact in float64
    elif block.dtype in (torch.float16, torch.bfloat16):
        block = block.float()  # widening keeps the order exactly
    return block.to(device).contiguous()  # the grid pass works on flat rows


def _check_no_nan(block: Tensor, start: int, end: int) -> None:
    """Raise if the distances of query rows [start, end) hold a NaN (it has no rank)."""
    # One fast reduction finds NaN in the common case; inf - inf also gives NaN, so confirm.
    if bool(block.sum().isnan()) and bool(torch.isnan(block).any()):
        raise ValueError(f"distmat has NaN distances in query rows [{start}, {end})")


def _resolve_chunk_size(
    chunk_size: int | None, num_q: int, num_g: int, device: torch.device, from_callable: bool, sampling: bool
) -> int:
    """The queries per chunk: given (and checked against free memory) or picked automatically."""
    per_element = _COPY_BYTES + (_SAMPLING_BYTES if sampling else 0) + (_BLOCK_BYTES if from_callable else 0)
    if chunk_size is None:
        if device.type == "cuda":
            cap = _CUDA_CHUNK_BUDGET_BYTES
        else:
            cap = _COMPUTED_CHUNK_BUDGET_BYTES if from_callable else _CHUNK_BUDGET_BYTES
        budget = min(cap, available_memory_bytes(device) // 4)
        return _largest_chunk(budget, num_q, num_g, device, per_element)
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    chunk = int(min(chunk_size, num_q))
    fits = _largest_chunk(available_memory_bytes(device) // 2, num_q, num_g, device, per_element)
    check_memory(
        _working_bytes(chunk, num_g, device, per_element),
        device,
        what=f"evaluate_rank with chunk_size={chunk} over {num_g} gallery items",
        advice=f"pass chunk_size <= {fits} (or chunk_size=None to pick one)"
        + ("" if from_callable else ", or evaluate_features(qf, gf, ...) to avoid the full matrix"),
    )
    return chunk


def _slice_rows(chunk: int, num_g: int, device: torch.device) -> int:
    """Rows of the chunk that one grid pass works on: cache-sized on the CPU, all on a GPU."""
    elements = _MAX_SLICE_ELEMENTS if device.type == "cuda" else _CPU_SLICE_ELEMENTS
    return max(1, min(chunk, elements // num_g))


def _working_bytes(chunk: int, num_g: int, device: torch.device, per_element: int) -> int:
    """Peak working bytes of one chunk: its (chunk, G) arrays and the grid pass of one slice."""
    return chunk * num_g * per_element + grid_working_bytes(_slice_rows(chunk, num_g, device) * num_g)


def _largest_chunk(budget: int, num_q: int, num_g: int, device: torch.device, per_element: int) -> int:
    """The most queries (at most ``num_q``) whose :func:`_working_bytes` fit in ``budget``; at least 1."""
    lo, hi = 1, num_q
    while lo < hi:  # the working bytes grow with the chunk: binary search
        mid = (lo + hi + 1) // 2
        if _working_bytes(mid, num_g, device, per_element) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo
