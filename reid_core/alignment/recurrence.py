r"""AlignedReID's aligned local distance, as the paper writes it (Zhang et al. 2017, Sec. 3).

Each image is cut into :math:`S` horizontal stripes with one local feature per stripe. Two
detections of one person rarely put the head, torso and legs at the same stripes, so
AlignedReID compares the stripes of image 1 (rows :math:`i`) with those of image 2 (columns
:math:`j`) and lets a shortest path pick the matching. First the stripe-to-stripe euclidean
distances are squashed into :math:`[0, 1)`:

.. math::
    d_{i,j} = \frac{e^{\lVert f_i - g_j \rVert_2} - 1}{e^{\lVert f_i - g_j \rVert_2} + 1}
            = \tanh\!\big(\lVert f_i - g_j \rVert_2 / 2\big),

so one very bad stripe (an occluder) cannot dominate the sum. Then a dynamic programme finds
the cheapest path from the top-left to the bottom-right cell, moving only right or down:

.. math::
    S_{i,j} = \min(S_{i-1,j},\, S_{i,j-1}) + d_{i,j}, \qquad S_{0,0} = d_{0,0},

and the local distance is :math:`S_{S_x-1, S_y-1}`. Every such path visits exactly
:math:`S_x + S_y - 1` cells, so the distance lies in :math:`[0, S_x + S_y - 1)`.

This module is that recurrence for one pair of images, written to be read; it is what the
chapter's figures draw. :mod:`reid_core.alignment.batched` computes the same numbers for
millions of pairs at once (and their gradients); the tests check the two agree.

Chapter: ``notebooks/03_alignedreid.py``.

Example:
    >>> a = aligned_path(torch.randn(8, 128), torch.randn(8, 128))
    >>> a.path[0].tolist(), a.path[-1].tolist()
    ([0, 0], [7, 7])
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["AlignedPath", "stripe_distance_matrix", "shortest_path_table", "aligned_path"]


class AlignedPath(NamedTuple):
    """The alignment of one pair of images, for plotting.

    Attributes:
        distance: () the aligned distance :math:`S_{S_x-1, S_y-1}`.
        cost: (S_x, S_y) normalised stripe distances :math:`d_{i,j} = \\tanh(\\lVert f_i - g_j\\rVert / 2)`.
        path: (S_x + S_y - 1, 2) long, the (row, column) cells of the shortest path from
            (0, 0) to (S_x - 1, S_y - 1).
    """

    distance: Tensor
    cost: Tensor
    path: Tensor


def stripe_distance_matrix(x_i: Tensor, y_j: Tensor) -> Tensor:
    """Normalised stripe-to-stripe distances of one pair, :math:`\\tanh(\\lVert x_a - y_b\\rVert / 2)`.

    Computed from the differences directly (not the norm expansion): exact, for plots and tests.

    Args:
        x_i: (S_x, D) stripes of one image; y_j: (S_y, D) stripes of another.

    Returns:
        (S_x, S_y) costs in [0, 1).
    """
    if x_i.dim() != 2 or y_j.dim() != 2 or x_i.shape[1] != y_j.shape[1]:
        raise ValueError(
            f"x_i and y_j must be (S_x, D) and (S_y, D) with the same D, got {tuple(x_i.shape)} and {tuple(y_j.shape)}"
        )
    diff = x_i.unsqueeze(1) - y_j.to(x_i.device).unsqueeze(0)  # (S_x, S_y, D)
    return torch.tanh(diff.norm(dim=2) / 2)  # (S_x, S_y)


def shortest_path_table(cost: Tensor) -> Tensor:
    r"""The cumulative costs :math:`S_{i,j} = \min(S_{i-1,j}, S_{i,j-1}) + d_{i,j}` of one pair.

    Args:
        cost: (S_x, S_y) stripe costs :math:`d_{i,j}`.

    Returns:
        (S_x, S_y) table; its last cell is the aligned distance.
    """
    if cost.dim() != 2:
        raise ValueError(f"cost must be an (S_x, S_y) matrix, got shape {tuple(cost.shape)}")
    sx, sy = cost.shape
    table = cost.clone()  # (S_x, S_y)
    for i in range(sx):
        for j in range(sy):
            if i == 0 and j == 0:
                continue  # S_00 = d_00
            up = table[i - 1, j] if i > 0 else torch.inf
            left = table[i, j - 1] if j > 0 else torch.inf
            table[i, j] = cost[i, j] + min(up, left)
    return table


def _trace_back(table: Tensor) -> Tensor:
    """(S_x + S_y - 1, 2) cells of the shortest path, found backwards from the last cell.

    At a tie the move up is taken (as in :mod:`reid_core.alignment.batched`).
    """
    i, j = table.shape[0] - 1, table.shape[1] - 1
    cells = [(i, j)]
    while (i, j) != (0, 0):
        up = table[i - 1, j] if i > 0 else torch.inf
        left = table[i, j - 1] if j > 0 else torch.inf
        if up <= left:
            i -= 1
        else:
            j -= 1
        cells.append((i, j))
    return torch.tensor(cells[::-1], dtype=torch.long)


@torch.no_grad()
def aligned_path(x_i: Tensor, y_j: Tensor) -> AlignedPath:
    """The stripe costs, the shortest path and the aligned distance of one pair, for plotting.

    Args:
        x_i: (S_x, D) stripes of one image; y_j: (S_y, D) stripes of another.

    Returns:
        :class:`AlignedPath` with ``distance`` (), ``cost`` (S_x, S_y) and ``path``
        (S_x + S_y - 1, 2) long (row, column) cells from the top-left corner.
    """
    cost = stripe_distance_matrix(x_i, y_j)  # (S_x, S_y)
    table = shortest_path_table(cost.double())  # (S_x, S_y), float64: exact sums for the plots
    return AlignedPath(distance=table[-1, -1].to(cost.dtype), cost=cost, path=_trace_back(table))
