"""Label-smoothing cross-entropy against a per-sample loop over the smoothed target."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reid_core.losses.cross_entropy import LabelSmoothingCrossEntropy


def reference(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> float:
    """-(1/B) sum_i sum_j q_ij log p_ij with q = (1 - eps) one-hot + eps / C (Szegedy et al. 2016)."""
    total = 0.0
    rows = logits.double().tolist()
    for row, y in zip(rows, labels.tolist()):
        c = len(row)
        top = max(row)
        log_z = top + math.log(sum(math.exp(v - top) for v in row))
        for j, v in enumerate(row):
            q = (1.0 - eps) * (j == y) + eps / c
            total -= q * (v - log_z)
    return total / len(rows)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_matches_per_sample_loop(eps: float) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 13, generator=gen, dtype=torch.float64) * 4
    labels = torch.randint(0, 13, (9,), generator=gen)
    got = LabelSmoothingCrossEntropy(eps)(logits, labels)
    assert got.item() == pytest.approx(reference(logits, labels, eps), rel=1e-12)


def test_agrees_with_torch_label_smoothing_and_plain_ce() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 751, generator=gen)
    labels = torch.randint(0, 751, (6,), generator=gen)
    torch.testing.assert_close(
        LabelSmoothingCrossEntropy(0.1)(logits, labels), F.cross_entropy(logits, labels, label_smoothing=0.1)
    )
    torch.testing.assert_close(LabelSmoothingCrossEntropy(0.0)(logits, labels), F.cross_entropy(logits, labels))


def test_default_epsilon_is_bag_of_tricks_value() -> None:
    assert LabelSmoothingCrossEntropy().epsilon == 0.1


def test_gradcheck_and_gradient_formula() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 4, 2, 2])
    loss_fn = LabelSmoothingCrossEntropy(0.1)
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, labels), (logits,))
    # dL/dz = (softmax - q) / B
    loss_fn(logits, labels).backward()
    q = torch.full((4, 5), 0.1 / 5, dtype=torch.float64)
    q[torch.arange(4), labels] += 0.9
    torch.testing.assert_close(logits.grad, (logits.detach().softmax(1) - q) / 4)


def test_half_precision_input_is_finite_and_float32() -> None:
    logits = torch.tensor([[30.0, -30.0, 0.0], [-60000.0, 60000.0, 0.0]], dtype=torch.float16)
    loss = LabelSmoothingCrossEntropy(0.1)(logits, torch.tensor([0, 0]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bad_inputs_raise() -> None:
    loss = LabelSmoothingCrossEntropy()
    with pytest.raises(ValueError, match="epsilon"):
        LabelSmoothingCrossEntropy(1.0)
    with pytest.raises(ValueError, match="logits"):
        loss(torch.randn(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(3, 4), torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        loss(torch.randn(3, 4), torch.tensor([0, 1, 4]))
