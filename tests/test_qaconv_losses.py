"""Tests for reid_core.losses.qaconv_losses against per-anchor loops written from the formulas
(Liao & Shao, CVPR 2022: pairwise matching loss of QAConv 2.0, batch-hard score triplet of 2.1).
"""

from __future__ import annotations

import math

import pytest
import torch

from reid_core.losses.qaconv_losses import (
    PairwiseMatchingLoss,
    ScoreTripletLoss,
    hardest_scores,
    matching_accuracy,
)
from reid_core.models.qaconv import QAConv


def slow_pairwise_matching(scores: torch.Tensor, labels: torch.Tensor, include_self: bool) -> float:
    """(1/B) sum_a sum_j BCE(sigmoid(S_aj), [y_a == y_j]), by loops."""
    b = len(labels)
    total = 0.0
    for a in range(b):
        for j in range(b):
            if j == a and not include_self:
                continue
            t = 1.0 if labels[a] == labels[j] else 0.0
            p = 1.0 / (1.0 + math.exp(-float(scores[a, j])))
            total += -(t * math.log(p) + (1.0 - t) * math.log(1.0 - p))
    return total / b


def slow_score_triplet(
    scores: torch.Tensor, labels: torch.Tensor, margin: float, skip: frozenset[int] | set[int] = frozenset()
) -> float:
    """mean over anchors with a positive (not itself) and a negative of [m - (min_p S - max_n S)]_+."""
    losses = []
    for a in range(len(labels)):
        if a in skip:
            continue
        pos = [float(scores[a, j]) for j in range(len(labels)) if j != a and labels[j] == labels[a]]
        neg = [float(scores[a, j]) for j in range(len(labels)) if labels[j] != labels[a]]
        if not pos or not neg:
            continue
        losses.append(max(0.0, margin - (min(pos) - max(neg))))
    return sum(losses) / len(losses)


def random_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])  # class 3 has no other positive
    scores = torch.randn(8, 8, generator=gen, dtype=torch.float64) * 6.0
    return scores, labels


def test_pairwise_matching_hand_value() -> None:
    # All logits 0: every pair costs log 2, every anchor has B = 2 pairs (self included).
    loss = PairwiseMatchingLoss()(torch.zeros(2, 2), torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(2 * math.log(2))
    no_self = PairwiseMatchingLoss(include_self=False)(torch.zeros(2, 2), torch.tensor([0, 1]))
    assert no_self.item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("include_self", [True, False])
def test_pairwise_matching_equals_loop(include_self: bool) -> None:
    scores, labels = random_batch(0)
    got = PairwiseMatchingLoss(include_self=include_self)(scores, labels)
    assert got.item() == pytest.approx(slow_pairwise_matching(scores, labels, include_self), rel=1e-9)


def test_score_triplet_hand_value() -> None:
    scores = torch.tensor([[0.0, 5.0, 1.0], [5.0, 0.0, -2.0], [1.0, -2.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    # anchor 0: 16 - (5 - 1) = 12; anchor 1: 16 - (5 - (-2)) = 9; anchor 2 has no positive.
    assert ScoreTripletLoss(margin=16)(scores, labels).item() == pytest.approx(10.5)
    # The self pair (diagonal 0, lower than 5) must not be taken as the hardest positive.
    assert ScoreTripletLoss(margin=0)(scores, labels).item() == pytest.approx(0.0)


@pytest.mark.parametrize("margin", [0.0, 4.0, 16.0])
def test_score_triplet_equals_loop(margin: float) -> None:
    for seed in range(3):
        scores, labels = random_batch(seed)
        got = ScoreTripletLoss(margin)(scores, labels)
        assert got.item() == pytest.approx(slow_score_triplet(scores, labels, margin), rel=1e-9)


def test_score_triplet_drops_non_finite_anchors() -> None:
    scores, labels = random_batch(1)
    scores[2, 5] = float("nan")  # anchor 2's row becomes unusable (e.g. an fp16 overflow)
    loss = ScoreTripletLoss(16.0)(scores, labels)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(slow_score_triplet(scores, labels, 16.0, skip={2}), rel=1e-9)
    assert loss.item() != pytest.approx(slow_score_triplet(scores, labels, 16.0, skip={2, 0}), rel=1e-9)


def test_score_triplet_no_valid_anchor_is_zero_with_graph() -> None:
    scores = torch.randn(3, 3, requires_grad=True)
    loss = ScoreTripletLoss()(scores, torch.tensor([0, 1, 2]))  # no anchor has a positive
    assert loss.item() == 0.0
    loss.backward()
    assert scores.grad is not None and (scores.grad == 0).all()


def test_hardest_scores_and_accuracy() -> None:
    scores = torch.tensor([[9.0, 3.0, 1.0, 4.0], [3.0, 9.0, 2.0, 0.0], [1.0, 2.0, 9.0, 5.0], [4.0, 0.0, 5.0, 9.0]])
    labels = torch.tensor([0, 0, 1, 1])
    min_pos, max_neg = hardest_scores(scores, labels)
    assert min_pos.tolist() == [3.0, 3.0, 5.0, 5.0]  # diagonal 9 excluded
    assert max_neg.tolist() == [4.0, 2.0, 2.0, 4.0]
    # anchor 0: 3 > 4 no; anchor 1: 3 > 2 yes; anchor 2: 5 > 2 yes; anchor 3: 5 > 4 yes.
    assert matching_accuracy(scores, labels).item() == pytest.approx(0.75)


def test_gradients_flow_through_qaconv() -> None:
    torch.manual_seed(0)
    matcher = QAConv(num_features=4, height=3, width=2).train()
    maps = torch.nn.functional.normalize(torch.randn(6, 4, 3, 2), dim=1).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    for loss_fn in (PairwiseMatchingLoss(), ScoreTripletLoss(16.0)):
        maps.grad = None
        matcher.zero_grad()
        loss = loss_fn(matcher.pairwise(maps), labels)
        loss.backward()
        assert maps.grad is not None and maps.grad.abs().sum() > 0
        assert matcher.fc.weight.grad is not None and torch.isfinite(matcher.fc.weight.grad).all()


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="scores"):
        PairwiseMatchingLoss()(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        ScoreTripletLoss()(torch.zeros(3, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="margin"):
        ScoreTripletLoss(margin=-1.0)
