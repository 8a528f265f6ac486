"""Pairwise distances between feature sets: differentiable for losses, chunked for evaluation.

Euclidean distance through the expansion ``|x|^2 + |y|^2 - 2 x.y`` turns an N x M x D
problem into one matrix product. Its square root has an infinite derivative at 0 (a pair of
identical features, e.g. an anchor with itself), so the gradient path clamps at a small
epsilon; the values are exact elsewhere.

Chapters: 01 (evaluation), 02 (contrastive/triplet losses), 03 (global distance).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
import torch.nn.functional as F

__all__ = ["pairwise_distance", "compute_distance_matrix", "METRICS"]

Metric = Literal["euclidean", "sqeuclidean", "cosine"]
METRICS = ("euclidean", "sqeuclidean", "cosine")
_EPS = 1e-12


def pairwise_distance(x: Tensor, y: Tensor | None = None, metric: Metric = "euclidean") -> Tensor:
    """All-pairs distance between the rows of ``x`` and ``y`` (differentiable).

    Args:
        x: (N, D) features.
        y: (M, D) features; ``None`` means ``x`` (then the diagonal is exactly 0).
        metric: ``"euclidean"`` (``||x - y||``), ``"sqeuclidean"`` (``||x - y||^2``) or
            ``"cosine"`` (``1 - cos(x, y)``).

    Returns:
        (N, M) distances, in the dtype of ``x``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    same = y is None
    y = x if y is None else y
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected x (N, D) and y (M, D) with the same D, got {tuple(x.shape)} and {tuple(y.shape)}")
    if metric == "cosine":
        return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T  # (N, M)
    sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0) - 2.0 * (x @ y.T)  # (N, M)
    sq = sq.clamp_min(0.0)
    if same:
        # The expansion leaves rounding noise on the diagonal; the true value is 0.
        sq = sq * (1.0 - torch.eye(sq.shape[0], dtype=sq.dtype, device=sq.device))
    if metric == "sqeuclidean":
        return sq
    return sq.clamp_min(_EPS).sqrt() * (sq > 0)


@torch.no_grad()
def compute_distance_matrix(
    qf: Tensor, gf: Tensor, metric: Metric = "euclidean", chunk_size: int = 4096
) -> Tensor:
    """Query-by-gallery distances, computed ``chunk_size`` queries at a time.

    Peak extra memory is one (chunk_size, M) block besides the (N, M) result.

    Args:
        qf: (N, D) query features.
        gf: (M, D) gallery features.
        metric: see :func:`pairwise_distance`.
        chunk_size: queries per block.

    Returns:
        (N, M) float32 distances on the device of ``qf``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = torch.empty(qf.shape[0], gf.shape[0], dtype=torch.float32, device=qf.device)
    gf = gf.to(qf.device)
    for start in range(0, qf.shape[0], chunk_size):
        block = qf[start : start + chunk_size]
        out[start : start + block.shape[0]] = pairwise_distance(block, gf, metric).float()
    return out
