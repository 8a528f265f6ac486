"""Contrastive loss against a per-pair loop over Hadsell et al.'s formula."""

from __future__ import annotations

import math

import pytest
import torch

from reid_core.losses.contrastive import ContrastiveLoss


def pair_term(a: list[float], b: list[float], dissimilar: bool, m: float) -> float:
    """(1 - Y) D^2 / 2 + Y max(0, m - D)^2 / 2, with Y = 1 for a dissimilar pair."""
    d = math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))
    return 0.5 * max(0.0, m - d) ** 2 if dissimilar else 0.5 * d * d


def reference_all_pairs(x: torch.Tensor, labels: torch.Tensor, m: float) -> float:
    rows, ys = x.double().tolist(), labels.tolist()
    terms = [pair_term(rows[i], rows[j], ys[i] != ys[j], m) for i in range(len(rows)) for j in range(i + 1, len(rows))]
    return sum(terms) / len(terms)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64) * 0.6
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 4])
    return x, labels


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.5])
def test_all_pairs_matches_loop(margin: float) -> None:
    x, labels = batch()
    got = ContrastiveLoss(margin)(x, labels)
    assert got.item() == pytest.approx(reference_all_pairs(x, labels, margin), rel=1e-10)


def test_both_hinge_sides_are_exercised() -> None:
    """Some dissimilar pairs lie inside the margin and some outside (else the test proves less)."""
    x, labels = batch()
    d = torch.cdist(x, x)
    diff = labels[:, None] != labels[None, :]
    assert (d[diff] < 1.0).any() and (d[diff] > 1.0).any()


def test_given_pairs_match_loop_and_label_types() -> None:
    gen = torch.Generator().manual_seed(1)
    x1 = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    x2 = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    same = torch.tensor([1, 0, 0, 1, 0, 1, 0])
    want = sum(pair_term(a, b, not s, 1.5) for a, b, s in zip(x1.tolist(), x2.tolist(), same.tolist())) / 7
    loss = ContrastiveLoss(1.5)
    for s in (same, same.bool(), same.double()):
        assert loss.from_pairs(x1, x2, s).item() == pytest.approx(want, rel=1e-10)


def test_all_pairs_equals_given_pairs_on_the_same_pairs() -> None:
    x, labels = batch()
    i, j = torch.triu_indices(10, 10, offset=1)
    loss = ContrastiveLoss(1.0)
    torch.testing.assert_close(loss(x, labels), loss.from_pairs(x[i], x[j], labels[i] == labels[j]))


def test_gradcheck_both_forms() -> None:
    x, labels = batch()
    loss = ContrastiveLoss(1.0)
    assert torch.autograd.gradcheck(lambda z: loss(z, labels), (x.clone().requires_grad_(True),))
    x1, x2 = x[:5].clone().requires_grad_(True), x[5:].clone().requires_grad_(True)
    same = torch.tensor([True, False, False, True, False])
    assert torch.autograd.gradcheck(lambda a, b: loss.from_pairs(a, b, same), (x1, x2))


def test_gradient_matches_autograd_of_reference() -> None:
    """Autograd through the vectorised loss equals autograd through a per-pair torch loop."""
    x, labels = batch()
    xa = x.clone().requires_grad_(True)
    ContrastiveLoss(1.0)(xa, labels).backward()
    xb = x.clone().requires_grad_(True)
    terms = []
    for i in range(10):
        for j in range(i + 1, 10):
            d = torch.linalg.vector_norm(xb[i] - xb[j])
            terms.append(0.5 * d**2 if labels[i] == labels[j] else 0.5 * torch.clamp(1.0 - d, min=0) ** 2)
    torch.stack(terms).mean().backward()
    torch.testing.assert_close(xa.grad, xb.grad)


def test_identical_embeddings_give_finite_gradients() -> None:
    x = torch.zeros(4, 3, requires_grad=True)
    loss = ContrastiveLoss(1.0)(x, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    # 6 pairs, all at distance 0: the 4 dissimilar ones each cost m^2 / 2, the 2 similar ones 0.
    assert loss.item() == pytest.approx(4 * 0.5 / 6)
    assert torch.isfinite(x.grad).all()


def test_far_dissimilar_and_coincident_similar_pairs_cost_nothing() -> None:
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [5.0, 0.0]])
    assert ContrastiveLoss(2.0)(x, torch.tensor([0, 0, 1, 1])).item() == 0.0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="margin"):
        ContrastiveLoss(0.0)
    loss = ContrastiveLoss(1.0)
    with pytest.raises(ValueError, match="B >= 2"):
        loss(torch.randn(1, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(4, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="x1 and x2"):
        loss.from_pairs(torch.randn(4, 3), torch.randn(3, 3), torch.tensor([0, 1, 1, 0]))
    with pytest.raises(ValueError, match="same must be"):
        loss.from_pairs(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="0/1"):
        loss.from_pairs(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0.5, 1.0]))
