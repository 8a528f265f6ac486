"""Tests for reid_core.losses.aligned_triplet and reid_core.losses.mutual (AlignedReID, DML)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reid_core.alignment import pairwise_aligned_distance
from reid_core.losses.aligned_triplet import AlignedReIDLoss, AlignedTripletLoss
from reid_core.losses.mutual import (
    MutualLearningLoss,
    MutualPair,
    classification_mutual_loss,
    metric_mutual_loss,
)
from reid_core.losses.triplet import TripletLoss
from reid_core.models.alignedreid import AlignedReID
from reid_core.models.outputs import ReIDOutput

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _euclidean(a: torch.Tensor) -> list[list[float]]:
    rows = a.tolist()
    return [[math.sqrt(sum((u - v) ** 2 for u, v in zip(p, q))) for q in rows] for p in rows]


def _mine(dist: list[list[float]], labels: list[int]) -> tuple[list[int], list[int]]:
    """Hardest positive (farthest, self included) and hardest negative (closest) by loops."""
    pos, neg = [], []
    for a in range(len(labels)):
        same = [j for j in range(len(labels)) if labels[j] == labels[a]]
        other = [j for j in range(len(labels)) if labels[j] != labels[a]]
        pos.append(max(same, key=lambda j: dist[a][j]))
        neg.append(min(other, key=lambda j: dist[a][j]))
    return pos, neg


# ----------------------------------------------------------------------------- triplet losses


def test_global_term_equals_triplet_loss() -> None:
    feats, local = _randn(6, 10, seed=0), _randn(6, 4, 5, seed=1)
    terms = AlignedTripletLoss(margin=0.3)(feats, local, LABELS)
    expected = TripletLoss(margin=0.3)(feats.float(), LABELS)
    torch.testing.assert_close(terms["global"], expected.to(terms["global"].dtype), rtol=1e-5, atol=1e-6)


def _batch_where_minings_differ() -> tuple[torch.Tensor, torch.Tensor, list[int], list[int], list[int], list[int]]:
    labels = LABELS.tolist()
    for seed in range(100):
        feats, local = _randn(6, 3, seed=seed), _randn(6, 4, 3, seed=1000 + seed)
        local_dist = pairwise_aligned_distance(local).tolist()
        pos_g, neg_g = _mine(_euclidean(feats), labels)
        pos_l, neg_l = _mine(local_dist, labels)
        if neg_g != neg_l:
            return feats, local, pos_g, neg_g, pos_l, neg_l
    raise AssertionError("no seed gave a batch where global and local mining differ")


def test_local_term_uses_the_samples_mined_by_the_global_distance() -> None:
    feats, local, pos_g, neg_g, pos_l, neg_l = _batch_where_minings_differ()
    local_dist = pairwise_aligned_distance(local)
    margin = 0.3

    def expected(pos: list[int], neg: list[int]) -> float:
        return sum(max(0.0, margin + float(local_dist[a, pos[a]] - local_dist[a, neg[a]])) for a in range(6)) / 6

    by_global = AlignedTripletLoss(local_margin=margin, mining="global")(feats, local, LABELS)["local"]
    by_local = AlignedTripletLoss(local_margin=margin, mining="local")(feats, local, LABELS)["local"]
    assert abs(expected(pos_g, neg_g) - expected(pos_l, neg_l)) > 1e-6  # the batch tells them apart
    assert float(by_global) == pytest.approx(expected(pos_g, neg_g), abs=1e-6)
    assert float(by_local) == pytest.approx(expected(pos_l, neg_l), abs=1e-6)


def test_triplet_terms_backpropagate_into_both_features() -> None:
    feats = _randn(6, 10, seed=2).requires_grad_()
    local = _randn(6, 4, 5, seed=3).requires_grad_()
    terms = AlignedTripletLoss(margin=5.0, local_margin=5.0)(feats, local, LABELS)  # large margins: all active
    (terms["global"] + terms["local"]).backward()
    assert feats.grad.abs().sum() > 0 and local.grad.abs().sum() > 0


def test_single_identity_batch_gives_zero_loss_with_a_graph() -> None:
    feats = _randn(4, 10, seed=4).requires_grad_()
    terms = AlignedTripletLoss()(feats, _randn(4, 3, 5, seed=5), torch.zeros(4, dtype=torch.long))
    assert float(terms["global"].detach()) == 0.0 and float(terms["local"].detach()) == 0.0
    terms["global"].backward()


def test_aligned_reid_loss_terms() -> None:
    out = ReIDOutput(
        feat=_randn(6, 10, seed=6),
        logits=_randn(6, 3, seed=7),
        global_feat=_randn(6, 10, seed=8),
        local=_randn(6, 4, 5, seed=9),
    )
    terms = AlignedReIDLoss(id_weight=0.5, global_weight=2.0, local_weight=1.0)(out, LABELS)
    assert set(terms) == {"id", "global", "local"}
    trip = AlignedTripletLoss()(out.global_feat, out.local, LABELS)  # global_feat, not feat
    torch.testing.assert_close(terms["global"], 2.0 * trip["global"])
    torch.testing.assert_close(terms["local"], trip["local"])
    log_p = out.logits.float().log_softmax(1)
    torch.testing.assert_close(terms["id"], 0.5 * -log_p[torch.arange(6), LABELS].mean())
    assert set(AlignedReIDLoss(local_weight=0.0)(out, LABELS)) == {"id", "global"}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mining"):
        AlignedTripletLoss(mining="both")
    with pytest.raises(ValueError, match="margins"):
        AlignedTripletLoss(margin=-1.0)
    with pytest.raises(ValueError, match="local_feat"):
        AlignedTripletLoss()(_randn(6, 10, seed=0), _randn(6, 10, seed=0), LABELS)
    with pytest.raises(ValueError, match="prob_mutual_weight"):
        MutualLearningLoss(prob_mutual_weight=-1.0)


# ---------------------------------------------------------------------------- mutual learning


def test_classification_mutual_loss_is_kl_of_peer_to_self() -> None:
    z1, z2 = _randn(5, 4, seed=10), _randn(5, 4, seed=11)
    total = 0.0
    for n in range(5):
        p1 = [math.exp(v) for v in z1[n].tolist()]
        p2 = [math.exp(v) for v in z2[n].tolist()]
        p1 = [v / sum(p1) for v in p1]
        p2 = [v / sum(p2) for v in p2]
        total += sum(q * (math.log(q) - math.log(p)) for p, q in zip(p1, p2))  # KL(p2 || p1)
    assert float(classification_mutual_loss(z1, z2)) == pytest.approx(total / 5, rel=1e-5)


def test_no_gradient_flows_into_the_peer() -> None:
    z1, z2 = _randn(5, 4, seed=12).requires_grad_(), _randn(5, 4, seed=13).requires_grad_()
    d1, d2 = _randn(5, 5, seed=14).requires_grad_(), _randn(5, 5, seed=15).requires_grad_()
    (classification_mutual_loss(z1, z2) + metric_mutual_loss(d1, d2)).backward()
    assert z2.grad is None and d2.grad is None
    assert z1.grad.abs().sum() > 0 and d1.grad.abs().sum() > 0


def test_metric_mutual_loss_equals_formula() -> None:
    d1, d2 = _randn(4, 4, seed=16), _randn(4, 4, seed=17)
    expected = sum((float(d2[i, j]) - float(d1[i, j])) ** 2 for i in range(4) for j in range(4)) / 16
    assert float(metric_mutual_loss(d1, d2)) == pytest.approx(expected, rel=1e-6)


class _TinyNet(nn.Module):
    """A small model with a ReIDOutput, so the pair tests run in milliseconds."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Linear(12, 4 * 6)
        self.classifier = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> ReIDOutput:
        h = self.body(x.flatten(1))  # (B, 24)
        return ReIDOutput(feat=h, logits=self.classifier(h), global_feat=h, local=h.view(-1, 4, 6))


def _pair_and_batch() -> tuple[MutualPair, torch.Tensor]:
    return MutualPair(_TinyNet(0), _TinyNet(1)), torch.randn(6, 3, 2, 2, generator=torch.Generator().manual_seed(3))


def test_mutual_learning_terms_equal_their_formulas() -> None:
    pair, x = _pair_and_batch()
    out = pair(x)
    loss = MutualLearningLoss(prob_mutual_weight=0.5, global_mutual_weight=2.0, local_mutual_weight=3.0)
    terms = loss(out, LABELS)
    names = {"id", "global", "local", "prob_mutual", "global_mutual", "local_mutual"}
    assert set(terms) == {f"{n}_{k}" for n in names for k in (1, 2)}
    o1, o2 = out.net1, out.net2
    d1 = torch.cdist(o1.global_feat, o1.global_feat)
    d2 = torch.cdist(o2.global_feat, o2.global_feat)
    torch.testing.assert_close(terms["global_mutual_1"], 2.0 * ((d2 - d1) ** 2).mean(), rtol=1e-4, atol=1e-5)
    l1, l2 = pairwise_aligned_distance(o1.local), pairwise_aligned_distance(o2.local)
    torch.testing.assert_close(terms["local_mutual_2"], 3.0 * ((l1 - l2) ** 2).mean(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms["prob_mutual_2"], 0.5 * classification_mutual_loss(o2.logits, o1.logits))
    own = AlignedReIDLoss()(o1, LABELS)
    for name in ("id", "global", "local"):
        torch.testing.assert_close(terms[f"{name}_1"], own[name], rtol=1e-5, atol=1e-6)


def test_summed_loss_gives_each_net_the_gradient_of_its_own_loss() -> None:
    pair, x = _pair_and_batch()
    loss = MutualLearningLoss(local_mutual_weight=1.0)
    terms = loss(pair(x), LABELS)
    net1_params = list(pair.net1.parameters())
    net2_params = list(pair.net2.parameters())
    own_1 = sum(v for k, v in terms.items() if k.endswith("_1"))
    # Net 1's loss reaches no parameter of net 2 (the peer sits behind a stop-gradient).
    grads = torch.autograd.grad(own_1, net2_params, retain_graph=True, allow_unused=True)
    assert all(g is None or float(g.abs().sum()) == 0.0 for g in grads)
    # So the gradient of the sum, on net 1, is the gradient of net 1's own loss.
    g_own = torch.autograd.grad(own_1, net1_params, retain_graph=True)
    g_sum = torch.autograd.grad(sum(terms.values()), net1_params)
    for a, b in zip(g_own, g_sum):
        torch.testing.assert_close(a, b)


def test_mutual_pair_trains_two_aligned_reid_nets_on_the_cpu() -> None:
    torch.manual_seed(0)
    pair = MutualPair(AlignedReID(3, "resnet18", local_dim=16), AlignedReID(3, "resnet18", local_dim=16))
    images = torch.randn(6, 3, 32, 16)
    out = pair.train()(images)
    assert out.net1.local.shape == (6, 2, 16) and out.net2.logits.shape == (6, 3)
    before = [p.detach().clone() for p in (pair.net1.classifier.weight, pair.net2.classifier.weight)]
    optimizer = torch.optim.SGD(pair.parameters(), lr=0.1)
    total = sum(MutualLearningLoss()(out, LABELS).values())
    total.backward()
    optimizer.step()
    assert torch.isfinite(total)
    for b, p in zip(before, (pair.net1.classifier.weight, pair.net2.classifier.weight)):
        assert not torch.equal(b, p)
    with pytest.raises(ValueError, match="distinct"):
        MutualPair(pair.net1, pair.net1)
