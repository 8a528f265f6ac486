r"""The fast, batched form of AlignedReID's aligned local distance (the paper's idea, in its
readable form, is :mod:`reid_core.alignment.recurrence`; the tests check the two agree).

How it is computed here, for N x M pairs at once:

* All stripe-to-stripe squared distances of a block of pairs come from **one matrix product**
  of stripe features augmented with two columns, :math:`[f, \lVert f\rVert^2, 1] \cdot
  [-2g, 1, \lVert g\rVert^2]^\top = \lVert f - g\rVert^2`, so no separate pass adds the norms.
* :math:`\tanh(d/2) = 2\,\sigma(d) - 1`; ``sigmoid`` is several times cheaper than ``tanh``
  on the CPU, so the cells hold :math:`\sigma(d) - \tfrac12 = d_{i,j}/2` and the final sum is
  doubled.
* The product is laid out stripe-major, ``(S_x, n, S_y, m)``, so the pairs of one cell form a
  contiguous (n, m) plane. The DP walks the :math:`S_x + S_y - 1` anti-diagonals: all cells of a
  diagonal depend only on the previous one, and a diagonal is a constant-stride view of the
  table, so each step is two vectorised in-place ops over all its cells and all pairs. No Python
  loop over pairs or over cells.
* Pairs are processed in blocks of ``chunk_size`` (default 16,384 on the CPU: 64 queries x
  256 gallery images, a 4 MiB table that stays in the cache), and buffers are reused across
  blocks. The first row and column of the table are one strided add per anti-diagonal.
* Every pass over the table costs about a tenth of the product, so passes are few: the norms
  ride in the product, ``sigmoid`` replaces ``tanh``, and the clamp of rounding-negative
  squared distances is skipped. Such a cell (nearly identical stripes) turns NaN, the NaN
  reaches the pair's result, and those few pairs are recomputed from exact differences.
* Gradients: the DP value is the sum of the costs on the optimal path, so its gradient with
  respect to the cost table is the 0/1 indicator of that path (a subgradient at ties). A custom
  autograd function traces the path back from the DP table; autograd handles the rest.

Chapter: ``notebooks/03_alignedreid.py``.

Example:
    >>> x, y = torch.randn(4, 8, 128), torch.randn(6, 8, 128)
    >>> aligned_distance(x, y).shape
    torch.Size([4, 6])
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from tqdm import tqdm

__all__ = ["aligned_distance", "pairwise_aligned_distance", "paired_aligned_distance"]

_CPU_CHUNK = 16384  # pairs per block on the CPU: 16384 * 8 * 8 floats = 4 MiB, cache-sized
_CUDA_CHUNK = 1 << 20  # pairs per block on a GPU: large blocks amortise kernel launches
_PROGRESS_PAIRS = 1 << 25  # with progress=None, show a bar from this many pairs (seconds on a CPU)
_SQRT_EPS = 1e-12  # clamp under sqrt on the autograd path (d sqrt / dx is infinite at 0)


def _check_local(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of local features (N, S, D), got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must be local features of shape (N, S, D), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"{name} needs at least one stripe and one channel, got shape {tuple(x.shape)}")


def _compute_dtype(x: Tensor, y: Tensor) -> torch.dtype:
    """float32 for half inputs (the norm expansion and the path sums need the mantissa)."""
    dtype = torch.promote_types(x.dtype, y.dtype)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _augment(x: Tensor, side: str) -> Tensor:
    """Stripe-major features with two extra columns, so one product gives squared distances.

    Args:
        x: (N, S, D) local features.
        side: ``"row"`` builds ``[f, |f|^2, 1]``; ``"col"`` builds ``[-2g, 1, |g|^2]``.

    Returns:
        (S, N, D + 2); ``row @ col.T`` is ``|f|^2 + |g|^2 - 2 f.g = |f - g|^2``.
    """
    x = x.transpose(0, 1)  # (S, N, D)
    sq_norm = (x * x).sum(dim=2, keepdim=True)  # (S, N, 1)
    ones = torch.ones_like(sq_norm)  # (S, N, 1)
    if side == "row":
        return torch.cat([x, sq_norm, ones], dim=2)  # (S, N, D + 2)
    return torch.cat([-2.0 * x, ones, sq_norm], dim=2)  # (S, N, D + 2)


def _block_shape(n_rows: int, n_cols: int, chunk_size: int) -> tuple[int, int]:
    """Split a chunk of ``chunk_size`` pairs into (queries, gallery) = (n, m), m about 4n.

    A wide block keeps the innermost (gallery) axis long, so the strided DP views run long
    vectorised inner loops, while the query stripes (the rows of the product) stay many enough
    for an efficient matrix product.
    """
    m = max(1, min(n_cols, chunk_size, int(math.sqrt(4 * chunk_size))))
    n = max(1, min(n_rows, chunk_size // m))
    return n, m


def _accumulate_path_costs_(table: Tensor, scratch: Tensor | None = None) -> Tensor:
    """Overwrite a cost table with the DP's cumulative costs, in place; returns the (n, m) result.

    :math:`S_{i,j} = \\min(S_{i-1,j}, S_{i,j-1}) + d_{i,j}` for all pairs at once, one
    anti-diagonal at a time.

    Args:
        table: (S_x, n, S_y, m) contiguous costs :math:`d_{i,j}` of n x m pairs.
        scratch: optional buffer with at least ``min(S_x, S_y) * n * m`` elements, reused
            across calls to avoid allocations.

    Returns:
        (n, m) view of :math:`S_{S_x-1, S_y-1}` (the last cell) inside ``table``.
    """
    if not table.is_contiguous():
        raise ValueError("table must be contiguous: the anti-diagonal views assume its strides")
    sx, n, sy, m = table.shape
    longest = min(sx, sy)
    if scratch is None or scratch.numel() < longest * n * m:
        scratch = torch.empty(longest * n * m, dtype=table.dtype, device=table.device)
    row_step = n * sy * m  # storage step from cell (i, j) to (i + 1, j)
    diag_step = row_step - m  # from (i, j) to (i + 1, j - 1): along an anti-diagonal
    base = table.storage_offset()
    # Edges: cell (0, k) has only a left neighbour, (k, 0) only an upper one. Both sit on
    # anti-diagonal k, so one strided add updates the pair (cheaper than two cumsums).
    for k in range(1, max(sx, sy)):
        if k < sx and k < sy:
            edge = table.as_strided((2, n, m), (k * diag_step, sy * m, 1), base + k * m)  # (0, k), (k, 0)
            before = table.as_strided((2, n, m), ((k - 1) * diag_step, sy * m, 1), base + (k - 1) * m)
            edge.add_(before)  # (2, n, m)
        elif k < sy:
            table[0, :, k].add_(table[0, :, k - 1])  # (n, m)
        else:
            table[k, :, 0].add_(table[k - 1, :, 0])  # (n, m)
    for k in range(2, sx + sy - 1):  # interior cells i + j = k with i, j >= 1
        lo, hi = max(1, k - sy + 1), min(k - 1, sx - 1)
        if lo > hi:
            continue
        size, stride = (hi - lo + 1, n, m), (diag_step, sy * m, 1)
        first = base + lo * diag_step + k * m  # storage offset of cell (lo, k - lo), pair (0, 0)
        cells = table.as_strided(size, stride, first)  # (L, n, m)
        up = table.as_strided(size, stride, first - row_step)  # cells (i - 1, j)
        left = table.as_strided(size, stride, first - m)  # cells (i, j - 1)
        best = scratch[: size[0] * n * m].view(size)  # (L, n, m)
        torch.minimum(up, left, out=best)
        cells.add_(best)
    return table[sx - 1, :, sy - 1]  # (n, m)


def _trace_paths(table: Tensor) -> tuple[Tensor, Tensor]:
    """Back-track the shortest paths through a cumulative DP table, all pairs at once.

    Args:
        table: (S_x, n, S_y, m) cumulative costs from :func:`_accumulate_path_costs_`.

    Returns:
        ``(rows, cols)``, each (S_x + S_y - 1, n, m) long: the cells of every pair's path in
        order from (0, 0) to (S_x - 1, S_y - 1). At a tie the move up is taken.
    """
    sx, n, sy, m = table.shape
    flat = table.reshape(-1)
    row_step = n * sy * m
    device = table.device
    pair_offset = torch.arange(n, device=device).view(n, 1) * (sy * m) + torch.arange(m, device=device).view(
        1, m
    )  # (n, m)
    i = torch.full((n, m), sx - 1, dtype=torch.long, device=device)
    j = torch.full((n, m), sy - 1, dtype=torch.long, device=device)
    inf = torch.tensor(float("inf"), dtype=table.dtype, device=device)
    rows, cols = [i], [j]
    for _ in range(sx + sy - 2):
        here = i * row_step + j * m + pair_offset  # (n, m) storage index of cell (i, j)
        up = torch.where(i > 0, flat[(here - row_step).clamp_min(0)], inf)  # (n, m)
        left = torch.where(j > 0, flat[(here - m).clamp_min(0)], inf)  # (n, m)
        go_up = (up <= left).long()  # (n, m)
        i, j = i - go_up, j - (1 - go_up)
        rows.append(i)
        cols.append(j)
    return torch.stack(rows[::-1]), torch.stack(cols[::-1])  # (L, n, m) each


def _path_indicator(table: Tensor) -> Tensor:
    """(S_x, n, S_y, m) 0/1 mask of the cells on each pair's shortest path."""
    sx, n, sy, m = table.shape
    rows, cols = _trace_paths(table)  # (L, n, m)
    pair_offset = torch.arange(n, device=table.device).view(n, 1) * (sy * m) + torch.arange(
        m, device=table.device
    ).view(1, m)  # (n, m)
    index = rows * (n * sy * m) + cols * m + pair_offset  # (L, n, m)
    mask = torch.zeros(table.numel(), dtype=table.dtype, device=table.device)
    mask[index.reshape(-1)] = 1.0
    return mask.view(sx, n, sy, m)


class _ShortestPath(torch.autograd.Function):
    """Shortest right/down path value of each pair; the gradient is the path's indicator."""

    @staticmethod
    def forward(ctx, cost: Tensor) -> Tensor:  # type: ignore[override]
        """cost (S_x, n, S_y, m) -> (n, m) path values."""
        table = cost.detach().clone(memory_format=torch.contiguous_format)  # (S_x, n, S_y, m)
        value = _accumulate_path_costs_(table).clone()  # (n, m)
        ctx.save_for_backward(table)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        """dL/dcost = dL/dvalue on the optimal path's cells, 0 elsewhere."""
        (table,) = ctx.saved_tensors
        return _path_indicator(table) * grad[None, :, None, :]  # (S_x, n, S_y, m)


def _half_cost_differentiable(rows: Tensor, cols: Tensor, self_cells: Tensor | None) -> Tensor:
    """Autograd-friendly :math:`d_{i,j} / 2 = \\sigma(\\lVert f_i - g_j\\rVert) - 1/2` of a block.

    Args:
        rows: (S_x * n, D + 2) augmented row features; cols: (S_y * m, D + 2) augmented columns.
        self_cells: optional (S_x * n, S_y * m) bool mask of cells comparing a stripe with
            itself, set to exactly 0 (the expansion leaves rounding noise there).

    Returns:
        (S_x * n, S_y * m) half costs.
    """
    sq = rows @ cols.T  # (S_x n, S_y m) squared stripe distances
    if self_cells is not None:
        sq = sq.masked_fill(self_cells, 0.0)
    dist = torch.where(sq > 0, sq.clamp_min(_SQRT_EPS).sqrt(), sq * 0.0)  # (S_x n, S_y m)
    return torch.sigmoid(dist) - 0.5


def _half_cost_(out: Tensor, rows: Tensor, cols: Tensor, self_cells: Tensor | None, clamp: bool) -> Tensor:
    """In-place, allocation-free version of :func:`_half_cost_differentiable` writing into ``out``.

    With ``clamp=False`` the pass that clamps rounding-negative squared distances is skipped:
    such a cell (two nearly identical stripes) becomes NaN, the NaN reaches the pair's final
    DP cell through ``minimum``, and the caller recomputes that pair exactly.
    """
    torch.mm(rows, cols.T, out=out)  # (S_x n, S_y m) squared stripe distances
    if self_cells is not None:
        out.masked_fill_(self_cells, 0.0)
    if clamp:
        out.clamp_min_(0.0)
    return out.sqrt_().sigmoid_().sub_(0.5)


def _self_cell_mask(sx: int, sy: int, a0: int, n: int, b0: int, m: int, device: torch.device) -> Tensor | None:
    """Cells (s, i, s, i) of a block when x and y are the same tensor; ``None`` if the block has none.

    Returns:
        (S_x * n, S_y * m) bool mask, or ``None``.
    """
    if max(a0, b0) >= min(a0 + n, b0 + m):  # the block's query and gallery ranges do not overlap
        return None
    same_pair = torch.arange(a0, a0 + n, device=device).view(n, 1) == torch.arange(b0, b0 + m, device=device)  # (n, m)
    same_stripe = torch.eye(sx, sy, dtype=torch.bool, device=device)  # (S_x, S_y)
    return (same_stripe[:, None, :, None] & same_pair[None, :, None, :]).view(sx * n, sy * m)


def aligned_distance(
    x: Tensor,
    y: Tensor,
    chunk_size: int | None = None,
    return_path: bool = False,
    progress: bool | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""AlignedReID local distance between every x and every y (batched, chunked, differentiable).

    .. math::
        D(x, y) = \min_{\text{right/down paths } P} \sum_{(i, j) \in P}
            \tanh\!\big(\lVert x_i - y_j \rVert_2 / 2\big)

    (Zhang et al. 2017, AlignedReID, Sec. 3.1); see the module docstring for the algorithm.

    Args:
        x: (N, S_x, D) local (stripe) features of the queries.
        y: (M, S_y, D) local features of the gallery; moved to ``x``'s device. ``S_x`` and
            ``S_y`` may differ (the path still runs corner to corner).
        chunk_size: pairs per block (memory per block: ``chunk_size * S_x * S_y`` floats).
            ``None``: 16,384 on the CPU (cache-sized), 2**20 on a GPU.
        return_path: also return every pair's path cells (N * M * (S_x + S_y - 1) * 2 longs:
            meant for small inputs and plots).
        progress: tqdm bar over the blocks; ``None``: on from 2**25 pairs.

    Returns:
        (N, M) distances in ``[0, S_x + S_y - 1)``, float32 for half-precision inputs, else
        the inputs' dtype; with ``return_path``, also (N, M, S_x + S_y - 1, 2) long path cells
        (row, column) from (0, 0) to (S_x - 1, S_y - 1). Differentiable with respect to both
        inputs when grad mode is on and either requires grad.
    """
    return _aligned_distance(x, y, chunk_size, return_path, same=False, progress=progress)


def _aligned_distance(
    x: Tensor, y: Tensor, chunk_size: int | None, return_path: bool, same: bool, progress: bool | None = False
) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`aligned_distance`; ``same`` says y is x, so cells (s, i, s, i) are exactly 0."""
    _check_local(x, "x")
    _check_local(y, "y")
    if x.shape[2] != y.shape[2]:
        raise ValueError(f"x and y must have the same feature dim D, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if chunk_size is None:
        chunk_size = _CUDA_CHUNK if x.device.type == "cuda" else _CPU_CHUNK
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (pairs per block), got {chunk_size!r}")
    dtype = _compute_dtype(x, y)
    y = y.to(x.device)
    n_total, sx, _ = x.shape
    m_total, sy, _ = y.shape
    path_len = sx + sy - 1
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    if progress is None:
        progress = n_total * m_total >= _PROGRESS_PAIRS
    if n_total == 0 or m_total == 0:
        empty = torch.zeros(n_total, m_total, dtype=dtype, device=x.device)
        return (
            (empty, torch.zeros(n_total, m_total, path_len, 2, dtype=torch.long, device=x.device))
            if return_path
            else empty
        )
    # Autocast would run the product in float16; the distance needs float32 or better.
    with torch.autocast(device_type=x.device.type, enabled=False):
        rows = _augment(x.to(dtype), "row")  # (S_x, N, D + 2)
        cols = _augment(y.to(dtype), "col")  # (S_y, M, D + 2)
        n_blk, m_blk = _block_shape(n_total, m_total, chunk_size)
        row_blocks = [rows[:, a : a + n_blk].reshape(-1, rows.shape[2]) for a in range(0, n_total, n_blk)]
        col_blocks = [cols[:, b : b + m_blk].reshape(-1, cols.shape[2]) for b in range(0, m_total, m_blk)]
        paths = torch.empty(n_total, m_total, path_len, 2, dtype=torch.long, device=x.device) if return_path else None
        if needs_grad:
            dist = _aligned_blocks_autograd(row_blocks, col_blocks, sx, sy, paths, n_blk, m_blk, same)
        else:
            with torch.no_grad():
                dist = _aligned_blocks_inplace(
                    row_blocks, col_blocks, sx, sy, paths, n_blk, m_blk, n_total, m_total, same, progress
                )
                if paths is None:  # the blocks skipped the clamp: redo pairs that met a negative
                    _recompute_nan_pairs_(dist, x.to(dtype), y.to(dtype))
    return (dist, paths) if return_path else dist


def _store_paths(paths: Tensor | None, table: Tensor, a: int, b: int) -> None:
    """Write the traced paths of one block of pairs into ``paths[a:a+n, b:b+m]``."""
    if paths is None:
        return
    rows, cols = _trace_paths(table)  # (L, n, m) each
    n, m = rows.shape[1:]
    paths[a : a + n, b : b + m] = torch.stack([rows, cols], dim=-1).permute(1, 2, 0, 3)  # (n, m, L, 2)


def _aligned_blocks_inplace(
    row_blocks: list[Tensor],
    col_blocks: list[Tensor],
    sx: int,
    sy: int,
    paths: Tensor | None,
    n_blk: int,
    m_blk: int,
    n_total: int,
    m_total: int,
    same: bool,
    progress: bool,
) -> Tensor:
    """The no-grad path: reused buffers, every op in place. Returns (N, M).

    On a CPU with several intra-op threads the blocks go to a pool of single-threaded
    workers (see :func:`_cpu_workers`); elsewhere they run one after the other.
    """
    ref = row_blocks[0]
    out = torch.empty(n_total, m_total, dtype=ref.dtype, device=ref.device)
    workspace = threading.local()  # per-thread buffers, reused across that thread's blocks

    def run_block(a: int, b: int) -> None:
        row, col = row_blocks[a], col_blocks[b]
        n, m = row.shape[0] // sx, col.shape[0] // sy
        if not hasattr(workspace, "buffer"):
            workspace.buffer = torch.empty(sx * n_blk * sy * m_blk, dtype=ref.dtype, device=ref.device)
            workspace.scratch = torch.empty(min(sx, sy) * n_blk * m_blk, dtype=ref.dtype, device=ref.device)
        a0, b0 = a * n_blk, b * m_blk
        self_cells = _self_cell_mask(sx, sy, a0, n, b0, m, row.device) if same else None
        cells = workspace.buffer[: sx * n * sy * m].view(sx * n, sy * m)
        half = _half_cost_(cells, row, col, self_cells, clamp=paths is not None)  # (S_x n, S_y m)
        table = half.view(sx, n, sy, m)
        out[a0 : a0 + n, b0 : b0 + m] = _accumulate_path_costs_(table, workspace.scratch)  # disjoint slices
        _store_paths(paths, table, a0, b0)

    blocks = [(a, b) for b in range(len(col_blocks)) for a in range(len(row_blocks))]
    bar = tqdm(
        total=len(blocks), desc="aligned distance", unit="block", disable=not progress, leave=False, mininterval=1.0
    )
    threads = torch.get_num_threads()
    if ref.device.type == "cpu" and threads > 1 and len(blocks) > 1:
        futures = [_cpu_workers(threads).submit(run_block, a, b) for a, b in blocks]
        try:
            for future in as_completed(futures):
                future.result()  # re-raises a worker's exception here
                bar.update(1)
        except BaseException:  # an error or Ctrl-C: drop the blocks not started yet
            for future in futures:
                future.cancel()
            raise
    else:
        for a, b in blocks:
            run_block(a, b)
            bar.update(1)
    bar.close()
    return out.mul_(2.0)  # the cells held d / 2


_WORKER_POOLS: dict[int, ThreadPoolExecutor] = {}
_WORKER_POOLS_LOCK = threading.Lock()


def _forget_worker_pools() -> None:
    """In a forked child the pools' threads do not exist: start afresh (e.g. DataLoader workers)."""
    global _WORKER_POOLS_LOCK
    _WORKER_POOLS.clear()
    _WORKER_POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_pools)


def _cpu_workers(count: int) -> ThreadPoolExecutor:
    """A pool of ``count`` threads whose torch ops each run on one core.

    Why: a block is some 35 small ops. With torch's intra-op threads every op is an OpenMP
    parallel region ending in a barrier, and on a busy machine a descheduled partner thread
    stalls each barrier (measured here: 8x slower than with independent workers under load).
    Independent single-threaded workers, one block at a time, never wait for each other; the
    ops release the GIL. ATen keeps the thread count per thread (the OpenMP ICV and MKL's
    local setting), so each worker sets 1 for itself once; ``torch.set_num_threads`` also
    stores a process default for new threads, which is restored right after the workers start.
    """
    with _WORKER_POOLS_LOCK:
        pool = _WORKER_POOLS.get(count)
        if pool is None:
            started = threading.Barrier(count)

            def single_threaded() -> None:
                torch.get_num_threads()  # ATen's lazy per-thread init first, or it would undo the next line
                torch.set_num_threads(1)

            pool = ThreadPoolExecutor(count, thread_name_prefix="aligned-distance", initializer=single_threaded)
            for waiter in [pool.submit(started.wait) for _ in range(count)]:  # forces all workers to start
                waiter.result()
            torch.set_num_threads(count)  # the process default again (this thread's count is unchanged)
            _WORKER_POOLS[count] = pool
    return pool


def _recompute_nan_pairs_(dist: Tensor, x: Tensor, y: Tensor) -> None:
    """Recompute, from exact stripe differences, the pairs of ``dist`` (N, M) that are NaN.

    NaN inputs stay NaN (nothing is silently replaced); rounding-negative squared distances
    of nearly identical stripes (see :func:`_half_cost_`) get their true value.
    """
    bad = torch.isnan(dist).nonzero()  # (K, 2) query and gallery indices
    if bad.shape[0] > 0:
        dist[bad[:, 0], bad[:, 1]] = paired_aligned_distance(x[bad[:, 0]], y[bad[:, 1]])  # (K,)


def _aligned_blocks_autograd(
    row_blocks: list[Tensor],
    col_blocks: list[Tensor],
    sx: int,
    sy: int,
    paths: Tensor | None,
    n_blk: int,
    m_blk: int,
    same: bool,
) -> Tensor:
    """The differentiable path: out-of-place costs, :class:`_ShortestPath` per block. Returns (N, M)."""
    out_rows = []
    for a, row in enumerate(row_blocks):
        n = row.shape[0] // sx
        out_blocks = []
        for b, col in enumerate(col_blocks):
            m = col.shape[0] // sy
            self_cells = _self_cell_mask(sx, sy, a * n_blk, n, b * m_blk, m, row.device) if same else None
            half = _half_cost_differentiable(row, col, self_cells).view(sx, n, sy, m)  # (S_x, n, S_y, m)
            out_blocks.append(_ShortestPath.apply(half))  # (n, m)
            if paths is not None:
                with torch.no_grad():
                    table = half.detach().clone()
                    _accumulate_path_costs_(table)
                    _store_paths(paths, table, a * n_blk, b * m_blk)
        out_rows.append(torch.cat(out_blocks, dim=1))  # (n, M)
    return 2.0 * torch.cat(out_rows, dim=0)  # (N, M); the cells held d / 2


def pairwise_aligned_distance(x: Tensor, chunk_size: int | None = None) -> Tensor:
    """Aligned distance between all pairs of a training batch, differentiable.

    The same as ``aligned_distance(x, x)``, except that a stripe compared with itself costs
    exactly 0 (the norm expansion would leave rounding noise there, and the square root an
    unbounded gradient). The diagonal is *not* 0: a right/down path visits
    :math:`2S - 1` cells, so an image's distance to itself is the cheapest staircase through
    the costs of its neighbouring stripes.

    Args:
        x: (B, S, D) local features of a batch.
        chunk_size: see :func:`aligned_distance`.

    Returns:
        (B, B) distances, symmetric up to float rounding.
    """
    return _aligned_distance(x, x, chunk_size, return_path=False, same=True)  # type: ignore[return-value]


def paired_aligned_distance(x: Tensor, y: Tensor) -> Tensor:
    """Aligned distance of matched rows only, ``D(x[b], y[b])``, differentiable.

    What a triplet loss needs when the hard positive and negative were mined with another
    distance: B pairs instead of B x B. Stripe distances come from the differences directly
    (exact, also for a sample paired with itself).

    Args:
        x: (B, S_x, D) local features; y: (B, S_y, D) local features of the partners.

    Returns:
        (B,) distances.
    """
    _check_local(x, "x")
    _check_local(y, "y")
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(
            f"x and y must be (B, S_x, D) and (B, S_y, D) with the same B and D, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    dtype = _compute_dtype(x, y)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.to(dtype), y.to(device=x.device, dtype=dtype)
        diff = x.unsqueeze(2) - y.unsqueeze(1)  # (B, S_x, S_y, D)
        sq = (diff * diff).sum(dim=3)  # (B, S_x, S_y)
        dist = torch.where(sq > 0, sq.clamp_min(_SQRT_EPS).sqrt(), sq * 0.0)  # (B, S_x, S_y)
        half = (torch.sigmoid(dist) - 0.5).permute(1, 0, 2).unsqueeze(3)  # (S_x, B, S_y, 1)
        return 2.0 * _ShortestPath.apply(half).squeeze(1)  # (B,)
