r"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, CVPR 2017), chunked and sparse.

Two entry points give the same numbers as the common python implementation of the paper
(the one that AlignedReID, torchreid and most re-ID code copy):

* :func:`re_ranking` takes the three distance blocks (query-gallery, query-query,
  gallery-gallery), like the common code, but never stacks them into a dense
  (Q+G) x (Q+G) matrix: rank lists are found ``chunk_size`` rows at a time and the
  encoding is sparse.
* :func:`re_ranking_from_features` takes the features and never builds any
  (Q+G) x (Q+G) or G x G matrix at all, so it runs at MSMT17 size (11,659 x 82,161),
  where the gallery-gallery matrix alone is 27 GB. It can return only the top-k gallery
  items of each query when even the (Q, G) output is too large.

The final distance, for a query p and a gallery image g, is

.. math::
    d^*(p, g) = (1 - \lambda)\, d_J(p, g) + \lambda\, \tilde d(p, g),

with :math:`\tilde d` the squared distance divided by its column maximum
(:mod:`~reid_core.evaluation.rerank.neighbors`) and :math:`d_J` the Jaccard distance of the
k-reciprocal encodings (:mod:`~reid_core.evaluation.rerank.sparse`).

Chapter: 03 (AlignedReID, re-ranking) and the book page "Evaluation at scale".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from reid_core.arrays import ArrayLike
from reid_core.evaluation.distance import METRICS, Metric
from reid_core.evaluation.rerank.dense import dense_neighbors, dense_pair_distances
from reid_core.evaluation.rerank.from_features import FeatureDistances, feature_neighbors
from reid_core.evaluation.rerank.memory import (
    FINAL_BUFFER_BYTES,
    JACCARD_MAX_PAIRS,
    MemoryEstimate,
    rerank_memory_estimate,
)
from reid_core.evaluation.rerank.neighbors import NeighborLists, squared_float32
from reid_core.evaluation.rerank.sparse import (
    gallery_columns,
    gaussian_encoding,
    jaccard_overlap,
    k_reciprocal_expansion,
    local_query_expansion,
    local_query_expansion_size,
    plan_query_chunks,
)

__all__ = ["re_ranking", "re_ranking_from_features", "RerankedTopK"]

_SPARSE_CHUNK = 4096


@dataclass
class RerankedTopK:
    """The best ``k`` gallery items of every query after re-ranking.

    Attributes:
        indices: (Q, k) int64 gallery indices, best (smallest distance) first.
        distances: (Q, k) float32 re-ranked distances, ascending.
    """

    indices: ArrayLike
    distances: ArrayLike


def _as_tensor(x: ArrayLike, name: str) -> tuple[Tensor, bool]:
    """Wrap a numpy array (no copy when contiguous) or pass a tensor through, detached.

    Returns:
        ``(tensor, was_numpy)``.
    """
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)), True
    if isinstance(x, Tensor):
        return x.detach(), False
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _check_finite(x: Tensor, name: str) -> None:
    """Raise ValueError if ``x`` holds NaN or inf (checked in row blocks to bound memory)."""
    rows = max(1, (1 << 24) // max(1, x.shape[1]))
    for start in range(0, x.shape[0], rows):
        block = x[start : start + rows]
        if block.is_floating_point() and not bool(torch.isfinite(block).all()):
            raise ValueError(f"{name} contains NaN or inf values (first bad row >= {start})")


def _check_parameters(k1: int, k2: int, lambda_value: float, total: int, chunk_size: int) -> None:
    """Validate the re-ranking hyperparameters against the number of images."""
    for name, value in (("k1", k1), ("k2", k2), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    if k1 + 1 > total or k2 > total:
        raise ValueError(f"k1 + 1 = {k1 + 1} and k2 = {k2} must not exceed the number of images Q + G = {total}")


def _final_distances(
    neighbors: NeighborLists,
    pair_distance: Callable[[Tensor, Tensor], Tensor],
    original_rows: Callable[[int, int], Tensor],
    num_query: int,
    num_gallery: int,
    k1: int,
    k2: int,
    lambda_value: float,
    out: Tensor | None,
    topk: int | None,
    max_memory: int | None,
    progress: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    """The sparse stages and :math:`d^* = (1-\\lambda) d_J + \\lambda \\tilde d`, query chunk by chunk.

    Args:
        neighbors: rank lists (N, K) and scales (N,).
        pair_distance: ``(rows, cols) -> (P,)`` :math:`\\tilde d` of listed pairs.
        original_rows: ``(a, b) -> (b - a, G)`` :math:`\\tilde d` of query rows a..b vs the gallery.
        num_query, num_gallery: Q and G.
        k1, k2, lambda_value: the re-ranking hyperparameters.
        out: (Q, G) float32 buffer for the dense result, or ``None`` with ``topk``.
        topk: keep only this many gallery items per query.
        max_memory: limit for the memory checks (``None``: what is free).
        progress: show tqdm bars.

    Returns:
        ``out`` filled, or ``(indices (Q, topk), distances (Q, topk))``.
    """
    rank = neighbors.rank
    device = rank.device
    pattern = k_reciprocal_expansion(rank, k1, _SPARSE_CHUNK, progress)
    v = gaussian_encoding(pattern, pair_distance(pattern.row, pattern.col))
    del pattern
    if k2 > 1:
        gathered = local_query_expansion_size(v, rank, k2)
        chunk_share = gathered * _SPARSE_CHUNK // max(1, rank.shape[0])
        need = MemoryEstimate({"query expansion (sparse)": gathered * 12 + chunk_share * 48})
        need.check(device, max_memory, "use a machine with more memory or a smaller k2")
    v = local_query_expansion(v, rank, k2)
    columns = gallery_columns(v, num_query)
    max_rows = max(1, FINAL_BUFFER_BYTES // (4 * max(1, num_gallery)))
    chunks = plan_query_chunks(v, columns, num_query, num_gallery, JACCARD_MAX_PAIRS, max_rows)
    if topk is not None:
        top_idx = torch.empty(num_query, topk, dtype=torch.long, device=device)
        top_val = torch.empty(num_query, topk, dtype=torch.float32, device=device)
    rows = max(b - a for a, b in chunks) if chunks else 0
    buffer = torch.empty(rows * num_gallery, dtype=torch.float32, device=device)
    for a, b in tqdm(chunks, desc="re-ranking: Jaccard distance", disable=not progress, leave=False):
        final = jaccard_overlap(v, columns, a, b, num_gallery, buffer)  # (c, G) m = sum of minima
        # (1 - lambda) d_J with d_J = 1 - m / (2 - m), in place: the same operations in the same order.
        final.div_(2.0 - final).neg_().add_(1.0).mul_(1 - lambda_value)  # (c, G)
        if lambda_value != 0:
            final.add_(original_rows(a, b).mul_(lambda_value))  # (c, G)
        if topk is None:
            out[a:b] = final
        else:
            top_val[a:b], top_idx[a:b] = final.topk(topk, dim=1, largest=False, sorted=True)
    return out if topk is None else (top_idx, top_val)


@torch.no_grad()
def re_ranking(
    q_g_dist: ArrayLike,
    q_q_dist: ArrayLike,
    g_g_dist: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    chunk_size: int = 1024,
    max_memory: int | None = None,
    progress: bool = True,
) -> ArrayLike:
    r"""k-reciprocal re-ranking of a query-gallery distance matrix (Zhong et al., CVPR 2017).

    Follows the common python implementation step by step (Zhong et al. 2017, ``zhong2017reranking``): the stacked
    matrix ``A = [[q_q, q_g], [q_g^T, g_g]]`` is squared and each column divided by its
    maximum, :math:`\tilde d(i, j) = A_{ji}^2 / \max_k A_{ki}^2`; k-reciprocal sets from the
    top-(k1+1) lists, expansion with round(k1/2) and the 2/3 rule, Gaussian encoding
    :math:`V_{p,g} \propto e^{-\tilde d(p,g)}` normalised per row, local query expansion over
    k2 neighbours, Jaccard distance :math:`d_J = 1 - m/(2-m)` with
    :math:`m = \sum_j \min(V_{p,j}, V_{g,j})`, and
    :math:`d^* = (1-\lambda) d_J + \lambda \tilde d` on the query-gallery block. Ties in the
    rank lists are broken by index, as a stable sort would.

    Unlike the common code it holds only ``chunk_size`` rows of the stacked matrix at a time
    and keeps the encoding sparse, so beyond its inputs it needs about
    ``Q*G*4 + 12*chunk_size*(Q+G)`` bytes plus a few hundred MB, not several (Q+G)^2
    matrices. For galleries whose G x G matrix does not fit, use
    :func:`re_ranking_from_features`.

    Args:
        q_g_dist: (Q, G) query-gallery distances (not squared; they are squared here).
        q_q_dist: (Q, Q) query-query distances.
        g_g_dist: (G, G) gallery-gallery distances.
        k1: k of the k-reciprocal sets (paper: 20).
        k2: neighbours of the local query expansion (paper: 6; 1 skips it).
        lambda_value: weight of the original distance (paper: 0.3).
        chunk_size: rows of the stacked matrix processed at once.
        max_memory: bytes the run may use besides its inputs; ``None`` checks against the
            free memory of the device. A :class:`MemoryError` is raised before allocating
            if the estimate is larger.
        progress: show tqdm progress bars.

    Returns:
        (Q, G) float32 re-ranked distances, a numpy array if the inputs were numpy arrays,
        else a tensor on their device.

    Raises:
        TypeError: inputs of mixed or unsupported kinds.
        ValueError: shapes, values or hyperparameters that are not valid.
        MemoryError: the run would not fit (the message says how much it needs).

    Example:
        >>> import numpy as np
        >>> from reid_core.evaluation.rerank import re_ranking
        >>> x = np.random.default_rng(0).normal(size=(30, 8))
        >>> d = np.linalg.norm(x[:, None] - x[None], axis=2)
        >>> re_ranking(d[:5, 5:], d[:5, :5], d[5:, 5:], k1=4, k2=2, progress=False).shape
        (5, 25)
    """
    (q_g, np_qg), (q_q, np_qq), (g_g, np_gg) = (
        _as_tensor(q_g_dist, "q_g_dist"),
        _as_tensor(q_q_dist, "q_q_dist"),
        _as_tensor(g_g_dist, "g_g_dist"),
    )
    if len({np_qg, np_qq, np_gg}) != 1:
        raise TypeError("q_g_dist, q_q_dist and g_g_dist must all be numpy arrays or all be torch tensors")
    if q_g.dim() != 2 or q_q.dim() != 2 or g_g.dim() != 2:
        raise ValueError(
            f"expected 2-D distance matrices, got shapes {tuple(q_g.shape)}, {tuple(q_q.shape)}, {tuple(g_g.shape)}"
        )
    num_query, num_gallery = q_g.shape
    if tuple(q_q.shape) != (num_query, num_query) or tuple(g_g.shape) != (num_gallery, num_gallery):
        raise ValueError(
            f"q_g_dist is {tuple(q_g.shape)}, so q_q_dist must be ({num_query}, {num_query}) and g_g_dist "
            f"({num_gallery}, {num_gallery}); got {tuple(q_q.shape)} and {tuple(g_g.shape)}"
        )
    if not (q_g.device == q_q.device == g_g.device):
        raise ValueError(f"all distances must be on one device, got {q_g.device}, {q_q.device}, {g_g.device}")
    total = num_query + num_gallery
    _check_parameters(k1, k2, lambda_value, total, chunk_size)
    # NaN and inf are caught while the rank lists are built (they poison a column's maximum).
    estimate = rerank_memory_estimate(num_query, num_gallery, k1, k2, chunk_size)
    advice = (
        "use a smaller chunk_size, or re_ranking_from_features(qf, gf, ..., topk=100), which never "
        "builds (Q+G)^2 or G^2 matrices and can return only the top-k gallery items per query."
    )
    estimate.check(q_g.device, max_memory, advice)

    neighbors = dense_neighbors(q_g, q_q, g_g, max(k1 + 1, k2), chunk_size, progress)
    out = torch.empty(num_query, num_gallery, dtype=torch.float32, device=q_g.device)
    _final_distances(
        neighbors,
        lambda rows, cols: dense_pair_distances(q_g, q_q, g_g, neighbors.scale, rows, cols),
        # Row p < Q of the stacked matrix's transpose, gallery part: A[Q + g, p] = q_g[p, g].
        lambda a, b: squared_float32(q_g[a:b]) / neighbors.scale[a:b].unsqueeze(1),
        num_query,
        num_gallery,
        k1,
        k2,
        float(lambda_value),
        out,
        None,
        max_memory,
        progress,
    )
    return out.cpu().numpy() if np_qg else out


@torch.no_grad()
def re_ranking_from_features(
    qf: ArrayLike,
    gf: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: Metric = "euclidean",
    chunk_size: int = 4096,
    topk: int | None = None,
    *,
    max_memory: int | None = None,
    progress: bool = True,
) -> ArrayLike | RerankedTopK:
    r"""k-reciprocal re-ranking from features, without any (Q+G) x (Q+G) matrix.

    Gives what :func:`re_ranking` gives on ``pairwise_distance(qf, gf, metric)``,
    ``pairwise_distance(qf, metric=metric)`` and ``pairwise_distance(gf, metric=metric)``
    (up to the rounding of distances computed in other blocks), while holding at most
    a ``chunk_size`` x ``chunk_size`` block of distances:

    1. every image's top-(k1+1) neighbours and column maximum :math:`s_i` are found over the
       upper triangle of feature blocks (distances are symmetric, so each block serves its
       rows and its columns), keeping only running top-k candidates;
    2. the k-reciprocal sets, the encoding V and its query expansion are sparse
       (a few dozen entries per image); :math:`\tilde d` of the pairs V needs is computed
       from the features directly;
    3. the Jaccard distance is computed for query chunks through V's inverted file, and the
       final :math:`(1-\lambda) d_J + \lambda \tilde d` for the query x gallery block only.

    Memory: the stacked features, about 24 x chunk_size^2 bytes, the sparse encoding
    (about 20 (k1+1) k2 entries per image at most) and the output: Q x G float32 (3.8 GB at
    MSMT17 size), or Q x topk with ``topk``.

    Args:
        qf: (Q, D) query features.
        gf: (G, D) gallery features.
        k1: k of the k-reciprocal sets (paper: 20).
        k2: neighbours of the local query expansion (paper: 6; 1 skips it).
        lambda_value: weight of the original distance (paper: 0.3).
        metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``; the distance is squared
            afterwards, as the common implementation squares its input.
        chunk_size: side of the distance blocks.
        topk: return only the ``topk`` best gallery items per query (:class:`RerankedTopK`)
            instead of the dense (Q, G) matrix.
        max_memory: bytes the run may use besides its inputs; ``None`` checks against the
            free memory of the device.
        progress: show tqdm progress bars.

    Returns:
        (Q, G) float32 re-ranked distances, or a :class:`RerankedTopK` with ``topk``; numpy
        if the features were numpy arrays, else tensors on their device.

    Raises:
        TypeError: inputs of mixed or unsupported kinds.
        ValueError: shapes, values or hyperparameters that are not valid.
        MemoryError: the run would not fit (the message says how much it needs and suggests
            ``topk`` or a smaller ``chunk_size``).
    """
    (q, np_q), (g, np_g) = _as_tensor(qf, "qf"), _as_tensor(gf, "gf")
    if np_q != np_g:
        raise TypeError("qf and gf must both be numpy arrays or both be torch tensors")
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"expected qf (Q, D) and gf (G, D) with the same D, got {tuple(q.shape)} and {tuple(g.shape)}")
    if q.device != g.device:
        raise ValueError(f"qf and gf must be on one device, got {q.device} and {g.device}")
    if not (q.is_floating_point() and g.is_floating_point()):
        raise ValueError(f"features must be floating point, got {q.dtype} and {g.dtype}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    num_query, num_gallery = q.shape[0], g.shape[0]
    total = num_query + num_gallery
    _check_parameters(k1, k2, lambda_value, total, chunk_size)
    if topk is not None and not (isinstance(topk, (int, np.integer)) and 1 <= topk <= num_gallery):
        raise ValueError(f"topk must be None or an integer in [1, G={num_gallery}], got {topk!r}")
    _check_finite(q, "qf")
    _check_finite(g, "gf")
    estimate = rerank_memory_estimate(
        num_query, num_gallery, k1, k2, chunk_size, dim=q.shape[1], topk=topk, feature_bytes=q.element_size()
    )
    if topk is None:
        with_topk = rerank_memory_estimate(
            num_query, num_gallery, k1, k2, chunk_size, q.shape[1], 100, q.element_size()
        )
        advice = (
            f"the dense (Q, G) output alone is {num_query * num_gallery * 4 / 2**30:.2f} GiB: pass topk=100 to keep "
            f"only the 100 best gallery items per query (about {with_topk.total / 2**30:.2f} GiB in all), "
            "or a smaller chunk_size."
        )
    else:
        advice = "pass a smaller chunk_size (e.g. 1024) or a smaller topk"
    estimate.check(q.device, max_memory, advice)

    feats = torch.cat([q, g.to(q.dtype)], dim=0)  # (N, D)
    distances = FeatureDistances(feats, metric)
    out = None if topk is not None else torch.empty(num_query, num_gallery, dtype=torch.float32, device=q.device)
    neighbors = feature_neighbors(distances, max(k1 + 1, k2), chunk_size, out, num_query, progress)
    scale = neighbors.scale

    def original_rows(a: int, b: int) -> Tensor:
        """:math:`\\tilde d` of query rows a..b against the gallery: (b - a, G), a fresh tensor."""
        if out is not None:  # filled with the squared distances by the neighbour search
            return out[a:b] / scale[a:b].unsqueeze(1)
        return distances.block(a, b, num_query, num_query + num_gallery) / scale[a:b].unsqueeze(1)

    result = _final_distances(
        neighbors,
        lambda rows, cols: distances.pairs(rows, cols) / scale[rows],
        original_rows,
        num_query,
        num_gallery,
        k1,
        k2,
        float(lambda_value),
        out,
        topk,
        max_memory,
        progress,
    )
    if topk is None:
        return result.cpu().numpy() if np_q else result
    indices, distances = result
    if np_q:
        return RerankedTopK(indices=indices.cpu().numpy(), distances=distances.cpu().numpy())
    return RerankedTopK(indices=indices, distances=distances)
