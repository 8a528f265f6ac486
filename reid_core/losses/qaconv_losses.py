r"""Losses on an in-batch matrix of matching scores (QAConv-GS, Liao & Shao, CVPR 2022).

Both take the (B, B) score matrix of a batch against itself, ``S = matcher.pairwise(maps)``
(higher = more alike), and the batch's identity labels. They are the two losses the Graph
Sampling code versions use (arXiv 2104.01546; ``reid/loss/`` of the QAConv repository):

* QAConv 2.0 (arXiv v1): :class:`PairwiseMatchingLoss`, binary cross-entropy of every score
  against "same identity?";
* QAConv 2.1 (CVPR 2022): :class:`ScoreTripletLoss`, batch-hard triplet loss on scores with
  margin m = 16 (the score's own scale).

:func:`matching_accuracy` is the training accuracy both versions log.

Batch scope: the scores may be a (B, M) block, this process's B anchors against the M = N x B
samples of the global batch under ``torchrun`` (``column_labels`` then names the columns and
``first`` the column of anchor 0); with ``batch_scope="global"`` the mean runs over the anchors
of every process (:func:`reid_core.collectives.pooled_mean`), so N processes compute the loss
of one process holding the whole batch. :class:`~reid_core.losses.qaconv_criterion.QAConvCriterion`
gathers the feature maps and builds that block.

Chapter: ``notebooks/05_graph_sampling.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.collectives import BatchScope, check_batch_scope, pooled_mean, self_pairs

__all__ = ["PairwiseMatchingLoss", "ScoreTripletLoss", "matching_accuracy", "hardest_scores"]


def _check(scores: Tensor, labels: Tensor, column_labels: Tensor | None) -> Tensor:
    """Check the shapes; return the column labels (``labels`` when ``column_labels`` is None)."""
    if scores.dim() != 2 or (column_labels is None and scores.shape[0] != scores.shape[1]):
        raise ValueError(
            f"scores must be a square (B, B) matrix, or (B, M) with column labels, got shape {tuple(scores.shape)}"
        )
    if labels.dim() != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels must be (B,) = ({scores.shape[0]},), got shape {tuple(labels.shape)}")
    if column_labels is None:
        return labels
    if column_labels.dim() != 1 or column_labels.shape[0] != scores.shape[1]:
        raise ValueError(
            f"column labels must be (M,) = ({scores.shape[1]},) for scores of shape {tuple(scores.shape)}, "
            f"got shape {tuple(column_labels.shape)}"
        )
    return column_labels


def hardest_scores(
    scores: Tensor, labels: Tensor, column_labels: Tensor | None = None, first: int = 0
) -> tuple[Tensor, Tensor]:
    """The lowest positive and the highest negative score of every anchor.

    Args:
        scores: (B, B) in-batch scores, row a = anchor a; or (B, M) against M columns.
        labels: (B,) identity labels of the anchors.
        column_labels: (M,) labels of the columns; ``None``: the columns are the anchors.
        first: column index of anchor 0 (anchor a is column ``first + a``).

    Returns:
        ``(min_pos, max_neg)``, each (B,): :math:`\\min_{p \\ne a, y_p = y_a} S_{ap}` (``+inf``
        when the anchor has no other positive; the self pair is excluded) and
        :math:`\\max_{n: y_n \\ne y_a} S_{an}` (``-inf`` when the batch has no negative).
    """
    column_labels = _check(scores, labels, column_labels)
    same = labels.unsqueeze(1) == column_labels.unsqueeze(0)  # (B, M)
    is_self = self_pairs(len(labels), len(column_labels), first, scores.device)  # (B, M)
    min_pos = scores.masked_fill(~same | is_self, float("inf")).amin(dim=1)  # (B,)
    max_neg = scores.masked_fill(same, float("-inf")).amax(dim=1)  # (B,)
    return min_pos, max_neg


@torch.no_grad()
def matching_accuracy(scores: Tensor, labels: Tensor, column_labels: Tensor | None = None, first: int = 0) -> Tensor:
    """Fraction of anchors whose every positive outscores every negative.

    The accuracy QAConv 2.0/2.1 log: ``min_pos > max_neg`` per anchor (self pair excluded),
    over anchors that have both another positive and a negative.

    Args:
        scores: (B, B) in-batch scores, or (B, M) against M columns.
        labels: (B,) identity labels.
        column_labels, first: the columns' labels and anchor 0's column (see :func:`hardest_scores`).

    Returns:
        scalar float tensor in [0, 1] (NaN when no anchor qualifies).
    """
    min_pos, max_neg = hardest_scores(scores, labels, column_labels, first)  # (B,), (B,)
    valid = torch.isfinite(min_pos) & torch.isfinite(max_neg)  # (B,)
    return (min_pos[valid] > max_neg[valid]).float().mean()


class PairwiseMatchingLoss(nn.Module):
    r"""Binary cross-entropy of in-batch matching scores (QAConv 2.0, Liao & Shao arXiv v1).

    .. math::
        L = \frac{1}{B} \sum_{a=1}^{B} \sum_{j=1}^{B}
            \mathrm{BCE}\big(\sigma(S_{aj}),\, [y_a = y_j]\big),
        \quad \mathrm{BCE}(p, t) = -t \log p - (1 - t) \log (1 - p).

    Normalisation as in the paper's code: summed over the second axis (every pair of an
    anchor counts, so a large batch is not diluted into many easy negatives), averaged over
    the B anchors. The diagonal (an image against itself, target 1) is *included*, as in the
    code (``include_self=True``); pass ``include_self=False`` to drop those B pairs. No focal
    term (QAConv 1.x's class-memory loss had one; 2.0 removed it).

    Called as ``loss(scores, labels) -> scalar`` with scores (B, B) logits, labels (B,); or
    ``loss(scores, labels, column_labels, first)`` with (B, M) scores against the global batch.

    Args:
        include_self: count the B self pairs.
        batch_scope: average over the anchors of every process (``"global"``, the paper's
            batch) or of this one (``"local"``).
    """

    def __init__(self, include_self: bool = True, batch_scope: BatchScope = "global") -> None:
        super().__init__()
        check_batch_scope(batch_scope)
        self.include_self, self.batch_scope = include_self, batch_scope

    def forward(self, scores: Tensor, labels: Tensor, column_labels: Tensor | None = None, first: int = 0) -> Tensor:
        """Args: scores (B, M) logits, labels (B,), column labels (M,) (default: labels), first:
        column of anchor 0. Returns: the scalar loss."""
        column_labels = _check(scores, labels, column_labels)
        target = (labels.unsqueeze(1) == column_labels.unsqueeze(0)).to(scores.dtype)  # (B, M)
        pair_loss = F.binary_cross_entropy_with_logits(scores, target, reduction="none")  # (B, M)
        if not self.include_self:
            pair_loss = pair_loss.masked_fill(self_pairs(len(labels), len(column_labels), first, scores.device), 0.0)
        mean = pooled_mean(pair_loss.sum(dim=1), self.batch_scope)  # over the anchors
        return scores.sum() * 0.0 if mean is None else mean


class ScoreTripletLoss(nn.Module):
    r"""Batch-hard triplet loss on matching scores (QAConv 2.1 = CVPR 2022).

    .. math::
        L_a = \max\big(0,\; m - (\min_{p \ne a,\, y_p = y_a} S_{ap} - \max_{n:\, y_n \ne y_a} S_{an})\big),
        \qquad L = \operatorname{mean}_{a \text{ valid}} L_a.

    Scores, not distances: the hardest positive is the *lowest* positive score, the hardest
    negative the *highest* negative score. The self pair is excluded. Anchors whose hardest
    positive or negative is non-finite (no other positive, no negative, or an inf/NaN score,
    e.g. an fp16 overflow under AMP) are dropped before averaging; if none is left the loss is
    a zero that still carries the graph. (The paper's code fills missing pairs with 1e15, which
    gives those anchors a loss of 0 that still counts in the mean; dropping them keeps the
    average over anchors that actually have a triplet.)

    Args:
        margin: m, on the score (logit) scale; 16 in the QAConv 2.1 code.
        batch_scope: average over the valid anchors of every process (``"global"``, the
            paper's batch) or of this one (``"local"``).
    """

    def __init__(self, margin: float = 16.0, batch_scope: BatchScope = "global") -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        check_batch_scope(batch_scope)
        self.margin, self.batch_scope = margin, batch_scope

    def forward(self, scores: Tensor, labels: Tensor, column_labels: Tensor | None = None, first: int = 0) -> Tensor:
        """Args: scores (B, M) logits, labels (B,), column labels (M,) (default: labels), first:
        column of anchor 0. Returns: the scalar loss."""
        min_pos, max_neg = hardest_scores(scores, labels, column_labels, first)  # (B,), (B,)
        gap = min_pos - max_neg  # (B,)
        valid = torch.isfinite(gap)  # (B,) inf - (-inf), NaN from bad scores all drop out
        mean = pooled_mean(F.relu(self.margin - gap[valid]), self.batch_scope)
        # Without a valid anchor: a zero that keeps the graph (and stays finite when scores hold inf/NaN).
        return scores.nan_to_num(0.0, 0.0, 0.0).sum() * 0.0 if mean is None else mean
