r"""Nearest-neighbour retrieval for galleries too large for an exact all-pairs matrix (faiss).

Market-1501+500k puts 3,368 queries against ~500,000 gallery images: the full float32
distance matrix is 6.7 GB and ranking it row by row is wasted work, since a re-ID user
looks at the top of each list. This module keeps only the top ``k`` per query, found by
faiss (Johnson, Douze, Jégou, "Billion-scale similarity search with GPUs", 2019):

- ``"flat"``: exact brute-force search (``IndexFlatL2`` / ``IndexFlatIP``);
- ``"ivf"``: an inverted file (``IndexIVFFlat``): k-means cells, search visits ``nprobe`` of
  ``nlist`` cells;
- ``"hnsw"``: a hierarchical navigable small-world graph (``IndexHNSWFlat``; Malkov &
  Yashunin, TPAMI 2018).

Distances come back as the metric's true values, ascending: faiss's L2 indexes return
*squared* euclidean distances, which are square-rooted here; ``"cosine"`` searches the inner
product of L2-normalised features and returns :math:`1 - \cos`.

:func:`evaluate_topk` then scores the top-k lists with the Market-1501 rule (see
:mod:`reid_core.evaluation.rank`); :func:`recall_at_k` measures an approximate index
against the exact one.

Chapters: 01 ("Evaluation at scale" page).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from reid_core.arrays import ArrayLike
from reid_core.evaluation.distance import check_memory

__all__ = ["GalleryIndex", "build_index", "search", "recall_at_k", "evaluate_topk", "INDEX_KINDS"]

IndexKind = Literal["flat", "ivf", "hnsw"]
RetrievalMetric = Literal["euclidean", "cosine"]
INDEX_KINDS = ("flat", "ivf", "hnsw")
_METRICS = ("euclidean", "cosine")
_PROGRESS_MIN_ROWS = 50_000  # show a bar when adding or searching at least this many rows


@dataclass
class GalleryIndex:
    """A faiss index over gallery features and how to read its answers.

    Attributes:
        index: the ``faiss.Index``.
        kind: ``"flat"``, ``"ivf"`` or ``"hnsw"``.
        metric: ``"euclidean"`` or ``"cosine"``.
        dim: feature dimension D.
        size: number of gallery items G.
    """

    index: Any
    kind: IndexKind
    metric: RetrievalMetric
    dim: int
    size: int


def _import_faiss() -> Any:
    """faiss, imported on first use so that the rest of reid_core does not need it."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "reid_core.evaluation.retrieval needs faiss: install it with `pip install faiss-cpu` "
            "(pinned in requirements.txt)"
        ) from err
    return faiss


def build_index(
    gallery_features: ArrayLike,
    kind: IndexKind = "flat",
    metric: RetrievalMetric = "euclidean",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    train_size: int | None = None,
    hnsw_m: int | None = None,
    ef_construction: int | None = None,
    ef_search: int | None = None,
    chunk_size: int = 65_536,
    seed: int = 0,
    progress: bool | None = None,
) -> GalleryIndex:
    """Index gallery features for top-k search.

    Parameters that belong to another kind of index raise an error rather than being
    ignored.

    Args:
        gallery_features: (G, D) features, numpy or torch (copied to float32 one chunk at a
            time).
        kind: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate).
        metric: ``"euclidean"`` or ``"cosine"`` (features are L2-normalised for cosine).
        nlist: IVF cells (default :math:`\\lfloor\\sqrt{G}\\rceil`).
        nprobe: IVF cells visited per query (default ``min(nlist, 16)``).
        train_size: IVF k-means training sample (default ``min(G, 64 * nlist)``, drawn
            with ``seed``).
        hnsw_m: HNSW neighbours per node (default 32).
        ef_construction: HNSW build beam width (default 100).
        ef_search: HNSW search beam width (default 128; raised to k when searching).
        chunk_size: gallery rows converted and added at a time.
        seed: seed of the IVF training sample.
        progress: show a tqdm bar while adding (``None``: only for >= 50,000 rows).

    Returns:
        A :class:`GalleryIndex`.

    Raises:
        ValueError: unknown kind or metric, a parameter for another kind, bad shapes.
        MemoryError: when the index will not fit in the memory available.
    """
    faiss = _import_faiss()
    if kind not in INDEX_KINDS:
        raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    foreign = {
        "flat": dict(
            nlist=nlist,
            nprobe=nprobe,
            train_size=train_size,
            hnsw_m=hnsw_m,
            ef_construction=ef_construction,
            ef_search=ef_search,
        ),
        "ivf": dict(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search),
        "hnsw": dict(nlist=nlist, nprobe=nprobe, train_size=train_size),
    }[kind]
    given = [name for name, value in foreign.items() if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} do not apply to kind={kind!r}")
    if gallery_features.ndim != 2 or gallery_features.shape[0] < 1:
        raise ValueError(f"gallery_features must be (G, D) with G >= 1, got shape {tuple(gallery_features.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    size, dim = (int(n) for n in gallery_features.shape)
    faiss_metric = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT

    m = 32 if hnsw_m is None else hnsw_m
    graph_bytes = 2 * m * 4 * size if kind == "hnsw" else 0  # ~2M neighbour ids per node
    check_memory(
        4 * size * dim + graph_bytes + 4 * chunk_size * dim,
        "cpu",
        what=f"build_index(kind={kind!r}) over {size} x {dim} float32 features",
        advice="index a part of the gallery at a time, or reduce the feature dimension (e.g. PCA)",
    )

    if kind == "flat":
        index = faiss.IndexFlat(dim, faiss_metric)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, m, faiss_metric)
        index.hnsw.efConstruction = 100 if ef_construction is None else ef_construction
        index.hnsw.efSearch = 128 if ef_search is None else ef_search
    else:
        cells = max(1, round(math.sqrt(size))) if nlist is None else nlist
        if not 1 <= cells <= size:
            raise ValueError(f"nlist must be in [1, G={size}], got {cells}")
        quantizer = faiss.IndexFlat(dim, faiss_metric)
        index = faiss.IndexIVFFlat(quantizer, dim, cells, faiss_metric)
        index.nprobe = min(cells, 16) if nprobe is None else nprobe
        if not 1 <= index.nprobe <= cells:
            raise ValueError(f"nprobe must be in [1, nlist={cells}], got {index.nprobe}")
        n_train = min(size, 64 * cells) if train_size is None else train_size
        if not cells <= n_train <= size:
            raise ValueError(f"train_size must be in [nlist={cells}, G={size}], got {n_train}")
        sample = np.sort(np.random.default_rng(seed).choice(size, n_train, replace=False))  # (n_train,)
        rows = torch.from_numpy(sample) if isinstance(gallery_features, Tensor) else sample
        index.train(_as_float32(gallery_features[rows], metric))  # k-means on the sample

    show = progress if progress is not None else size >= _PROGRESS_MIN_ROWS
    for start in tqdm(range(0, size, chunk_size), desc=f"build_index({kind})", unit="chunk", disable=not show):
        index.add(_as_float32(gallery_features[start : start + chunk_size], metric))
    return GalleryIndex(index=index, kind=kind, metric=metric, dim=dim, size=size)


def search(
    index: GalleryIndex,
    queries: ArrayLike,
    k: int,
    *,
    chunk_size: int = 4096,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """The k nearest gallery items of every query, in query chunks.

    Args:
        index: from :func:`build_index`.
        queries: (Q, D) query features.
        k: neighbours per query, ``1 <= k <= G``.
        chunk_size: queries per faiss call.
        progress: show a tqdm bar (``None``: only for >= 50,000 queries).

    Returns:
        ``(distances, indices)``: (Q, k) float32 distances in the index's metric (euclidean,
        not squared; or ``1 - cos``), ascending, and (Q, k) int64 gallery indices, as CPU
        tensors. An approximate index may leave slots unfilled (e.g. IVF with few cells
        probed): those hold index ``-1`` and distance ``+inf``, and a warning says how many.
    """
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= index.size:
        raise ValueError(f"k must be an integer in [1, G={index.size}], got {k!r}")
    if queries.ndim != 2 or queries.shape[1] != index.dim:
        raise ValueError(f"queries must be (Q, D={index.dim}), got shape {tuple(queries.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if index.kind == "hnsw":
        index.index.hnsw.efSearch = max(index.index.hnsw.efSearch, int(k))  # the beam must hold k
    num_q = int(queries.shape[0])
    distances = np.empty((num_q, k), dtype=np.float32)
    indices = np.empty((num_q, k), dtype=np.int64)
    show = progress if progress is not None else num_q >= _PROGRESS_MIN_ROWS
    for start in tqdm(range(0, num_q, chunk_size), desc=f"search({index.kind})", unit="chunk", disable=not show):
        block = _as_float32(queries[start : start + chunk_size], index.metric)  # (b, D)
        d, i = index.index.search(block, k)  # (b, k) each
        distances[start : start + block.shape[0]] = d
        indices[start : start + block.shape[0]] = i

    if index.metric == "euclidean":
        np.sqrt(np.maximum(distances, 0.0, out=distances), out=distances)  # faiss L2 is squared
    else:
        np.subtract(1.0, distances, out=distances)  # inner product of unit vectors -> 1 - cos
    unfilled = indices < 0
    if unfilled.any():
        distances[unfilled] = np.inf
        warnings.warn(
            f"search: {int(unfilled.sum())} of {unfilled.size} result slots were not filled by the "
            f"{index.kind} index (index -1, distance inf); raise nprobe / ef_search or lower k",
            stacklevel=2,
        )
    return torch.from_numpy(distances), torch.from_numpy(indices)


def recall_at_k(approx_indices: ArrayLike, exact_indices: ArrayLike, k: int) -> float:
    r"""Recall of an approximate top-k against the exact one.

    .. math::
        \mathrm{recall@}k = \frac{1}{Q}\sum_q \frac{|A_q^{(k)} \cap E_q^{(k)}|}{k}

    with :math:`A_q^{(k)}` and :math:`E_q^{(k)}` the first k indices of query q's
    approximate and exact lists; for k = 1 it is the fraction of queries whose nearest
    neighbour was found. Unfilled slots (-1) count as misses.

    Args:
        approx_indices: (Q, >= k) gallery indices from the approximate index.
        exact_indices: (Q, >= k) gallery indices from the exact (flat) index.
        k: list length compared.

    Returns:
        The recall in [0, 1].
    """
    approx = torch.as_tensor(approx_indices)
    exact = torch.as_tensor(exact_indices).to(approx.device)
    if approx.dim() != 2 or exact.dim() != 2 or approx.shape[0] != exact.shape[0]:
        raise ValueError(
            f"expected approx and exact indices (Q, k), got {tuple(approx.shape)} and {tuple(exact.shape)}"
        )
    if not 1 <= k <= min(approx.shape[1], exact.shape[1]):
        raise ValueError(f"k must be in [1, {min(approx.shape[1], exact.shape[1])}], got {k}")
    found = 0
    step = max(1, 2_000_000 // (k * k))  # bound the (b, k, k) comparison
    for s in range(0, approx.shape[0], step):
        a, e = approx[s : s + step, :k], exact[s : s + step, :k]  # (b, k)
        hit = (a.unsqueeze(2) == e.unsqueeze(1)).any(2) & (a >= 0)  # (b, k)
        found += int(hit.sum())
    return found / (approx.shape[0] * k)


def evaluate_topk(
    dist_topk: ArrayLike,
    idx_topk: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
) -> tuple[np.ndarray, float]:
    r"""CMC (exact up to the ranks the lists cover) and mAP@k from top-k lists.

    Each query's k retrieved items are ordered by (distance, gallery index), the tie rule of
    :func:`~reid_core.evaluation.rank.evaluate_rank`, and filtered by the Market-1501 rule
    (junk -1 and same-id same-camera items dropped, unfilled -1 slots dropped, distractors
    kept). With :math:`k_q` items left, :math:`n_q` the number of valid true matches of q in
    the *whole* gallery (from the ids, not the lists) and :math:`P_q(i)` the precision at
    position i of the filtered list,

    .. math::
        \mathrm{AP@}k(q) = \frac{1}{\min(n_q, k)} \sum_{i=1}^{k_q} P_q(i)\,[\text{item } i
        \text{ is a match}], \qquad \mathrm{mAP@}k = \operatorname{mean}_{q:\,n_q \ge 1}
        \mathrm{AP@}k(q),

    normalised by :math:`\min(n_q, k)` (the usual AP@k; with k = G it is the full AP, so
    mAP@G equals :func:`evaluate_rank`'s mAP). Queries with :math:`n_q = 0` are skipped.
    CMC(r) of query q is exact when its first match lies in its list or :math:`k_q \ge r`;
    when neither holds for some r <= ``max_rank`` the query counts as a miss there and a
    warning says how many queries are affected (search with a larger k).

    Args:
        dist_topk: (Q, k) distances of the retrieved items.
        idx_topk: (Q, k) their gallery indices (-1 for an unfilled slot).
        q_pids, g_pids, q_camids, g_camids: as in :func:`evaluate_rank`.
        max_rank: CMC length, at most k.

    Returns:
        ``(cmc, mAP_at_k)``: (max_rank,) float64 numpy CMC and the mAP@k as a float.
    """
    dist = torch.as_tensor(dist_topk)
    idx = torch.as_tensor(idx_topk).to(dist.device)
    if dist.dim() != 2 or tuple(idx.shape) != tuple(dist.shape):
        raise ValueError(f"dist_topk and idx_topk must both be (Q, k), got {tuple(dist.shape)} and {tuple(idx.shape)}")
    num_q, k = (int(n) for n in dist.shape)
    if not 1 <= max_rank <= k:
        raise ValueError(f"max_rank must be in [1, k={k}] (CMC beyond the retrieved k is unknown), got {max_rank}")
    device = dist.device
    q_pid, q_cam = (torch.as_tensor(x).to(device, torch.int64) for x in (q_pids, q_camids))  # (Q,)
    g_pid, g_cam = (torch.as_tensor(x).to(device, torch.int64) for x in (g_pids, g_camids))  # (G,)
    if q_pid.shape != (num_q,) or q_cam.shape != (num_q,) or g_cam.shape != g_pid.shape:
        raise ValueError(f"expected q_pids, q_camids ({num_q},) and g_pids, g_camids of one length G")
    num_g = g_pid.numel()
    if bool(((idx < -1) | (idx >= num_g)).any()):
        raise ValueError(f"idx_topk must hold gallery indices in [0, {num_g}) or -1")

    # Order each list by (distance, index), unfilled slots last.
    filled = idx >= 0  # (Q, k)
    key_idx = torch.where(filled, idx, num_g)  # (Q, k)
    key_dist = torch.where(filled, dist.double(), float("inf"))  # (Q, k)
    key_idx, order = torch.sort(key_idx, dim=1)  # (Q, k)
    key_dist = key_dist.gather(1, order)  # (Q, k)
    key_dist, order = torch.sort(key_dist, dim=1, stable=True)  # (Q, k)
    key_idx = key_idx.gather(1, order)  # (Q, k)
    filled = key_idx < num_g  # (Q, k)
    safe = key_idx.clamp(max=num_g - 1)  # (Q, k)
    pid, cam = g_pid[safe], g_cam[safe]  # (Q, k)

    same_pid = pid == q_pid.unsqueeze(1)  # (Q, k)
    valid = filled & (pid != -1) & ~(same_pid & (cam == q_cam.unsqueeze(1)))  # (Q, k)
    match = valid & same_pid  # (Q, k)
    position = valid.cumsum(1)  # (Q, k): 1-based position in the filtered list
    hits = match.cumsum(1)  # (Q, k)
    n_pos = _valid_match_counts(q_pid, q_cam, g_pid, g_cam)  # (Q,)
    is_valid = n_pos > 0  # (Q,)
    num_valid = int(is_valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a valid match in the gallery: check the pids and camids")

    precision = torch.where(match, hits.double() / position.clamp(min=1).double(), 0.0)  # (Q, k)
    ap = precision.sum(1) / n_pos.clamp(min=1).clamp(max=k).double()  # (Q,)
    found = match.any(1)  # (Q,)
    first = torch.where(found, position.gather(1, match.double().argmax(1, keepdim=True)).squeeze(1), k + 1)  # (Q,)
    uncertain = is_valid & ~found & (valid.sum(1) < max_rank)  # (Q,)
    if bool(uncertain.any()):
        warnings.warn(
            f"evaluate_topk: {int(uncertain.sum())} queries have no match in their list and fewer than "
            f"max_rank={max_rank} valid items after filtering; their CMC beyond the list counts as a "
            "miss (search with a larger k)",
            stacklevel=2,
        )
    ranks = torch.arange(1, max_rank + 1, device=device)  # (R,)
    cmc = ((first[is_valid].unsqueeze(1) <= ranks).double().sum(0) / num_valid).cpu().numpy()  # (R,)
    return cmc, float(ap[is_valid].mean())


def _valid_match_counts(q_pid: Tensor, q_cam: Tensor, g_pid: Tensor, g_cam: Tensor) -> Tensor:
    """Per query, gallery items with its pid minus those also in its camera (junk excluded).

    Returns:
        (Q,) int64 counts :math:`n_q`.
    """
    keep = g_pid != -1  # (G,)
    pid_count = _count_in(g_pid[keep], q_pid)  # (Q,)
    cam_lo = int(torch.minimum(g_cam.min(), q_cam.min()))
    span = int(torch.maximum(g_cam.max(), q_cam.max())) - cam_lo + 1
    pair_count = _count_in(g_pid[keep] * span + (g_cam[keep] - cam_lo), q_pid * span + (q_cam - cam_lo))  # (Q,)
    return torch.where(q_pid == -1, 0, pid_count - pair_count)


def _count_in(values: Tensor, queries: Tensor) -> Tensor:
    """How many times each entry of ``queries`` occurs in ``values``."""
    sorted_values = torch.sort(values).values  # (G',)
    lo = torch.searchsorted(sorted_values, queries)  # (Q,)
    hi = torch.searchsorted(sorted_values, queries, right=True)  # (Q,)
    return hi - lo


def _as_float32(x: ArrayLike, metric: RetrievalMetric) -> np.ndarray:
    """A C-contiguous float32 numpy copy of a feature block, L2-normalised for cosine."""
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    block = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(block).all():
        raise ValueError("features contain NaN or inf")
    if metric == "cosine":
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block = block / np.maximum(norms, 1e-12)
    return block
