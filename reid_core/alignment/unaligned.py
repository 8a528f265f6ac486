r"""The control for alignment: stripe :math:`i` against stripe :math:`i` only.

:func:`unaligned_local_distance` compares stripe :math:`i` of one image with stripe :math:`i` of
the other (the diagonal of the cost matrix), which is what a part model without alignment does:

.. math::
    D_{\text{row}}(x, y) = \sum_{i=1}^{S} \tanh\!\big(\lVert x_i - y_i \rVert_2 / 2\big).

:func:`paired_unaligned_distance` is the same distance for matched pairs ``(x[b], y[b])``,
differentiable: what a local triplet loss *without* alignment needs during training (the
control that separates "a local branch" from "aligned stripes").

Chapter: 03 (AlignedReID), the "row by row" rows of its ablation.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["paired_unaligned_distance", "unaligned_local_distance"]

_SQRT_EPS = 1e-12  # clamp under sqrt on the autograd path (d sqrt / dx is infinite at 0)


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


def paired_unaligned_distance(x: Tensor, y: Tensor) -> Tensor:
    r"""Row-by-row local distance of matched rows only, :math:`D_{\text{row}}(x_b, y_b)`, differentiable.

    The training-time twin of :func:`~reid_core.alignment.paired_aligned_distance` without the
    shortest path: stripe :math:`i` of ``x[b]`` is compared with stripe :math:`i` of ``y[b]``
    only. Stripe distances come from the differences directly, with a guarded square root, so a
    sample paired with itself has distance 0 and a finite (zero) gradient.

    Args:
        x, y: (B, S, D) stripe features of B pairs (the same S and D).

    Returns:
        (B,) distances in [0, S), float32 for half inputs.
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape != y.shape:
        raise ValueError(
            f"x and y must both be (B, S, D) with the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    with torch.autocast(device_type=x.device.type, enabled=False):
        diff = x.to(dtype) - y.to(device=x.device, dtype=dtype)  # (B, S, D)
        sq = (diff * diff).sum(dim=2)  # (B, S)
        dist = torch.where(sq > 0, sq.clamp_min(_SQRT_EPS).sqrt(), sq * 0.0)  # (B, S)
        return torch.tanh(dist / 2).sum(dim=1)  # (B,)
