r"""The control for alignment: stripe :math:`i` against stripe :math:`i` only.

:func:`unaligned_local_distance` compares stripe :math:`i` of one image with stripe :math:`i` of
the other (the diagonal of the cost matrix), which is what a part model without alignment does:

.. math::
    D_{\text{row}}(x, y) = \sum_{i=1}^{S} \tanh\!\big(\lVert x_i - y_i \rVert_2 / 2\big).

Chapter: 03 (AlignedReID), the "row by row" rows of its ablation.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["unaligned_local_distance"]


def unaligned_local_distance(x: Tensor, y: Tensor) -> Tensor:
    r"""Stripe :math:`i` against stripe :math:`i` only: :math:`\sum_i \tanh(\lVert x_i - y_i\rVert / 2)`.

    The diagonal of AlignedReID's cost matrix, i.e. what the local distance would be if the
    detector always put every body part in the same stripe. The control for the alignment.

    Args:
        x: (N, S, D) stripe features; y: (M, S, D) with the same S and D.

    Returns:
        (N, M) distances in [0, S).
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"x and y must be (N, S, D) and (M, S, D) with the same S and D, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    y = y.to(device=x.device, dtype=x.dtype)
    total = x.new_zeros(x.shape[0], y.shape[0])  # (N, M)
    for s in range(x.shape[1]):  # S is small (6-8); each stripe is one matrix of distances
        total += torch.tanh(torch.cdist(x[:, s], y[:, s]) / 2)  # (N, M)
    return total
