r"""The sparse stages of k-reciprocal re-ranking (Zhong et al., CVPR 2017, Sec. 3-4).

Given the initial rank lists (:mod:`reid_core.evaluation.rerank.neighbors`), every step here
touches only a few dozen entries per image, so the whole encoding is held as compressed
sparse rows (CSR: ``crow`` (N+1,), ``col`` (nnz,), ``val`` (nnz,)) instead of the dense
(N, N) matrices of the common implementation:

1. k-reciprocal set :math:`R(p, k_1) = \{g \in N(p, k_1) : p \in N(g, k_1)\}` with
   :math:`N(p, k)` the top-(k+1) list (it holds p itself).
2. Expansion: each :math:`c \in R(p, k_1)` whose set :math:`R(c, \mathrm{round}(k_1/2))`
   shares more than 2/3 of its members with :math:`R(p, k_1)` adds that set, giving
   :math:`R^*(p)`.
3. Gaussian encoding :math:`V_{p,g} = e^{-\tilde d(p, g)}` on :math:`R^*(p)`, each row
   normalised to sum 1.
4. Local query expansion :math:`V_p \leftarrow \frac{1}{k_2}\sum_{g \in N(p, k_2)} V_g`
   (the first k2 entries of the rank list, p included; skipped when k2 = 1).
5. Jaccard distance :math:`d_J(p, g) = 1 - \frac{m}{2 - m}`,
   :math:`m = \sum_j \min(V_{p,j}, V_{g,j})` (equal to
   :math:`1 - \sum\min / \sum\max` because rows sum to 1), computed only against gallery
   rows through the column index of V (an inverted file).

Chapter: 03 (AlignedReID, re-ranking) and the book page "Evaluation at scale".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

__all__ = [
    "SparseRows",
    "GalleryColumns",
    "reciprocal_mask",
    "k_reciprocal_expansion",
    "gaussian_encoding",
    "local_query_expansion",
    "local_query_expansion_size",
    "gallery_columns",
    "jaccard_overlap",
    "plan_query_chunks",
]


@dataclass
class SparseRows:
    """A sparse (N, N) matrix in compressed rows (columns in no particular order within a row).

    Attributes:
        crow: (N + 1,) int64 row pointers.
        col: (nnz,) int64 column indices.
        val: (nnz,) float32 values (empty for a pattern without values).
    """

    crow: Tensor
    col: Tensor
    val: Tensor

    @property
    def row(self) -> Tensor:
        """(nnz,) int64 row index of every entry."""
        counts = self.crow[1:] - self.crow[:-1]  # (N,)
        return torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts)

    def to_dense(self) -> Tensor:
        """(N, N) float32 dense copy (for tests and small examples)."""
        n = self.crow.shape[0] - 1
        dense = torch.zeros(n, n, dtype=torch.float32, device=self.col.device)
        dense[self.row, self.col] = self.val
        return dense


@dataclass
class GalleryColumns:
    """The gallery rows of V indexed by column: the inverted file of the Jaccard step.

    Attributes:
        colptr: (N + 1,) int64, the entries of column k are ``colptr[k]:colptr[k + 1]``.
        gallery: (nnz_g,) int64 gallery index (row - Q) of each entry.
        val: (nnz_g,) float32 values.
    """

    colptr: Tensor
    gallery: Tensor
    val: Tensor


def _segment_positions(starts: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten the index ranges ``starts[s] : starts[s] + lengths[s]``.

    Args:
        starts: (S,) int64 first position of each segment.
        lengths: (S,) int64 segment lengths.

    Returns:
        ``(segment, position)``: (T,) int64 each, T = lengths.sum(); which segment each
        element came from, and its position.
    """
    segment = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)  # (T,)
    first = torch.cumsum(lengths, 0) - lengths  # (S,) offset of each segment in the output
    within = torch.arange(segment.shape[0], device=lengths.device) - first[segment]  # (T,)
    return segment, starts[segment] + within


@torch.no_grad()
def reciprocal_mask(forward: Tensor, chunk_size: int) -> Tensor:
    """Which neighbours in each top list are reciprocal.

    Args:
        forward: (N, k) int64, ``forward[i]`` = the top-k list of i (i usually first).
        chunk_size: rows at a time (memory: chunk x k x k).

    Returns:
        (N, k) bool, ``mask[i, t]`` = i appears in ``forward[forward[i, t]]``.
    """
    n = forward.shape[0]
    mask = torch.empty(forward.shape, dtype=torch.bool, device=forward.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        backward = forward[forward[start:stop]]  # (c, k, k)
        me = torch.arange(start, stop, device=forward.device).view(-1, 1, 1)  # (c, 1, 1)
        mask[start:stop] = (backward == me).any(dim=2)
    return mask


def _csr(crow: Tensor, col: Tensor, val: Tensor, n: int) -> Tensor:
    """A torch sparse CSR (n, n) tensor (PyTorch flags the layout as beta: silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, size=(n, n))


def _masked_csr(mask: Tensor, index: Tensor) -> Tensor:
    """(N, N) sparse CSR with ones at ``(i, index[i, t])`` where ``mask[i, t]``."""
    n = mask.shape[0]
    crow = torch.zeros(n + 1, dtype=torch.long, device=mask.device)
    crow[1:] = torch.cumsum(mask.sum(1), 0)
    col = index[mask]  # (nnz,) row-major
    return _csr(crow, col, torch.ones(col.shape[0], dtype=torch.float32, device=mask.device), n)


def _sparse_rows(matrix: Tensor) -> SparseRows:
    """Unpack a torch sparse CSR tensor."""
    return SparseRows(crow=matrix.crow_indices(), col=matrix.col_indices(), val=matrix.values())


@torch.no_grad()
def k_reciprocal_expansion(rank: Tensor, k1: int, chunk_size: int = 4096, progress: bool = False) -> SparseRows:
    """The expanded k-reciprocal sets :math:`R^*(p)` of every image, as a sparse pattern.

    With R the (N, N) pattern of the sets :math:`R(p, k_1)`, H that of
    :math:`R(c, \\mathrm{round}(k_1/2))` and B[p, c] = 1 for the candidates c of p that pass
    the 2/3 test, :math:`R^*` is the pattern of R + B H, one sparse matrix product.

    Args:
        rank: (N, K) int64 rank lists, K >= k1 + 1.
        k1: the k of the k-reciprocal set.
        chunk_size: rows at a time (memory: about chunk x (k1+1)^2 x (k1/2 + 1) bytes).
        progress: show a tqdm bar.

    Returns:
        :class:`SparseRows` with the pattern (values are counts, not used); no duplicates,
        columns in no particular order within a row.
    """
    n = rank.shape[0]
    half = int(round(k1 / 2.0))  # numpy.around and round() both round half to even
    forward = rank[:, : k1 + 1]  # (N, k1+1)
    recip = reciprocal_mask(forward, chunk_size)  # (N, k1+1)
    half_list = rank[:, : half + 1]  # (N, h+1)
    half_recip = reciprocal_mask(half_list, chunk_size)  # (N, h+1)
    half_size = half_recip.sum(1).double()  # (N,) |R(c, k1/2)|
    accept = torch.empty_like(recip)  # (N, k1+1)
    for start in tqdm(range(0, n, chunk_size), desc="re-ranking: k-reciprocal sets", disable=not progress, leave=False):
        f, r = forward[start : start + chunk_size], recip[start : start + chunk_size]  # (c, k1+1)
        members = torch.where(r, f, -1)  # (c, k1+1) R(p, k1), -1 where absent
        cand_set = half_list[f]  # (c, k1+1, h+1) the half list of every candidate
        cand_mask = half_recip[f]  # (c, k1+1, h+1) its reciprocal entries
        shared = (cand_set.unsqueeze(-1) == members[:, None, None, :]).any(-1) & cand_mask  # (c, k1+1, h+1)
        # The common code compares len(intersection) > 2./3 * len(set) in float64: same here.
        accept[start : start + chunk_size] = r & (shared.sum(-1).double() > (2.0 / 3.0) * half_size[f])
    sets = _masked_csr(recip, forward)  # R
    expansion = _masked_csr(accept, forward) @ _masked_csr(half_recip, half_list)  # B H
    return _sparse_rows(sets + expansion)


def gaussian_encoding(pattern: SparseRows, dist: Tensor) -> SparseRows:
    """:math:`V_{p,g} = e^{-\\tilde d(p,g)} / \\sum_{g' \\in R^*(p)} e^{-\\tilde d(p,g')}`.

    Args:
        pattern: :math:`R^*` as :class:`SparseRows` (values ignored).
        dist: (nnz,) float32 :math:`\\tilde d(p, g)` of every entry of the pattern.

    Returns:
        :class:`SparseRows` with the same pattern and float32 values.
    """
    weight = torch.exp(-dist)  # (nnz,)
    row = pattern.row  # (nnz,)
    n = pattern.crow.shape[0] - 1
    total = torch.zeros(n, dtype=torch.float32, device=weight.device).index_add_(0, row, weight)  # (N,)
    return SparseRows(crow=pattern.crow, col=pattern.col, val=weight / total[row])


def local_query_expansion_size(v: SparseRows, rank: Tensor, k2: int) -> int:
    """Entries gathered by :func:`local_query_expansion` before merging (an upper bound on its nnz).

    Args:
        v: the encoding.
        rank: (N, K) rank lists.
        k2: neighbours averaged.

    Returns:
        The count, to check memory before expanding.
    """
    lengths = v.crow[1:] - v.crow[:-1]  # (N,)
    return int(lengths[rank[:, :k2]].sum())


@torch.no_grad()
def local_query_expansion(v: SparseRows, rank: Tensor, k2: int) -> SparseRows:
    """:math:`V_p \\leftarrow \\frac{1}{k_2} \\sum_{t < k_2} V_{\\mathrm{rank}[p, t]}` for every row p.

    One sparse product A V with A[p, rank[p, t]] = 1 (t < k2), then a division by k2, as
    ``numpy.mean`` over the rows sums first and divides last.

    Args:
        v: the Gaussian encoding.
        rank: (N, K) rank lists, K >= k2.
        k2: neighbours averaged (k2 = 1 returns ``v`` unchanged, as the common code skips it).

    Returns:
        The expanded encoding as :class:`SparseRows`.
    """
    if k2 == 1:
        return v
    n = rank.shape[0]
    neighbours = rank[:, :k2]  # (N, k2)
    average = _masked_csr(torch.ones_like(neighbours, dtype=torch.bool), neighbours)  # A
    expanded = _sparse_rows(average @ _csr(v.crow, v.col, v.val, n))
    return SparseRows(crow=expanded.crow, col=expanded.col, val=expanded.val / k2)


def gallery_columns(v: SparseRows, num_query: int) -> GalleryColumns:
    """Index the gallery rows (p >= Q) of V by column.

    Args:
        v: the (expanded) encoding.
        num_query: Q.

    Returns:
        :class:`GalleryColumns`; within a column, entries are in gallery order.
    """
    n = v.crow.shape[0] - 1
    first = int(v.crow[num_query])
    col, val = v.col[first:], v.val[first:]  # (nnz_g,)
    gallery = v.row[first:] - num_query  # (nnz_g,)
    order = torch.argsort(col, stable=True)  # (nnz_g,)
    colptr = torch.zeros(n + 1, dtype=torch.long, device=col.device)
    colptr[1:] = torch.cumsum(torch.bincount(col, minlength=n), 0)
    return GalleryColumns(colptr=colptr, gallery=gallery[order], val=val[order])


def jaccard_overlap(
    v: SparseRows, columns: GalleryColumns, start: int, stop: int, num_gallery: int, out: Tensor | None = None
) -> Tensor:
    """:math:`m(p, g) = \\sum_j \\min(V_{p,j}, V_{g,j})` for query rows ``start:stop``, all g.

    Each query entry :math:`V_{p,j}` is joined with the gallery entries of column j (the
    inverted file), and the minima are summed into a dense (rows, G) block.

    Args:
        v: the (expanded) encoding.
        columns: :func:`gallery_columns` of ``v``.
        start: first query row.
        stop: one past the last query row.
        num_gallery: G.
        out: optional flat float32 buffer of at least (stop - start) * G elements, reused.

    Returns:
        (stop - start, G) float32 (a view of ``out`` if given).
    """
    lo, hi = int(v.crow[start]), int(v.crow[stop])
    col, val = v.col[lo:hi], v.val[lo:hi]  # (E,) entries of these query rows
    counts = v.crow[start + 1 : stop + 1] - v.crow[start:stop]  # (c,)
    local_row = torch.repeat_interleave(torch.arange(stop - start, device=col.device), counts)  # (E,)
    entry, pos = _segment_positions(columns.colptr[col], columns.colptr[col + 1] - columns.colptr[col])  # (T,)
    overlap = torch.minimum(val[entry], columns.val[pos])  # (T,)
    flat = local_row[entry] * num_gallery + columns.gallery[pos]  # (T,)
    size = (stop - start) * num_gallery
    out = torch.zeros(size, dtype=torch.float32, device=val.device) if out is None else out[:size].zero_()
    out.index_add_(0, flat, overlap)
    return out.view(stop - start, num_gallery)


def plan_query_chunks(
    v: SparseRows, columns: GalleryColumns, num_query: int, num_gallery: int, max_pairs: int, max_rows: int
) -> list[tuple[int, int]]:
    """Split the queries so that each chunk's Jaccard join and dense buffer stay bounded.

    Args:
        v: the (expanded) encoding.
        columns: :func:`gallery_columns` of ``v``.
        num_query: Q.
        num_gallery: G.
        max_pairs: most (query entry, gallery entry) pairs joined at once.
        max_rows: most query rows at once (the (rows, G) buffers).

    Returns:
        ``[(start, stop), ...]`` covering 0..Q.
    """
    if num_query == 0:
        return []
    lo, hi = 0, int(v.crow[num_query])
    col_len = columns.colptr[1:] - columns.colptr[:-1]  # (N,)
    per_entry = col_len[v.col[lo:hi]]  # (E,)
    per_query = torch.zeros(num_query, dtype=torch.long, device=per_entry.device)
    counts = v.crow[1 : num_query + 1] - v.crow[:num_query]  # (Q,)
    owner = torch.repeat_interleave(torch.arange(num_query, device=counts.device), counts)  # (E,)
    per_query.index_add_(0, owner, per_entry)  # (Q,)
    cost = torch.cumsum(per_query, 0).tolist()
    chunks, start, base = [], 0, 0
    for q in range(num_query):
        if q > start and (cost[q] - base > max_pairs or q - start >= max_rows):
            chunks.append((start, q))
            start, base = q, cost[q - 1]
    chunks.append((start, num_query))
    return chunks
