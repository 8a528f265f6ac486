r"""Triplet loss with batch-hard or batch-all mining (Hermans, Beyer, Leibe 2017).

For a P x K batch and anchor ``a``, batch-hard takes the farthest positive and the closest
negative in the batch:

.. math::
    L_{BH} = \frac{1}{PK} \sum_a \big[m + \max_{p: y_p = y_a} D_{ap} - \min_{n: y_n \ne y_a} D_{an}\big]_+

and the soft-margin variant replaces :math:`[m + x]_+` by :math:`\ln(1 + e^{x})`. Batch-all
averages :math:`[m + D_{ap} - D_{an}]_+` over every valid (a, p, n) whose loss is positive.
:math:`D` is the plain (non-squared) euclidean distance by default, as in the paper.

Batch scope: under ``torchrun`` each process holds B of the N x B samples of a step. With
``batch_scope="global"`` (the default) the anchors of this process are mined against the whole
global batch, gathered with gradient (:mod:`reid_core.collectives`), and the mean runs over
every anchor of every process, so N processes with B samples each compute the loss of one
process with NB samples; ``"local"`` mines within this process's B samples only. With one
process both are the same.

Chapters: 01 (baseline), 02 (metric learning), 03 (AlignedReID's TriHard).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.collectives import BatchScope, batch_columns, check_batch_scope, pooled_mean, self_pairs
from reid_core.evaluation.distance import Metric, pairwise_distance

__all__ = ["TripletLoss", "hard_example_mining"]


def hard_example_mining(
    dist: Tensor, labels: Tensor, column_labels: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hardest positive and hardest negative of every anchor, vectorised.

    Args:
        dist: (B, M) distances of the B anchors to the M samples of the batch; (B, B) within
            the batch when ``column_labels`` is ``None``.
        labels: (B,) identity labels of the anchors.
        column_labels: (M,) labels of the columns; ``None``: the columns are the anchors.

    Returns:
        ``(dist_ap, dist_an, pos_index, neg_index)``, each (B,): the largest distance to a
        sample of the same label (the anchor itself counts, at distance 0, so an anchor with no
        other positive gets 0) and the smallest distance to a sample of another label
        (``+inf`` and index 0 when the batch holds no other label), with their column indices.
    """
    column_labels = labels if column_labels is None else column_labels
    if dist.dim() != 2 or labels.shape != dist.shape[:1] or column_labels.shape != dist.shape[1:]:
        raise ValueError(
            f"expected dist (B, M), labels (B,) and column labels (M,), got {tuple(dist.shape)}, "
            f"{tuple(labels.shape)} and {tuple(column_labels.shape)}"
        )
    same = labels.unsqueeze(1) == column_labels.unsqueeze(0)  # (B, M)
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
        batch_scope: under ``torchrun``, mine against the ``"global"`` batch of all processes
            (the paper's batch; default) or this process's ``"local"`` share.

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
        batch_scope: BatchScope = "global",
    ) -> None:
        super().__init__()
        check_batch_scope(batch_scope)
        if mining not in ("batch_hard", "batch_all"):
            raise ValueError(f"mining must be 'batch_hard' or 'batch_all', got {mining!r}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin, self.mining, self.soft_margin, self.metric = margin, mining, soft_margin, metric
        self.batch_scope = batch_scope

    def _hinge(self, diff: Tensor) -> Tensor:
        """``[m + diff]_+`` or ``softplus(diff)``, elementwise."""
        return F.softplus(diff) if self.soft_margin else F.relu(self.margin + diff)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Args: embeddings (B, D), labels (B,). Returns: the scalar loss (over the global batch
        under ``torchrun`` with ``batch_scope="global"``)."""
        columns, column_labels, first = batch_columns(embeddings, labels, self.batch_scope)  # (M, D), (M,)
        if columns is embeddings:
            return self.from_distance(pairwise_distance(embeddings, metric=self.metric), labels)  # (B, B)
        dist = pairwise_distance(embeddings, columns, metric=self.metric)  # (B, M)
        # The anchor against itself: exactly 0, as pairwise_distance(x) gives on its diagonal.
        dist = dist.masked_fill(self_pairs(len(labels), len(column_labels), first, dist.device), 0.0)
        return self.from_distance(dist, labels, column_labels, first)

    def from_distance(
        self, dist: Tensor, labels: Tensor, column_labels: Tensor | None = None, first: int = 0
    ) -> Tensor:
        """The same loss from precomputed distances.

        Args:
            dist: (B, B) within the batch, or (B, M) from the B anchors to M columns.
            labels: (B,) anchor labels.
            column_labels: (M,) column labels; ``None``: the columns are the anchors.
            first: column index of anchor 0 (anchor i is column ``first + i``).
        """
        column_labels = labels if column_labels is None else column_labels
        # Checked for both minings: batch-all's (B, M, M) mask would otherwise fail later
        # with an opaque IndexError that names neither argument.
        if dist.dim() != 2 or labels.shape != dist.shape[:1] or column_labels.shape != dist.shape[1:]:
            raise ValueError(
                f"expected dist (B, M), labels (B,) and column labels (M,), got {tuple(dist.shape)}, "
                f"{tuple(labels.shape)} and {tuple(column_labels.shape)}"
            )
        if self.mining == "batch_hard":
            dist_ap, dist_an, _, _ = hard_example_mining(dist, labels, column_labels)
            valid = torch.isfinite(dist_an)  # anchors with at least one negative
            losses = self._hinge(dist_ap[valid] - dist_an[valid])  # (n_valid,)
        else:
            same = labels.unsqueeze(1) == column_labels.unsqueeze(0)  # (B, M)
            pos = same & ~self_pairs(len(labels), len(column_labels), first, dist.device)  # (B, M) a-p pairs
            neg = ~same  # (B, M) a-n pairs
            valid = pos.unsqueeze(2) & neg.unsqueeze(1)  # (B, M, M): [a, p, n]
            triplets = self._hinge(dist.unsqueeze(2) - dist.unsqueeze(1))[valid]  # D_ap - D_an
            losses = triplets[triplets > 1e-16]  # the active triplets
        mean = pooled_mean(losses, self.batch_scope)
        return dist.sum() * 0.0 if mean is None else mean

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, batch_scope={self.batch_scope!r}"
