r"""Initial rank lists for k-reciprocal re-ranking: what they are and how ties are broken.

The common python implementation of the re-ranking (Zhong et al., CVPR 2017) stacks the three
distance blocks into one :math:`(Q+G) \times (Q+G)` matrix :math:`A` (queries first), squares
it, divides each column by its maximum and transposes, which gives the "original distance"

.. math::
    \tilde d(i, j) = \frac{A_{ji}^2}{s_i}, \qquad s_i = \max_k A_{ki}^2 ,

and then sorts every row of :math:`\tilde d` completely. Only the first
:math:`K = \max(k_1 + 1, k_2)` columns of that sort are ever read, so the rank lists are
found with ``topk`` over chunks, from the dense blocks
(:mod:`~reid_core.evaluation.rerank.dense`) or from feature blocks
(:mod:`~reid_core.evaluation.rerank.from_features`), never holding more than a chunk of
:math:`\tilde d`. This module holds what both share.

Ties follow a *stable* sort (equal distances: smaller index first), found with ``topk`` over
``K + slack`` candidates and a full stable sort only for the rare rows whose tie group may
reach past the candidates.

Chapter: 03 (AlignedReID, re-ranking) and the book page "Evaluation at scale".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["NeighborLists", "CANDIDATE_SLACK", "squared_float32", "stable_first_columns", "smallest_k_stable"]

CANDIDATE_SLACK = 4


@dataclass
class NeighborLists:
    """The first columns of every row's stable argsort of the original distance.

    Attributes:
        rank: (N, K) int64, ``rank[i, t]`` is the index of the t-th smallest
            :math:`\\tilde d(i, \\cdot)`, ties by index.
        scale: (N,) float32, :math:`s_i`, the maximum squared distance of column i of the
            stacked matrix (the divisor of row i of :math:`\\tilde d`).
    """

    rank: Tensor
    scale: Tensor


def squared_float32(dist: Tensor) -> Tensor:
    """Square distances in their own precision, then store them as float32.

    This is the common implementation's ``np.power(d, 2).astype(np.float32)``; integer
    inputs are squared in float64 first.

    Args:
        dist: distances of any shape and dtype.

    Returns:
        float32 tensor of the same shape.
    """
    if not dist.is_floating_point():
        dist = dist.double()
    return (dist * dist).float()


def _lexicographic_order(values: Tensor, indices: Tensor) -> Tensor:
    """Permutation of each row sorting by value, then by index (a stable argsort's order).

    Args:
        values: (B, C) candidate values.
        indices: (B, C) their distinct column indices.

    Returns:
        (B, C) int64 permutation.
    """
    by_index = torch.argsort(indices, dim=1, stable=True)  # (B, C)
    by_value = torch.argsort(values.gather(1, by_index), dim=1, stable=True)  # (B, C)
    return by_index.gather(1, by_value)  # (B, C)


def stable_first_columns(
    cand_val: Tensor, cand_idx: Tensor, k: int, complete: bool, full_rows: Callable[[Tensor], Tensor]
) -> Tensor:
    """The first k columns of each row's stable argsort, from its smallest candidates.

    Args:
        cand_val: (B, C) the C >= k smallest values of each row (in any order); every value
            left out of a row is >= its largest candidate.
        cand_idx: (B, C) their column indices.
        k: columns to return.
        complete: the candidates are the whole rows (nothing was left out).
        full_rows: ``rows (U,) -> (U, M)`` the complete values of some rows, to sort rows
            whose k-th value ties with their largest candidate (a tie with a value left out).

    Returns:
        (B, k) int64 indices, ties broken by index.
    """
    order = _lexicographic_order(cand_val, cand_idx)  # (B, C)
    cand_val, cand_idx = cand_val.gather(1, order), cand_idx.gather(1, order)
    if not complete:
        unsure = (cand_val[:, k - 1] >= cand_val[:, -1]).nonzero().flatten()  # (U,)
        if unsure.numel():
            cand_idx[unsure] = torch.argsort(full_rows(unsure), dim=1, stable=True)[:, : cand_idx.shape[1]]
    return cand_idx[:, :k]


def smallest_k_stable(values: Tensor, k: int, divisor: Tensor | None = None) -> Tensor:
    """Column indices of the k smallest entries of each row, in stable-argsort order.

    Equal to ``torch.argsort(values / divisor[:, None], dim=1, stable=True)[:, :k]``
    without dividing or sorting whole rows: ``topk`` picks ``k + slack`` candidates from
    the raw values (dividing a row by a positive number keeps its order, up to ties that
    rounding may create), only the candidates are divided and sorted by (value, index), and
    a row whose k-th value ties with its last candidate is sorted in full.

    Args:
        values: (B, M) finite values.
        k: how many to keep, ``1 <= k <= M``.
        divisor: optional (B,) positive row divisors.

    Returns:
        (B, k) int64 indices.
    """
    width = min(k + CANDIDATE_SLACK, values.shape[1])
    cand_val, cand_idx = values.topk(width, dim=1, largest=False, sorted=False)  # (B, width)
    if divisor is not None:
        cand_val = cand_val / divisor.unsqueeze(1)

    def full_rows(rows: Tensor) -> Tensor:
        return values[rows] if divisor is None else values[rows] / divisor[rows].unsqueeze(1)  # (U, M)

    return stable_first_columns(cand_val, cand_idx, k, width == values.shape[1], full_rows)
