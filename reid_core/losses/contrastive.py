r"""Contrastive (siamese) loss (Hadsell, Chopra, LeCun 2006).

For a pair with euclidean distance :math:`D = \lVert f(x_1) - f(x_2)\rVert_2` and
:math:`Y = 0` for a similar pair, :math:`Y = 1` for a dissimilar one:

.. math::
    L = (1 - Y)\,\tfrac12 D^2 + Y\,\tfrac12\big[\max(0,\ m - D)\big]^2

Similar pairs are pulled together; dissimilar pairs are pushed apart until they are ``m``
away, then ignored. The API uses ``same`` (= 1 - Y) so that a 1 means "same identity", the
convention of the rest of the library; the formula above is unchanged.

Two ways to call it, both averaging over the pairs used (the mean over pairs, not a sum and
not a per-anchor mean):

- ``loss(embeddings, labels)``: every pair (i, j), i < j, of the batch, B (B - 1) / 2 pairs.
  In a P x K batch most pairs are dissimilar; they are all counted, unweighted.
- ``loss.from_pairs(x1, x2, same)``: the given pairs, row by row (a classic siamese batch).

Batch scope of ``loss(embeddings, labels)`` under ``torchrun``: with ``batch_scope="global"``
(the default) the pairs are those of the global batch of every process: this process takes the
pairs (i, j), i < j in the global order, whose i it holds, against every process's samples
(gathered with gradient), and the mean runs over the pairs of every process. ``"local"``: the
pairs within this process's share. ``from_pairs`` is per pair and needs no gathering.

Chapter: ``notebooks/02_metric_learning.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reid_core.collectives import BatchScope, batch_columns, check_batch_scope, pooled_mean
from reid_core.evaluation.distance import pairwise_distance

__all__ = ["ContrastiveLoss"]

_EPS = 1e-12  # floor under sqrt: identical points get distance 0 with a zero (not NaN) gradient


def _distance_from_squared(sq: Tensor) -> Tensor:
    """``sqrt(sq)`` with a finite gradient at 0 (where it is 0). Any shape."""
    return sq.clamp_min(_EPS).sqrt() * (sq > 0)


class ContrastiveLoss(nn.Module):
    """Hadsell et al.'s contrastive loss over all pairs of a batch or over given pairs.

    Args:
        margin: m > 0, the distance beyond which dissimilar pairs cost nothing. It depends on
            the scale of the embeddings (e.g. at most 2 for L2-normalised ones); there is no
            universal default.
        batch_scope: the pairs of the ``"global"`` batch of every process under ``torchrun``
            (default), or of this process's ``"local"`` share.

    Example:
        >>> loss = ContrastiveLoss(margin=1.0)
        >>> loss(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
        torch.Size([])
        >>> loss.from_pairs(torch.randn(5, 16), torch.randn(5, 16), torch.tensor([1, 0, 0, 1, 0])).shape
        torch.Size([])
    """

    def __init__(self, margin: float, batch_scope: BatchScope = "global") -> None:
        super().__init__()
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        check_batch_scope(batch_scope)
        self.margin, self.batch_scope = float(margin), batch_scope

    def pair_loss(self, sq_dist: Tensor, same: Tensor) -> Tensor:
        """Per-pair loss from squared distances (P,) and a boolean ``same`` (P,); returns (P,)."""
        # The similar term uses D^2 directly: exact, and smooth where D = 0.
        hinge = (self.margin - _distance_from_squared(sq_dist)).clamp_min(0.0)  # (P,)
        return torch.where(same, 0.5 * sq_dist, 0.5 * hinge * hinge)  # (P,)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean loss over all B (B - 1) / 2 pairs i < j.

        Args:
            embeddings: (B, D), B >= 2.
            labels: (B,) identity labels; a pair is similar when its labels are equal.

        Returns:
            The scalar loss.
        """
        if embeddings.dim() != 2 or embeddings.shape[0] < 2:
            raise ValueError(f"embeddings must be (B, D) with B >= 2, got {tuple(embeddings.shape)}")
        if labels.shape != embeddings.shape[:1]:
            raise ValueError(f"labels must be ({embeddings.shape[0]},), got {tuple(labels.shape)}")
        labels = labels.to(embeddings.device)
        columns, column_labels, first = batch_columns(embeddings, labels, self.batch_scope)  # (M, D), (M,)
        if columns is embeddings:
            sq = pairwise_distance(embeddings, metric="sqeuclidean")  # (B, B)
            i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=embeddings.device)  # (P,), (P,)
        else:  # this process's rows i against the global columns j > first + i
            sq = pairwise_distance(embeddings, columns, metric="sqeuclidean")  # (B, M)
            i, j = torch.triu_indices(len(labels), len(column_labels), offset=first + 1, device=embeddings.device)
        mean = pooled_mean(self.pair_loss(sq[i, j], labels[i] == column_labels[j]), self.batch_scope)
        return sq.sum() * 0.0 if mean is None else mean

    def from_pairs(self, x1: Tensor, x2: Tensor, same: Tensor) -> Tensor:
        """Mean loss over the given pairs ``(x1[p], x2[p])``.

        Args:
            x1: (P, D) first elements.
            x2: (P, D) second elements.
            same: (P,) bool, or integers/floats in {0, 1}: 1 for a similar pair (Y = 0).

        Returns:
            The scalar loss.
        """
        if x1.dim() != 2 or x1.shape != x2.shape or x1.shape[0] == 0:
            raise ValueError(f"x1 and x2 must both be (P, D) with P >= 1, got {tuple(x1.shape)} and {tuple(x2.shape)}")
        if same.shape != x1.shape[:1]:
            raise ValueError(f"same must be ({x1.shape[0]},), got {tuple(same.shape)}")
        if same.dtype != torch.bool:
            if not ((same == 0) | (same == 1)).all():
                raise ValueError("same must hold only 0/1 (or bool) values")
            same = same == 1
        sq = ((x1 - x2) ** 2).sum(dim=1)  # (P,)
        return self.pair_loss(sq, same.to(x1.device)).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, batch_scope={self.batch_scope!r}"
