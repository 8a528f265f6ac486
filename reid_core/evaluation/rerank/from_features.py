"""Rank lists of k-reciprocal re-ranking straight from features, over symmetric blocks.

No (Q+G) x (Q+G) matrix: distances are computed for ``chunk x chunk`` blocks of the upper
triangle only (each block serves its rows and, transposed, its columns), and every row keeps
running top-K candidates and a running maximum (the scale :math:`s_i` of
:mod:`~reid_core.evaluation.rerank.neighbors`).

Chapter: 03 (AlignedReID, re-ranking) and the book page "Evaluation at scale".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from reid_core.evaluation.distance import Metric, gallery_matmul, matmul_uses_onednn
from reid_core.evaluation.rerank.neighbors import (
    CANDIDATE_SLACK,
    NeighborLists,
    squared_float32,
    stable_first_columns,
)

__all__ = ["FeatureDistances", "feature_neighbors"]


class _CandidatePool:
    """Running top-``width`` candidates of a chunk of rows, merged lazily.

    Candidates from new blocks are queued and merged (one ``cat`` and one ``topk``) only when
    ``max_pending`` blocks are waiting or the chunk is complete: merging after every block
    costs more than the block's own ``topk``.
    """

    def __init__(self, rows: int, width: int, device: torch.device, max_pending: int = 8) -> None:
        self.width, self.max_pending = width, max_pending
        self.val = torch.full((rows, width), float("inf"), dtype=torch.float32, device=device)  # (B, width)
        self.idx = torch.zeros(rows, width, dtype=torch.long, device=device)  # (B, width)
        self.pending: list[tuple[Tensor, Tensor]] = []

    def add(self, val: Tensor, idx: Tensor) -> None:
        """Queue (B, C') candidate values and their column indices."""
        self.pending.append((val, idx))
        if len(self.pending) >= self.max_pending:
            self.merge()

    def merge(self) -> tuple[Tensor, Tensor]:
        """Keep the ``width`` smallest of all candidates so far: (B, width) values and indices."""
        if self.pending:
            val = torch.cat([self.val] + [v for v, _ in self.pending], dim=1)  # (B, width + sum C')
            idx = torch.cat([self.idx] + [i for _, i in self.pending], dim=1)
            self.val, pos = val.topk(self.width, dim=1, largest=False, sorted=False)  # (B, width)
            self.idx = idx.gather(1, pos)
            self.pending = []
        return self.val, self.idx


class FeatureDistances:
    """Squared float32 distances between feature blocks.

    Computes what :func:`~reid_core.evaluation.distance.pairwise_distance` computes (the
    expansion ``|x|^2 + |y|^2 - 2 x.y``, clamped at 0, square root for euclidean;
    ``1 - cos`` for cosine), up to rounding, then squares it as the common re-ranking code
    squares its input. The product is :func:`~reid_core.evaluation.distance.gallery_matmul`:
    oneDNN on the CPU (twice as fast as BLAS there, but it allocates its result), else BLAS
    into a buffer reused from call to call (a fresh large tensor costs page faults).

    Args:
        feats: (N, D) floating-point features.
        metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
    """

    def __init__(self, feats: Tensor, metric: Metric) -> None:
        self.feats = feats
        self.metric = metric
        self.sq_norms = (feats * feats).sum(1)  # (N,) as pairwise_distance computes them
        self.inv_norms = 1.0 / torch.linalg.vector_norm(feats, dim=1).clamp_min(1e-12)  # (N,) as F.normalize
        self._flat = torch.empty(0, dtype=feats.dtype, device=feats.device)

    def _buffer(self, rows: int, cols: int) -> Tensor:
        """A contiguous (rows, cols) view of a flat buffer that only grows."""
        if self._flat.numel() < rows * cols:
            self._flat = torch.empty(rows * cols, dtype=self.feats.dtype, device=self.feats.device)
        return self._flat[: rows * cols].view(rows, cols)

    def block(self, a0: int, a1: int, b0: int, b1: int) -> Tensor:
        """Squared distances of rows a0:a1 to rows b0:b1: (a1 - a0, b1 - b0) float32.

        The result may be a view of the internal buffer: use it before the next call. A
        diagonal block (a0 == b0) gets an exact zero diagonal (an image's distance to itself).
        """
        x, y = self.feats[a0:a1], self.feats[b0:b1]  # (B, D), (C, D)
        buffer = None if matmul_uses_onednn(x) else self._buffer(a1 - a0, b1 - b0)  # (B, C) for BLAS
        if self.metric == "cosine":
            ones = torch.ones(b1 - b0, dtype=x.dtype, device=x.device)  # (C,)
            out = gallery_matmul(F.normalize(x, dim=1), F.normalize(y, dim=1), ones, alpha=-1.0, out=buffer)
        else:
            # |y|^2 - 2 x.y in one product (oneDNN on the CPU), then + |x|^2
            out = gallery_matmul(x, y, self.sq_norms[b0:b1], alpha=-2.0, out=buffer)
            out.add_(self.sq_norms[a0:a1].unsqueeze(1)).clamp_min_(0.0)
            if self.metric == "euclidean":
                out.sqrt_()
        if a0 == b0:
            out.diagonal().zero_()
        out.mul_(out)
        return out if out.dtype == torch.float32 else out.float()

    def pairs(self, rows: Tensor, cols: Tensor, chunk_size: int = 1 << 13) -> Tensor:
        """Squared distances of listed pairs (rows[p], cols[p]): (P,) float32, self-pairs 0."""
        out = torch.empty(rows.shape[0], dtype=torch.float32, device=self.feats.device)
        dim = self.feats.shape[1]
        buf_x = torch.empty(min(chunk_size, rows.shape[0]), dim, dtype=self.feats.dtype, device=self.feats.device)
        buf_y = torch.empty_like(buf_x)
        for start in range(0, rows.shape[0], chunk_size):
            i, j = rows[start : start + chunk_size], cols[start : start + chunk_size]  # (p,)
            x = torch.index_select(self.feats, 0, i, out=buf_x[: i.shape[0]])  # (p, D)
            y = torch.index_select(self.feats, 0, j, out=buf_y[: i.shape[0]])  # (p, D)
            dot = x.mul_(y).sum(1)  # (p,) x.y
            if self.metric == "cosine":
                dist = 1.0 - dot * self.inv_norms[i] * self.inv_norms[j]
            else:
                dist = (self.sq_norms[i] + self.sq_norms[j] - 2.0 * dot).clamp_min(0.0)
                if self.metric == "euclidean":
                    dist = dist.sqrt()
            dist = torch.where(i == j, torch.zeros_like(dist), dist)  # self-distance is exactly 0
            out[start : start + i.shape[0]] = squared_float32(dist)
        return out


@torch.no_grad()
def feature_neighbors(
    distances: FeatureDistances,
    num_neighbors: int,
    chunk_size: int,
    query_gallery_out: Tensor | None = None,
    num_query: int = 0,
    progress: bool = False,
) -> NeighborLists:
    """Initial rank lists straight from features, over the upper triangle of blocks.

    Distances are symmetric, so each (I, J) block with I <= J is computed once and read both
    ways: by rows for the rows of I and by columns for the rows of J. Running top-(K + slack)
    candidates and running maxima are merged block by block; at the end the candidates are
    divided by the row's scale and sorted by (value, index). A row whose K-th value ties with
    its last candidate is recomputed in full (rare on real data).

    Args:
        distances: the features and metric, as :class:`FeatureDistances`.
        num_neighbors: K.
        chunk_size: block side; memory is about 3 x chunk^2 floats.
        query_gallery_out: optional (Q, G) float32 buffer that receives the squared
            query-gallery distances (not yet divided by the scale) on the way.
        num_query: Q, needed with ``query_gallery_out``.
        progress: show a tqdm bar.

    Returns:
        :class:`NeighborLists` with rank (N, K) and scale (N,).
    """
    total = distances.feats.shape[0]
    width = min(num_neighbors + CANDIDATE_SLACK, total)
    device = distances.feats.device
    best_val = torch.empty(total, width, dtype=torch.float32, device=device)
    best_idx = torch.empty(total, width, dtype=torch.long, device=device)
    scale = torch.zeros(total, dtype=torch.float32, device=device)
    flipped = torch.empty(min(chunk_size, total) ** 2, dtype=torch.float32, device=device)
    starts = list(range(0, total, chunk_size))
    pools = [_CandidatePool(min(a0 + chunk_size, total) - a0, width, device) for a0 in starts]
    bar = tqdm(
        total=len(starts) * (len(starts) + 1) // 2, desc="re-ranking: neighbours", disable=not progress, leave=False
    )
    for bi, a0 in enumerate(starts):
        a1 = min(a0 + chunk_size, total)
        for bj in range(bi, len(starts)):
            b0 = starts[bj]
            b1 = min(b0 + chunk_size, total)
            raw = distances.block(a0, a1, b0, b1)  # (ca, cb)
            scale[a0:a1] = torch.maximum(scale[a0:a1], raw.amax(dim=1))
            val, pos = raw.topk(min(width, b1 - b0), dim=1, largest=False, sorted=False)  # (ca, w)
            pools[bi].add(val, pos + b0)
            if bj != bi:
                raw_t = flipped[: raw.numel()].view(b1 - b0, a1 - a0).copy_(raw.T)  # (cb, ca): topk is faster on rows
                scale[b0:b1] = torch.maximum(scale[b0:b1], raw_t.amax(dim=1))
                val, pos = raw_t.topk(min(width, a1 - a0), dim=1, largest=False, sorted=False)  # (cb, w)
                pools[bj].add(val, pos + a0)
            if query_gallery_out is not None:
                _copy_query_gallery(raw, a0, a1, b0, b1, num_query, query_gallery_out)
            bar.update(1)
        # Chunk bi has now met every column: earlier chunks as columns, the rest as rows.
        best_val[a0:a1], best_idx[a0:a1] = pools[bi].merge()
    bar.close()
    bad = ~(torch.isfinite(scale) & (scale > 0))
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"feature {row} has NaN/inf distances or is at distance 0 from every other one")

    def full_rows(rows: Tensor) -> Tensor:
        """Exact normalised rows, recomputed (only for rows with a tie at the K-th place)."""
        out = torch.stack([distances.block(int(i), int(i) + 1, 0, total)[0].clone() for i in rows])  # (U, N)
        out[torch.arange(rows.shape[0], device=device), rows] = 0.0  # self-distance
        return out / scale[rows].unsqueeze(1)

    rank = stable_first_columns(best_val / scale.unsqueeze(1), best_idx, num_neighbors, width == total, full_rows)
    return NeighborLists(rank=rank, scale=scale)


def _copy_query_gallery(raw: Tensor, a0: int, a1: int, b0: int, b1: int, num_query: int, out: Tensor) -> None:
    """Copy the query-row x gallery-column part of a block (rows a0:a1, columns b0:b1) into out."""
    q1 = min(a1, num_query)
    g0 = max(b0, num_query)
    if a0 < q1 and g0 < b1:
        out[a0:q1, g0 - num_query : b1 - num_query] = raw[: q1 - a0, g0 - b0 :]
