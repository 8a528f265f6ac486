"""Triplet loss (Hermans, Beyer, Leibe 2017) against per-anchor brute-force loops.

Batch-hard:  L = mean_a [m + max_{p: y_p = y_a} D_ap - min_{n: y_n != y_a} D_an]_+
Batch-all:   the mean of [m + D_ap - D_an]_+ over the valid (a, p != a, n) with a positive loss
Soft margin: [m + x]_+ -> ln(1 + e^x).  D: plain euclidean distance by default.
"""

from __future__ import annotations

import math

import pytest
import torch

from reid_core.losses.triplet import TripletLoss, hard_example_mining


def dist(a: list[float], b: list[float], metric: str = "euclidean") -> float:
    if metric == "cosine":
        dot = sum(u * v for u, v in zip(a, b))
        return 1.0 - dot / (math.sqrt(sum(u * u for u in a)) * math.sqrt(sum(v * v for v in b)))
    sq = sum((u - v) ** 2 for u, v in zip(a, b))
    return sq if metric == "sqeuclidean" else math.sqrt(sq)


def hinge(x: float, margin: float, soft: bool) -> float:
    return math.log1p(math.exp(x)) if soft else max(0.0, margin + x)


def reference_batch_hard(
    x: torch.Tensor, labels: torch.Tensor, margin: float, soft: bool, metric: str = "euclidean"
) -> float:
    rows, ys = x.double().tolist(), labels.tolist()
    losses = []
    for a in range(len(rows)):
        # p ranges over all images of the anchor's identity, the anchor included (D_aa = 0).
        hardest_pos = max(dist(rows[a], rows[p], metric) if p != a else 0.0 for p in range(len(rows)) if ys[p] == ys[a])
        negs = [dist(rows[a], rows[n], metric) for n in range(len(rows)) if ys[n] != ys[a]]
        if negs:
            losses.append(hinge(hardest_pos - min(negs), margin, soft))
    return sum(losses) / len(losses)


def reference_batch_all(x: torch.Tensor, labels: torch.Tensor, margin: float, soft: bool) -> float:
    rows, ys = x.double().tolist(), labels.tolist()
    losses = []
    for a in range(len(rows)):
        for p in range(len(rows)):
            if p == a or ys[p] != ys[a]:
                continue
            for n in range(len(rows)):
                if ys[n] != ys[a]:
                    losses.append(hinge(dist(rows[a], rows[p]) - dist(rows[a], rows[n]), margin, soft))
    active = [v for v in losses if v > 0]  # Hermans et al.'s BA!=0: average the non-zero terms
    return sum(active) / len(active) if active else 0.0


def pk_batch(p: int = 4, k: int = 3, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(p * k, dim, generator=gen, dtype=torch.float64)
    labels = torch.arange(p).repeat_interleave(k)
    return x, labels


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("margin", [0.3, 1.0])
def test_batch_hard_matches_loop(margin: float, soft: bool) -> None:
    x, labels = pk_batch()
    got = TripletLoss(margin, "batch_hard", soft)(x, labels)
    assert got.item() == pytest.approx(reference_batch_hard(x, labels, margin, soft), rel=1e-10)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("margin", [0.3, 1.0])
def test_batch_all_matches_loop(margin: float, soft: bool) -> None:
    x, labels = pk_batch()
    got = TripletLoss(margin, "batch_all", soft)(x, labels)
    assert got.item() == pytest.approx(reference_batch_all(x, labels, margin, soft), rel=1e-10)


def test_batch_all_has_zero_and_nonzero_terms() -> None:
    """The check above covers the 'non-zero only' averaging only if both kinds occur."""
    x, labels = pk_batch()
    x = x * 3.0  # spread the points so that some triplets are already satisfied
    rows, ys = x.tolist(), labels.tolist()
    vals = [
        dist(rows[a], rows[p]) - dist(rows[a], rows[n]) + 0.3
        for a in range(12)
        for p in range(12)
        for n in range(12)
        if p != a and ys[p] == ys[a] and ys[n] != ys[a]
    ]
    assert min(vals) < 0 < max(vals)
    got = TripletLoss(0.3, "batch_all")(x, labels)
    assert got.item() == pytest.approx(reference_batch_all(x, labels, 0.3, False), rel=1e-10)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_metrics_match_loop(metric: str) -> None:
    x, labels = pk_batch(seed=3)
    got = TripletLoss(0.3, metric=metric)(x, labels)
    assert got.item() == pytest.approx(reference_batch_hard(x, labels, 0.3, False, metric), rel=1e-8)


def test_default_is_batch_hard_euclidean_margin_03() -> None:
    x, labels = pk_batch(seed=4)
    assert TripletLoss()(x, labels).item() == pytest.approx(reference_batch_hard(x, labels, 0.3, False), rel=1e-10)


def test_unbalanced_batch_with_singleton_identity() -> None:
    """An identity with one image: its hardest positive is the anchor itself, D = 0."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 3])
    for mining in ("batch_hard", "batch_all"):
        ref = reference_batch_hard if mining == "batch_hard" else reference_batch_all
        got = TripletLoss(1.0, mining)(x, labels)
        assert got.item() == pytest.approx(ref(x, labels, 1.0, False), rel=1e-10)


def test_hard_example_mining_indices() -> None:
    x, labels = pk_batch(seed=6)
    d = torch.cdist(x, x)
    dist_ap, dist_an, pos_idx, neg_idx = hard_example_mining(d, labels)
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if labels[p] == labels[a]]
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        assert int(pos_idx[a]) == max(pos, key=lambda p: d[a, p].item())
        assert int(neg_idx[a]) == min(neg, key=lambda n: d[a, n].item())
        assert dist_ap[a] == d[a, pos_idx[a]] and dist_an[a] == d[a, neg_idx[a]]


def loop_loss_torch(x: torch.Tensor, labels: torch.Tensor, margin: float, mining: str, soft: bool) -> torch.Tensor:
    """The same loops in torch ops, so autograd gives the reference gradient."""
    n = len(labels)

    def d(i: int, j: int) -> torch.Tensor:
        return torch.linalg.vector_norm(x[i] - x[j])

    def h(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(v) if soft else torch.clamp(margin + v, min=0)

    terms = []
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [m for m in range(n) if labels[m] != labels[a]]
        if mining == "batch_hard":
            terms.append(h(torch.stack([d(a, p) for p in pos]).max() - torch.stack([d(a, m) for m in neg]).min()))
        else:
            terms += [h(d(a, p) - d(a, m)) for p in pos for m in neg]
    t = torch.stack(terms)
    return t[t > 0].mean() if mining == "batch_all" else t.mean()


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("mining", ["batch_hard", "batch_all"])
def test_gradient_matches_loop_and_gradcheck(mining: str, soft: bool) -> None:
    x, labels = pk_batch(p=3, k=3, dim=4, seed=7)
    loss = TripletLoss(0.5, mining, soft)
    xa = x.clone().requires_grad_(True)
    loss(xa, labels).backward()
    xb = x.clone().requires_grad_(True)
    loop_loss_torch(xb, labels, 0.5, mining, soft).backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    assert torch.autograd.gradcheck(lambda z: loss(z, labels), (x.clone().requires_grad_(True),))


def test_duplicate_embeddings_and_single_identity_are_finite() -> None:
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    for mining in ("batch_hard", "batch_all"):
        loss = TripletLoss(0.3, mining)(x, torch.tensor([0, 0, 1, 1]))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
        x.grad = None
        only_one_id = TripletLoss(0.3, mining)(x, torch.zeros(4, dtype=torch.long))
        assert only_one_id.item() == 0.0
        only_one_id.backward()  # still part of the graph, gradient zero
        assert torch.equal(x.grad, torch.zeros_like(x))
        x.grad = None


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="mining"):
        TripletLoss(mining="semi_hard")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-0.1)
    x, labels = pk_batch()
    for mining in ("batch_hard", "batch_all"):
        with pytest.raises(ValueError, match="labels"):
            TripletLoss(mining=mining)(x, labels[:-1])
        with pytest.raises(ValueError, match="labels"):
            TripletLoss(mining=mining)(x, labels[:, None])
