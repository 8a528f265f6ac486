r"""Rank of every true match in each query's filtered list, in time set by the sizes alone.

The filtered list and the tie rule are those of :mod:`reid_core.evaluation.rank`. A query's
rank metrics need only :math:`r_i`, the 1-based rank of its :math:`i`-th true match, and

.. math::
    r_i = i + \#\{\text{valid negatives ranked before match } i\},

so each row needs a histogram of its negatives over the :math:`n + 1` intervals that the
sorted match distances :math:`t_1 \le \dots \le t_n` cut the line into, not a sorted row.

**The grid pass.** A per-row affine map :math:`x = (d - b)\,s` puts :math:`[t_1, t_n]` onto
about ``K = G / 8`` unit cells, and the cell of an item is
:math:`\lfloor \mathrm{clamp}(x, 0, K + 4) \rfloor`. Rounded subtraction and multiplication
by :math:`s > 0` never reverse an order, so the cell is a non-decreasing function of the
distance: an item in a lower cell than a match is ranked before it, one in a higher cell
after it. A (row, cell) table, built from the matches' cells, gives every item in a cell
without matches its interval at once, and one ``bincount`` of the looked-up codes makes
every row's histogram. Items that share a cell with a match (a few per match) are marked
*ambiguous* and settled exactly: a binary search, on (distance, gallery index), among the
matches of their cell only. Non-negatives (junk, the query's own identity, items left out
of a single-gallery-shot draw) are sent to a dump cell first.

Every pass over the (B, G) block is elementwise, a table lookup, a histogram or a scan for
the ambiguous items, whatever the model's quality: a weak model, whose true matches lie deep
in the list, costs what a strong one costs. Only degenerate distances (many items in the
cell of a match: heavily tied distances, or one match far beyond the others) make the exact
part large; the results stay exact.

Chapters: 01 (the protocol), book page "Evaluation at scale".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GalleryGroups", "GridWorkspace", "grid_working_bytes", "match_ranks"]

# The ambiguous items of a slice are settled in pieces of at most this many items, each
# needing about _EXACT_BYTES per item (indices, rows, search bounds, gathered values).
_EXACT_CAP = 1_000_000
_EXACT_BYTES = 96
# Working bytes per (query, gallery) element of one slice of the grid pass: the mapped
# distances (float64 at worst), the int32 cells and codes, the ambiguity mask and, at worst,
# an int64 position per element from its scan.
_GRID_BYTES = 8 + 4 + 4 + 1 + 8
# Cells per row: the interval [t_1, t_n] of a row's matches is cut into about this fraction
# of the gallery size (about 8 items per cell on average), within these bounds.
_GALLERY_PER_CELL = 8
_MIN_CELLS, _MAX_CELLS = 64, 16384
# Copies of the histogram that neighbouring columns count into (see _negative_histogram).
_LANES = 4


def grid_working_bytes(num_elements: int) -> int:
    """Peak working bytes of :func:`match_ranks` on a slice of ``num_elements`` (query, gallery) pairs."""
    return num_elements * _GRID_BYTES + min(_EXACT_CAP, num_elements) * _EXACT_BYTES


@dataclass(frozen=True)
class GalleryGroups:
    """The gallery sorted by identity, so a query's same-id images are one slice.

    Attributes:
        order: (G,) gallery indices sorted by pid (stable: ascending index within a pid).
        sorted_pid: (G,) ``g_pid[order]``.
        g_pid: (G,) gallery pids.
        g_cam: (G,) gallery cameras.
        junk: (1, G) bool, True for the junk images (pid -1), or ``None`` when there are none.
    """

    order: Tensor
    sorted_pid: Tensor
    g_pid: Tensor
    g_cam: Tensor
    junk: Tensor | None

    @staticmethod
    def build(g_pid: Tensor, g_cam: Tensor) -> GalleryGroups:
        sorted_pid, order = torch.sort(g_pid, stable=True)  # (G,), (G,)
        junk = (g_pid == -1).unsqueeze(0)  # (1, G)
        return GalleryGroups(order, sorted_pid, g_pid, g_cam, junk if bool(junk.any()) else None)


class GridWorkspace:
    """Buffers of the grid pass, allocated once and reused by every slice of an evaluation.

    Fresh buffers for every slice would cost page faults of the same order as the passes.

    Args:
        num_elements: the most (query, gallery) elements of one slice.
        device: where the work runs.
    """

    def __init__(self, num_elements: int, device: torch.device) -> None:
        self.num_elements = num_elements
        self.device = device
        self.cells = torch.empty(num_elements, dtype=torch.int32, device=device)
        self.codes = torch.empty(num_elements, dtype=torch.int32, device=device)
        self.ambiguous = torch.empty(-(-num_elements // 8) * 8, dtype=torch.bool, device=device)  # read as words
        self._mapped: dict[torch.dtype, Tensor] = {}
        self._lanes: Tensor | None = None

    def lane_offsets(self, num_g: int) -> Tensor:
        """(1, G) int32 ``column % lanes``: the histogram copy each column counts into."""
        if self._lanes is None or self._lanes.shape[1] != num_g:
            self._lanes = (torch.arange(num_g, device=self.device) % _LANES).int().unsqueeze(0)  # (1, G)
        return self._lanes

    def mapped(self, dtype: torch.dtype) -> Tensor:
        """The (num_elements,) buffer of mapped distances in ``dtype``."""
        if dtype not in self._mapped:
            self._mapped[dtype] = torch.empty(self.num_elements, dtype=dtype, device=self.device)
        return self._mapped[dtype]


def match_ranks(
    dist: Tensor, q_pid: Tensor, q_cam: Tensor, groups: GalleryGroups, keep: Tensor | None, workspace: GridWorkspace
) -> tuple[Tensor, Tensor]:
    """1-based rank of every true match of every row in its filtered list.

    Args:
        dist: (B, G) float32 or float64 distances, contiguous, no NaN.
        q_pid: (B,) query pids.
        q_cam: (B,) query cameras.
        groups: the gallery grouped by pid.
        keep: (B, G) bool gallery items each row may use (single-gallery-shot), or ``None``
            for the Market-1501 rule (drop junk and same-id same-camera images).
        workspace: buffers of at least B * G elements.

    Returns:
        ``(ranks, n_pos)``: (B, P) int64 ranks :math:`r_i` in increasing order (0 after the
        row's last match), (B,) int64 number of true matches per row.
    """
    num_b, num_g = dist.shape
    if num_b * num_g > workspace.num_elements:
        raise ValueError(f"workspace holds {workspace.num_elements} elements, the block has {num_b * num_g}")
    same_id, in_group = _same_identity(q_pid, groups)  # (B, S) x 2
    pos_dist, pos_index, n_pos = _sorted_matches(dist, q_cam, groups, keep, same_id, in_group)  # (B, P) x 2, (B,)
    max_pos = pos_dist.shape[1]
    if max_pos == 0 or not bool((n_pos > 0).any()):
        return torch.zeros(num_b, 0, dtype=torch.int64, device=dist.device), n_pos
    neg_hist = _negative_histogram(dist, keep, groups, same_id, in_group, pos_dist, pos_index, n_pos, workspace)
    neg_before = neg_hist.cumsum(1)  # (B, P): negatives before match i
    i = torch.arange(1, max_pos + 1, device=dist.device)  # (P,)
    is_real = i.unsqueeze(0) <= n_pos.unsqueeze(1)  # (B, P): not padding
    return torch.where(is_real, i + neg_before, 0), n_pos


def _same_identity(q_pid: Tensor, groups: GalleryGroups) -> tuple[Tensor, Tensor]:
    """Gallery indices of each row's own identity, padded.

    Returns:
        ``(same_id, in_group)``: (B, S) gallery indices and (B, S) bool, False on padding.
        Padding repeats the row's first slot, so it names the row's own identity whenever
        the row has one in the gallery.
    """
    num_g = groups.order.shape[0]
    lo = torch.searchsorted(groups.sorted_pid, q_pid)  # (B,)
    hi = torch.searchsorted(groups.sorted_pid, q_pid, right=True)  # (B,)
    width = int((hi - lo).max())
    slot = torch.arange(width, device=q_pid.device)  # (S,)
    in_group = slot.unsqueeze(0) < (hi - lo).unsqueeze(1)  # (B, S)
    same_id = groups.order[(lo.unsqueeze(1) + slot).clamp(max=num_g - 1)]  # (B, S)
    same_id = torch.where(in_group, same_id, same_id[:, :1])  # (B, S)
    return same_id, in_group


def _sorted_matches(
    dist: Tensor, q_cam: Tensor, groups: GalleryGroups, keep: Tensor | None, same_id: Tensor, in_group: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The valid true matches of each row, sorted by (distance, gallery index), padded.

    Args:
        dist: (B, G) distances.
        q_cam: (B,) query cameras.
        groups: the gallery grouped by pid.
        keep: (B, G) allowed items, or ``None`` for the Market-1501 rule.
        same_id: (B, S) gallery indices of the row's identity.
        in_group: (B, S) False on padding.

    Returns:
        ``(pos_dist, pos_index, n_pos)``: (B, P) distances padded with ``+inf``, (B, P) gallery
        indices padded with G, (B,) the number of matches per row.
    """
    num_g = dist.shape[1]
    if keep is None:
        ok = (groups.g_pid[same_id] != -1) & (groups.g_cam[same_id] != q_cam.unsqueeze(1))  # (B, S)
    else:
        ok = keep.gather(1, same_id)  # (B, S)
    is_pos = in_group & ok  # (B, S)
    pos_dist = torch.where(is_pos, dist.gather(1, same_id), float("inf"))  # (B, S)
    pos_index = torch.where(is_pos, same_id, num_g)  # (B, S)
    # Padding (index G) goes after real matches at +inf: order by index, then stably by distance.
    pos_index, order = torch.sort(pos_index, dim=1)  # (B, S)
    pos_dist = pos_dist.gather(1, order)  # (B, S)
    pos_dist, order = torch.sort(pos_dist, dim=1, stable=True)  # (B, S)
    pos_index = pos_index.gather(1, order)  # (B, S)
    return pos_dist, pos_index, is_pos.sum(1)


def _negative_histogram(
    dist: Tensor,
    keep: Tensor | None,
    groups: GalleryGroups,
    same_id: Tensor,
    in_group: Tensor,
    pos_dist: Tensor,
    pos_index: Tensor,
    n_pos: Tensor,
    workspace: GridWorkspace,
) -> Tensor:
    """Per row, how many valid negatives are preceded by exactly j matches (the grid pass).

    Args:
        dist: (B, G) distances.
        keep: (B, G) allowed items, or ``None`` (Market-1501 rule).
        groups: the gallery grouped by pid.
        same_id, in_group: (B, S) the row's identity in the gallery, see :func:`_same_identity`.
        pos_dist: (B, P) sorted match distances (padded with +inf).
        pos_index: (B, P) their gallery indices (padded with G).
        n_pos: (B,) matches per row.
        workspace: the buffers.

    Returns:
        (B, P) int64: entry (b, j) counts the valid negatives of row b with exactly j matches
        before them, for j < n_pos[b] (later entries are not meaningful).
    """
    num_b, num_g = dist.shape
    num_items = num_b * num_g
    max_pos = pos_dist.shape[1]
    device = dist.device
    num_cells = min(max(num_g // _GALLERY_PER_CELL, _MIN_CELLS), _MAX_CELLS)
    # Cells: 0 and 1 below t_1, about [2, K + 2] for the matches, up to K + 4 above; K + 5 dumps.
    top_cell, dump_cell = num_cells + 4, num_cells + 5
    table_width = num_cells + 6
    is_real = torch.arange(max_pos, device=device).unsqueeze(0) < n_pos.unsqueeze(1)  # (B, P)

    # 1. Cells: map, read the matches' cells, dump the non-negatives, truncate.
    offset, scale = _grid_map(pos_dist, is_real, num_cells)  # (B, 1) x 2, dist's dtype
    mapped = workspace.mapped(dist.dtype)[:num_items].view(num_b, num_g)  # (B, G)
    torch.sub(dist, offset, out=mapped)
    mapped.mul_(scale).clamp_(0, top_cell)  # (B, G): non-decreasing in the distance
    match_cell = mapped.gather(1, pos_index.clamp(max=num_g - 1)).long()  # (B, P): floor, as values are >= 0
    match_cell = torch.where(is_real, match_cell, dump_cell)  # (B, P), still sorted
    # A row whose identity is absent from the gallery has only padding, which names another
    # identity's item: it rewrites that item's own value.
    has_group = in_group[:, :1]  # (B, 1): slot 0 is real iff the row has any
    mapped.scatter_(1, same_id, torch.where(has_group, float(dump_cell), mapped.gather(1, same_id)))
    if keep is not None:
        mapped.masked_fill_(~keep, dump_cell)
    elif groups.junk is not None:
        mapped.masked_fill_(groups.junk, dump_cell)
    row = torch.arange(num_b, device=device).unsqueeze(1)  # (B, 1)
    cells = workspace.cells[:num_items].view(num_b, num_g)  # (B, G)
    cells.copy_(mapped)  # truncation = floor of the non-negative values
    cells.add_((row * table_width).int())  # (B, G) flat (row, cell) index

    # 2. Codes: row * bins + (matches in lower cells); the ambiguous ones shifted by B * bins.
    num_bins = max_pos + 2  # per row: 0..P matches before; P + 1: not a negative
    ambiguous_base = num_b * num_bins
    table = _code_table(match_cell, is_real, table_width, num_bins)  # (B, C) int32
    table[:, dump_cell] = (row.squeeze(1) * num_bins + max_pos + 1).int()
    codes = workspace.codes[:num_items]  # (B*G,)
    torch.index_select(table.view(-1), 0, cells.view(-1), out=codes)

    # 3. The ambiguous items, settled exactly.
    ambiguous_mask = workspace.ambiguous[:num_items]
    torch.ge(codes, ambiguous_base, out=ambiguous_mask)
    ambiguous = _sparse_nonzero(workspace.ambiguous, num_items)  # (A,) flat indices, row-major
    exact = torch.zeros(num_b * (max_pos + 1), dtype=torch.int64, device=device)  # (B*(P+1),)
    for s in range(0, ambiguous.numel(), _EXACT_CAP):
        flat = ambiguous[s : s + _EXACT_CAP]  # (a,)
        code = codes.index_select(0, flat).long() - ambiguous_base  # (a,) row * bins + first match of the cell
        exact += _exact_bucket_histogram(dist, flat, code, num_bins, pos_dist, pos_index, match_cell)

    # 4. The histogram of the settled codes (the ambiguous ones fall in bins never read). Two
    # or three codes of a row hold most of its items, in random order; bincount slows down
    # threefold when the same counter is hit again before its last update has finished, so
    # neighbouring columns count into different copies of the histogram (lanes).
    if _LANES > 1:
        codes.view(num_b, num_g).add_(workspace.lane_offsets(num_g) * (2 * ambiguous_base))
    counts = torch.bincount(codes, minlength=_LANES * 2 * ambiguous_base)  # (L * 2 * B * bins,)
    settled = counts.view(_LANES, 2, num_b, num_bins).sum(0)[0]  # (B, bins)
    return settled[:, :max_pos] + exact.view(num_b, max_pos + 1)[:, :max_pos]


def _code_table(match_cell: Tensor, is_real: Tensor, table_width: int, num_bins: int) -> Tensor:
    """The code of every (row, cell): ``row * bins + matches in lower cells``, plus
    ``B * bins`` where the cell holds a match (its items are ambiguous).

    Args:
        match_cell: (B, P) int64 cells of the sorted matches (padding: the dump cell).
        is_real: (B, P) False on padding.
        table_width: cells per row C.
        num_bins: histogram bins per row.

    Returns:
        (B, C) int32 codes.
    """
    num_b = match_cell.shape[0]
    starts = torch.zeros(num_b, table_width, dtype=torch.int32, device=match_cell.device)
    starts.scatter_add_(1, (match_cell + 1).clamp(max=table_width - 1), is_real.int())  # (B, C)
    table = starts.cumsum(1, dtype=torch.int32)  # (B, C): matches in lower cells
    row = torch.arange(num_b, device=match_cell.device, dtype=torch.int32).unsqueeze(1)  # (B, 1)
    table += row * num_bins
    ambiguous = table.gather(1, match_cell) + num_b * num_bins  # (B, P): the same value for one cell
    table.scatter_(1, match_cell, ambiguous)
    return table


def _sparse_nonzero(mask: Tensor, length: int) -> Tensor:
    """Indices of the True entries among the first ``length`` of a mostly-False bool buffer.

    ``nonzero`` reads its input twice (to count, then to write); on a sparse mask, scanning
    it as 8-byte words first reads one eighth of the elements, then only the words that hold
    a True are unpacked.

    Args:
        mask: (N,) bool buffer, N >= length rounded up to a multiple of 8.
        length: how many entries are meaningful.

    Returns:
        (A,) int64 indices in increasing order.
    """
    padded = -(-length // 8) * 8
    mask[length:padded] = False  # the tail may hold a previous slice's values
    words = mask[:padded].view(torch.int64)  # (padded / 8,)
    hit = words.nonzero().squeeze(1)  # (W,) words with at least one True byte
    word, byte = mask[:padded].view(-1, 8)[hit].nonzero().unbind(1)  # (A,) x 2: which hit word, which byte
    return hit[word] * 8 + byte  # (A,)


def _grid_map(pos_dist: Tensor, is_real: Tensor, num_cells: int) -> tuple[Tensor, Tensor]:
    """Per row offset b and scale s > 0 of the map x = (d - b) s, in the distances' dtype.

    The finite match distances [t_1, t_n] go to about [2, num_cells + 2]. Both are finite, so
    x is never NaN (no inf - inf, no inf * 0); infinite distances go to the clamped ends.

    Returns:
        ``(offset, scale)``: (B, 1) each.
    """
    finite = is_real & torch.isfinite(pos_dist)  # (B, P)
    any_finite = finite.any(1, keepdim=True)  # (B, 1)
    lo = torch.where(finite, pos_dist, float("inf")).amin(1, keepdim=True).double()  # (B, 1)
    hi = torch.where(finite, pos_dist, float("-inf")).amax(1, keepdim=True).double()  # (B, 1)
    lo = torch.where(any_finite, lo, 0.0)
    hi = torch.where(any_finite, hi, 0.0)
    span = hi - lo  # float64: no overflow for float32 distances
    limit = 1e30 if pos_dist.dtype == torch.float32 else 1e300
    scale = torch.where(span > 0, num_cells / span, 1.0).clamp(1 / limit, limit)  # (B, 1)
    offset = lo - 2.0 / scale  # (B, 1)
    if pos_dist.dtype == torch.float32:
        offset = offset.clamp(-3e38, 3e38)
    return offset.to(pos_dist.dtype), scale.to(pos_dist.dtype)


def _exact_bucket_histogram(
    dist: Tensor, flat: Tensor, code: Tensor, num_bins: int, pos_dist: Tensor, pos_index: Tensor, match_cell: Tensor
) -> Tensor:
    """Histogram of how many matches precede each ambiguous negative, exactly.

    An ambiguous item of row r shares its cell with the matches ``first .. last - 1`` of the
    row (sorted); the matches of lower cells are before it. A binary search among the cell's
    matches, with the tie rule (distance, then gallery index), finds how many more are.

    Args:
        dist: (B, G) distances.
        flat: (A,) flat indices into ``dist`` of ambiguous negatives.
        code: (A,) ``row * num_bins + first``.
        num_bins: codes per row.
        pos_dist: (B, P) sorted match distances (padded with +inf).
        pos_index: (B, P) their gallery indices (padded with G).
        match_cell: (B, P) the matches' cells (padding: a cell above every real one).

    Returns:
        (B * (P + 1),) int64 counts: entry ``b * (P + 1) + j`` is the number of the given
        negatives of row b preceded by exactly j matches.
    """
    num_b, num_g = dist.shape
    max_pos = pos_dist.shape[1]
    rows = code // num_bins  # (A,)
    lo = code - rows * num_bins  # (A,) first match of the cell
    cols = flat - rows * num_g  # (A,)
    item_dist = dist.view(-1).index_select(0, flat)  # (A,)
    # The end of each match's cell group, in the row's sorted matches.
    cell_end = torch.searchsorted(match_cell, match_cell, right=True)  # (B, P)
    hi = cell_end.view(-1)[rows * max_pos + lo.clamp(max=max_pos - 1)]  # (A,)
    while True:
        active = lo < hi  # (A,)
        if not bool(active.any()):
            break
        mid = torch.where(active, (lo + hi) // 2, 0)  # (A,)
        m = rows * max_pos + mid  # (A,) flat match index
        md = pos_dist.view(-1)[m]  # (A,)
        before = (md < item_dist) | ((md == item_dist) & (pos_index.view(-1)[m] < cols))  # (A,)
        lo = torch.where(active & before, mid + 1, lo)
        hi = torch.where(active & ~before, mid, hi)
    return torch.bincount(rows * (max_pos + 1) + lo, minlength=num_b * (max_pos + 1))  # (B*(P+1),)
