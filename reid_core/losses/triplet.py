r"""Triplet loss with batch-hard or batch-all mining (Hermans, Beyer, Leibe 2017).

For a P x K batch and anchor ``a``, batch-hard takes the farthest positive and the closest
negative in the batch:

.. math::
    L_{BH} = \frac{1}{PK} \sum_a \big[m + \max_{p: y_p = y_a} D_{ap} - \min_{n: y_n \ne y_a} D_{an}\big]_+

and the soft-margin variant replaces :math:`[m + x]_+` by :math:`\ln(1 + e^{x})`. Batch-all
averages :math:`[m + D_{ap} - D_{an}]_+` over every valid (a, p, n) whose loss is positive.
:math:`D` is the plain (non-squared) euclidean distance by default, as in the paper.

Chapters: 01 (baseline), 02 (metric learning), 03 (AlignedReID's TriHard).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from reid_core.evaluation.distance import Metric, pairwise_distance

__all__ = ["TripletLoss", "hard_example_mining"]


def hard_example_mining(dist: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hardest positive and hardest negative of every anchor, vectorised.

    Args:
        dist: (B, B) distances within the batch.
        labels: (B,) identity labels.

    Returns:
        ``(dist_ap, dist_an, pos_index, neg_index)``, each (B,): the largest distance to a
        sample of the same label (the anchor itself counts, at distance 0, so an anchor with no
        other positive gets 0) and the smallest distance to a sample of another label
        (``+inf`` and index 0 when the batch holds no other label), with their column indices.
    """
    if dist.dim() != 2 or dist.shape[0] != dist.shape[1] or labels.shape != dist.shape[:1]:
        raise ValueError(f"expected dist (B, B) and labels (B,), got {tuple(dist.shape)} and {tuple(labels.shape)}")
    same = labels.unsqueeze(0) == labels.unsqueeze(1)  # (B, B)
    neg_inf = torch.finfo(dist.dtype).min
    dist_ap, pos_index = dist.masked_fill(~same, neg_inf).max(dim=1)  # (B,)
    dist_an, neg_index = dist.masked_fill(same, float("inf")).min(dim=1)  # (B,)
    return dist_ap, dist_an, pos_index, neg_index


class TripletLoss(nn.Module):
    """Batch-hard (TriHard) or batch-all triplet loss, called as ``loss(embeddings, labels)``.

    Args:
        margin: the margin m (ignored when ``soft_margin``).
        mining: ``"batch_hard"`` or ``"batch_all"``.
        soft_margin: use ``log(1 + exp(D_ap - D_an))`` instead of the hinge.
        metric: distance used (``"euclidean"`` as the paper; ``"sqeuclidean"``, ``"cosine"``).

    Example:
        >>> loss = TripletLoss(margin=0.3)
        >>> loss(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
        torch.Size([])
    """

    def __init__(
        self,
        margin: float = 0.3,
        mining: Literal["batch_hard", "batch_all"] = "batch_hard",
        soft_margin: bool = False,
        metric: Metric = "euclidean",
    ) -> None:
        super().__init__()
        if mining not in ("batch_hard", "batch_all"):
            raise ValueError(f"mining must be 'batch_hard' or 'batch_all', got {mining!r}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin, self.mining, self.soft_margin, self.metric = margin, mining, soft_margin, metric

    def _hinge(self, diff: Tensor) -> Tensor:
        """``[m + diff]_+`` or ``softplus(diff)``, elementwise."""
        return F.softplus(diff) if self.soft_margin else F.relu(self.margin + diff)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Args: embeddings (B, D), labels (B,). Returns: the scalar loss."""
        dist = pairwise_distance(embeddings, metric=self.metric)  # (B, B)
        return self.from_distance(dist, labels)

    def from_distance(self, dist: Tensor, labels: Tensor) -> Tensor:
        """The same loss from a precomputed (B, B) distance matrix."""
        # Checked for both minings: batch-all's (B, B, B) mask would otherwise fail later
        # with an opaque IndexError that names neither argument.
        if dist.dim() != 2 or dist.shape[0] != dist.shape[1] or labels.shape != dist.shape[:1]:
            raise ValueError(f"expected dist (B, B) and labels (B,), got {tuple(dist.shape)} and {tuple(labels.shape)}")
        if self.mining == "batch_hard":
            dist_ap, dist_an, _, _ = hard_example_mining(dist, labels)
            valid = torch.isfinite(dist_an)  # anchors with at least one negative
            if not valid.any():
                return dist.sum() * 0.0
            return self._hinge(dist_ap[valid] - dist_an[valid]).mean()
        same = labels.unsqueeze(0) == labels.unsqueeze(1)  # (B, B)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos = same & ~eye  # (B, B) a-p pairs
        neg = ~same  # (B, B) a-n pairs
        valid = pos.unsqueeze(2) & neg.unsqueeze(1)  # (B, B, B): [a, p, n]
        losses = self._hinge(dist.unsqueeze(2) - dist.unsqueeze(1))[valid]  # D_ap - D_an
        active = losses > 1e-16
        if not active.any():
            return dist.sum() * 0.0
        return losses[active].mean()
