r"""The trainer's criterion for QAConv: in-batch matching scores, then a score loss.

``criterion(output, labels)`` computes the in-batch score matrix :math:`S = \mathrm{QAConv}(F, F)`
of the batch's feature maps and the loss on it (:mod:`reid_core.losses.qaconv_losses`), and logs
how hard the batch was (mean and hardest negative score).

Under ``torchrun`` with ``batch_scope="global"`` (the default) the feature maps of every process
are gathered (with gradient) and this process scores its B maps against all N x B of them, the
(B, NB) block of the global score matrix; the loss then averages over the anchors of every
process, so the loss is the one of a single process holding the global batch. The matcher's
BatchNorm layers normalise the pairs this process scores; they see the global statistics only
when converted to SyncBatchNorm (the engine's ``sync_bn`` option, CUDA).

Chapter: 05 (Graph Sampling with QAConv).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from reid_core.collectives import BatchScope, batch_columns, check_batch_scope
from reid_core.losses.qaconv_losses import PairwiseMatchingLoss, ScoreTripletLoss, hardest_scores, matching_accuracy
from reid_core.models.qaconv import QAConv

__all__ = ["QAConvCriterion", "score_statistics"]


class QAConvCriterion(nn.Module):
    r"""The trainer's criterion for QAConv: in-batch scores, then a score loss.

    For the batch's normalised feature maps :math:`F_1..F_B` the matcher gives the (B, B)
    score matrix :math:`S_{ij} = \mathrm{QAConv}(F_i, F_j)`, and the loss is either

    * ``"triplet"`` (QAConv 2.1 = CVPR 2022): :math:`\frac1B\sum_a [m - (\min_p S_{ap} -
      \max_n S_{an})]_+` with m = 16 (:class:`~reid_core.losses.qaconv_losses.ScoreTripletLoss`);
    * ``"pairwise"`` (QAConv 2.0 = arXiv v1): BCE of every :math:`S_{ij}` against
      :math:`[y_i = y_j]` (:class:`~reid_core.losses.qaconv_losses.PairwiseMatchingLoss`).

    The matcher is a sub-module, so the trainer optimises its BN and FC parameters with the
    network's. In training mode every call appends to :attr:`log` the batch's mean negative
    score, mean hardest negative score (per anchor :math:`\max_n S_{an}`), mean hardest
    positive score and matching accuracy (all detached): a GS batch should show higher
    negative scores than a PK batch under the same model.

    Args:
        matcher: the :class:`~reid_core.models.qaconv.QAConv` head.
        loss: ``"triplet"`` or ``"pairwise"``.
        margin: m of the triplet loss, on the score (logit) scale.
        weight: factor on the loss term.
        track: keep :attr:`log`.
        batch_scope: ``"global"``: score this process's maps against the whole batch of every
            process (the paper's batch); ``"local"``: against this process's maps only.

    Returns (``forward``):
        ``{"triplet": loss}`` or ``{"pairwise": loss}``, the weighted scalar term.
    """

    def __init__(
        self,
        matcher: QAConv,
        loss: str = "triplet",
        margin: float = 16.0,
        weight: float = 1.0,
        track: bool = True,
        batch_scope: BatchScope = "global",
    ) -> None:
        super().__init__()
        check_batch_scope(batch_scope)
        if loss not in ("triplet", "pairwise"):
            raise ValueError(f"loss must be 'triplet' or 'pairwise', got {loss!r}")
        if weight <= 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        self.matcher = matcher
        self.name = loss
        self.batch_scope = batch_scope
        self.loss_fn: nn.Module = (
            ScoreTripletLoss(margin, batch_scope=batch_scope)
            if loss == "triplet"
            else PairwiseMatchingLoss(batch_scope=batch_scope)
        )
        self.weight = weight
        self.track = track
        self.log: list[dict[str, float]] = []

    def forward(self, output: Any, labels: Tensor) -> dict[str, Tensor]:
        """Args: output with ``feature_map`` (B, d, h, w); labels (B,). Returns: {name: loss}."""
        fmap = getattr(output, "feature_map", None)
        if fmap is None:
            raise ValueError("output must carry a feature_map (B, d, h, w): use QAConvNet")
        columns, column_labels, first = batch_columns(fmap, labels, self.batch_scope)  # (M, d, h, w), (M,)
        if columns is fmap:
            scores = self.matcher.pairwise(fmap)  # (B, B)
            loss = self.loss_fn(scores.float(), labels)
        else:
            scores = self.matcher(fmap, columns)  # (B, M)
            loss = self.loss_fn(scores.float(), labels, column_labels, first)
        if self.track and self.training:
            self.log.append(score_statistics(scores.detach().float(), labels, column_labels, first))
        return {self.name: loss * self.weight}


@torch.no_grad()
def score_statistics(
    scores: Tensor, labels: Tensor, column_labels: Tensor | None = None, first: int = 0
) -> dict[str, float]:
    """Mean negative, mean hardest negative, mean hardest positive score and accuracy of a batch.

    Args:
        scores: (B, B) in-batch scores, or (B, M) of this process's anchors against M columns.
        labels: (B,) anchor labels.
        column_labels: (M,) column labels (default: ``labels``).
        first: column index of anchor 0.
    """
    column_labels = labels if column_labels is None else column_labels
    same = labels.unsqueeze(1) == column_labels.unsqueeze(0)  # (B, M)
    min_pos, max_neg = hardest_scores(scores, labels, column_labels, first)  # (B,), (B,)
    ok_pos, ok_neg = torch.isfinite(min_pos), torch.isfinite(max_neg)
    return {
        "mean_neg": float(scores[~same].mean()) if bool((~same).any()) else float("nan"),
        "hardest_neg": float(max_neg[ok_neg].mean()) if bool(ok_neg.any()) else float("nan"),
        "hardest_pos": float(min_pos[ok_pos].mean()) if bool(ok_pos.any()) else float("nan"),
        "accuracy": float(matching_accuracy(scores, labels, column_labels, first)),
    }
