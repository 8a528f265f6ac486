"""Rank lists of k-reciprocal re-ranking from the three dense distance blocks, chunk by chunk.

Row i of the original distance :math:`\\tilde d` (see
:mod:`~reid_core.evaluation.rerank.neighbors`) is column i of the stacked matrix
``A = [[q_q, q_g], [q_g^T, g_g]]`` squared and divided by its maximum: it is read from the
blocks for a chunk of rows at a time, so ``A`` is never stacked.

Chapter: 03 (AlignedReID, re-ranking) and the book page "Evaluation at scale".
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import tqdm

from reid_core.evaluation.rerank.neighbors import NeighborLists, smallest_k_stable, squared_float32

__all__ = ["dense_squared_rows", "dense_neighbors", "dense_pair_distances"]


def _write_squared(dst: Tensor, src: Tensor) -> None:
    """``dst[...] = float32(src * src)``; one pass when ``src`` is float32 already."""
    if src.dtype == torch.float32:
        torch.mul(src, src, out=dst)  # reading a transposed view here beats copying it first
    else:
        dst.copy_(squared_float32(src))


def dense_squared_rows(
    q_g: Tensor, q_q: Tensor, g_g: Tensor, start: int, stop: int, out: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Rows ``start:stop`` of :math:`\\tilde d` times their scales, and the scales.

    Row i of :math:`\\tilde d` is column i of the stacked matrix
    ``A = [[q_q, q_g], [q_g^T, g_g]]``, squared and divided by its maximum :math:`s_i`;
    this returns the squared column and :math:`s_i` (divide to get :math:`\\tilde d`).

    Args:
        q_g: (Q, G) query-gallery distances.
        q_q: (Q, Q) query-query distances.
        g_g: (G, G) gallery-gallery distances.
        start: first row (0 <= start < stop <= Q + G).
        stop: one past the last row.
        out: optional float32 buffer of at least (stop - start) * (Q + G) elements, reused
            between calls (fresh large allocations cost page faults on every chunk).

    Returns:
        ``(squared, scale)``: (stop - start, Q + G) float32 (a view of ``out`` if given) and
        (stop - start,) float32.

    Raises:
        ValueError: a column is all zero, or holds NaN or inf.
    """
    num_query, total = q_g.shape[0], q_g.shape[0] + q_g.shape[1]
    count = stop - start
    if out is None:
        out = torch.empty(count * total, dtype=torch.float32, device=q_g.device)
    rows = out[: count * total].view(count, total)  # (c, N)
    split = max(0, min(stop, num_query) - start)  # rows that are query columns of A
    if split:  # columns of A that belong to queries: [q_q; q_g^T][:, i]
        a, b = start, start + split
        _write_squared(rows[:split, :num_query], q_q[:, a:b].T)
        _write_squared(rows[:split, num_query:], q_g[a:b])
    if split < count:  # columns of A that belong to gallery images: [q_g; g_g][:, i - Q]
        a, b = start + split - num_query, stop - num_query
        _write_squared(rows[split:, :num_query], q_g[:, a:b].T)
        _write_squared(rows[split:, num_query:], g_g[:, a:b].T)
    scale = rows.amax(dim=1)  # (c,) NaN propagates through amax, inf stays inf
    bad = ~(torch.isfinite(scale) & (scale > 0))
    if bool(bad.any()):
        col = int(start + bad.nonzero()[0, 0])
        raise ValueError(
            f"column {col} of the stacked distance matrix [[q_q_dist, q_g_dist], [q_g_dist^T, g_g_dist]] "
            "holds NaN or inf, or is all zero: the original distance cannot be normalised"
        )
    return rows, scale  # (c, N), (c,)


@torch.no_grad()
def dense_neighbors(
    q_g: Tensor, q_q: Tensor, g_g: Tensor, num_neighbors: int, chunk_size: int, progress: bool = False
) -> NeighborLists:
    """Initial rank lists from the three dense distance blocks, ``chunk_size`` rows at a time.

    Args:
        q_g: (Q, G) query-gallery distances.
        q_q: (Q, Q) query-query distances.
        g_g: (G, G) gallery-gallery distances.
        num_neighbors: K, columns of the rank lists.
        chunk_size: rows of :math:`\\tilde d` held at once (memory: chunk x N floats).
        progress: show a tqdm bar.

    Returns:
        :class:`NeighborLists` with rank (N, K) and scale (N,).
    """
    total = q_g.shape[0] + q_g.shape[1]
    rank = torch.empty(total, num_neighbors, dtype=torch.long, device=q_g.device)
    scale = torch.empty(total, dtype=torch.float32, device=q_g.device)
    buffer = torch.empty(min(chunk_size, total) * total, dtype=torch.float32, device=q_g.device)
    for start in tqdm(range(0, total, chunk_size), desc="re-ranking: rank lists", disable=not progress, leave=False):
        stop = min(start + chunk_size, total)
        squared, scale[start:stop] = dense_squared_rows(q_g, q_q, g_g, start, stop, buffer)  # (c, N)
        rank[start:stop] = smallest_k_stable(squared, num_neighbors, scale[start:stop])
    return NeighborLists(rank=rank, scale=scale)


def dense_pair_distances(q_g: Tensor, q_q: Tensor, g_g: Tensor, scale: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """:math:`\\tilde d(i, j) = A_{ji}^2 / s_i` for a list of pairs, read from the blocks.

    Args:
        q_g: (Q, G), q_q: (Q, Q), g_g: (G, G) distance blocks.
        scale: (N,) the scales :math:`s_i`.
        rows: (P,) int64 row indices i.
        cols: (P,) int64 column indices j.

    Returns:
        (P,) float32.
    """
    num_query = q_g.shape[0]
    a, b = cols, rows  # A[a, b]: the stacked matrix is read transposed
    out = torch.empty(rows.shape[0], dtype=torch.float32, device=q_g.device)
    top, left = a < num_query, b < num_query
    for mask, block, ia, ib in (
        (top & left, q_q, a, b),
        (top & ~left, q_g, a, b - num_query),
        (~top & left, q_g, b, a - num_query),  # A[a, b] = q_g^T[a - Q, b] = q_g[b, a - Q]
        (~top & ~left, g_g, a - num_query, b - num_query),
    ):
        sel = mask.nonzero().flatten()  # (P_k,)
        if sel.numel():
            out[sel] = squared_float32(block[ia[sel], ib[sel]])
    return out / scale[rows]
