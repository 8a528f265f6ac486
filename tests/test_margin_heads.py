"""Margin heads (L2-softmax, SphereFace, CosFace, ArcFace, AdaCos) against per-sample formulas.

Each reference below is written from the paper's equation with the ``math`` module, one
sample and one class at a time; the heads are vectorised, so agreement is a real check.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid_core.losses.adacos import AdaCos
from reid_core.losses.arcface import ArcFace
from reid_core.losses.cosface import CosFace
from reid_core.losses.l2_softmax import L2Softmax, l2_softmax_scale_lower_bound
from reid_core.losses.sphereface import SphereFace, sphereface_psi

B, D, C = 7, 5, 6


def make_head(cls: type[nn.Module], **kw: object) -> nn.Module:
    torch.manual_seed(0)
    head = cls(D, C, **kw)
    if isinstance(head, L2Softmax) and head.bias is not None:
        with torch.no_grad():
            head.bias.normal_()  # a non-zero bias, so the test sees it
    return head


def batch(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, D, generator=gen, dtype=dtype) * 3.0
    y = torch.tensor([0, 1, 2, 3, 4, 5, 2])
    return x, y


def cos_of(x: list[float], w: list[float]) -> float:
    dot = sum(a * b for a, b in zip(x, w))
    return dot / (math.sqrt(sum(a * a for a in x)) * math.sqrt(sum(b * b for b in w)))


def reference_logits(head: nn.Module, x: torch.Tensor, y: torch.Tensor | None, sphere_iter: int = 0) -> torch.Tensor:
    """Per-sample, per-class logits (B, C) from the papers' formulas, as float64."""
    W = head.weight.detach().double().tolist()
    bias = head.bias.detach().double().tolist() if isinstance(head, L2Softmax) and head.bias is not None else None
    out = []
    for i, xi in enumerate(x.double().tolist()):
        norm = math.sqrt(sum(a * a for a in xi))
        row = []
        for j, wj in enumerate(W):
            c = cos_of(xi, wj)
            target = y is not None and j == int(y[i])
            if isinstance(head, CosFace):
                row.append(head.s * (c - head.m if target else c))
            elif isinstance(head, ArcFace):
                t = math.acos(max(-1.0, min(1.0, c)))
                if not target:
                    v = c
                elif head.easy_margin:
                    v = math.cos(t + head.m) if c > 0 else c
                else:  # ArcFace (Deng et al. 2019): cos(theta + m) while theta + m < pi, then cos - m sin(pi - m)
                    v = math.cos(t + head.m) if t + head.m < math.pi else c - head.m * math.sin(math.pi - head.m)
                row.append(head.s * v)
            elif isinstance(head, SphereFace):
                if target:
                    t = math.acos(c)
                    k = min(int(head.m * t / math.pi), head.m - 1)
                    psi = (-1) ** k * math.cos(head.m * t) - 2 * k
                    lam = max(head.lambda_min, head.base * (1 + head.gamma * sphere_iter) ** (-head.power))
                    row.append((lam * norm * c + norm * psi) / (1 + lam))
                else:
                    row.append(norm * c)
            elif isinstance(head, L2Softmax):
                alpha = float(head.scale)
                v = sum(alpha * a / norm * b for a, b in zip(xi, wj))
                row.append(v + (bias[j] if bias is not None else 0.0))
            elif isinstance(head, AdaCos):
                row.append(head.scale * c)
            else:
                raise AssertionError(type(head))
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


HEADS = [
    (CosFace, {}),
    (CosFace, {"s": 30.0, "m": 0.4}),
    (ArcFace, {}),
    (ArcFace, {"easy_margin": True}),
    (ArcFace, {"s": 10.0, "m": 1.2}),  # a large margin so the fallback branch is hit
    (SphereFace, {}),
    (SphereFace, {"m": 3}),
    (L2Softmax, {}),
    (L2Softmax, {"bias": False, "scale": 7.0}),
    (AdaCos, {"dynamic": False}),
]
IDS = [f"{c.__name__}-{kw}" for c, kw in HEADS]


@pytest.mark.parametrize(("cls", "kw"), HEADS, ids=IDS)
def test_matches_per_sample_formula(cls: type[nn.Module], kw: dict) -> None:
    head = make_head(cls, **kw).double().eval()  # eval: SphereFace's counter stays at 0
    x, y = batch()
    got = head(x, y)
    assert got.dtype == torch.float64 and got.shape == (B, C)
    torch.testing.assert_close(got, reference_logits(head, x, y), rtol=1e-9, atol=1e-9)
    plain = head(x)  # labels=None: no margin anywhere
    torch.testing.assert_close(plain, reference_logits(head, x, None), rtol=1e-9, atol=1e-9)


def test_arcface_fallback_branch_is_exercised() -> None:
    """The large-margin case above really has targets with theta + m > pi (else the test proves less)."""
    head = make_head(ArcFace, s=10.0, m=1.2).double()
    x, y = batch()
    cos_t = F.normalize(x, dim=1).mul(F.normalize(head.weight.detach(), dim=1)[y]).sum(1)
    assert (cos_t <= head.th).any() and (cos_t > head.th).any()


def test_sphereface_training_forward_uses_advanced_counter() -> None:
    head = make_head(SphereFace).double().train()
    x, y = batch()
    for step in range(1, 4):
        got = head(x, y)
        assert int(head.iteration) == step
        want = reference_logits(head, x, y, sphere_iter=step)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    head(x)  # no labels: no step
    head.eval()
    head(x, y)  # eval: no step
    assert int(head.iteration) == 3


@pytest.mark.parametrize(("cls", "kw"), HEADS + [(L2Softmax, {"learn_scale": True})], ids=IDS + ["L2Softmax-learn"])
def test_gradcheck_float64(cls: type[nn.Module], kw: dict) -> None:
    head = make_head(cls, **kw).double().eval()  # eval: no state changes between evaluations
    x, y = batch()
    params = {name: p.detach().clone().requires_grad_(True) for name, p in head.named_parameters()}
    names = list(params)

    def fn(x_: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(head, dict(zip(names, ps)), (x_, y))

    assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(True), *params.values()))


def extreme_batch(head: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows equal to, opposite to and orthogonal-ish to class weights, plus a zero row."""
    w = head.weight.detach()
    x = torch.stack([w[0] * 2.0, -w[1] * 3.0, w[2], -w[2], torch.zeros(D), w[4] * 1e-30])
    y = torch.tensor([0, 1, 2, 2, 3, 4])
    return x, y


@pytest.mark.parametrize(("cls", "kw"), HEADS, ids=IDS)
def test_finite_at_cos_plus_minus_one_and_zero_norm(cls: type[nn.Module], kw: dict) -> None:
    head = make_head(cls, **kw).train()
    x, y = extreme_batch(head)
    x.requires_grad_(True)
    logits = head(x, y)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    assert torch.isfinite(x.grad).all()
    for p in head.parameters():
        assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize(
    ("cls", "kw"), [(ArcFace, {}), (ArcFace, {"easy_margin": True}), (SphereFace, {}), (CosFace, {})]
)
def test_target_hook_gradient_finite_at_exact_cos_bounds(cls: type[nn.Module], kw: dict) -> None:
    head = cls(D, C, **kw).eval()
    cos = torch.tensor([1.0, -1.0, 1.0 - 1e-12, -1.0 + 1e-12], dtype=torch.float64, requires_grad=True)
    out = head.target_logit(cos)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(cos.grad).all()


@pytest.mark.parametrize(("cls", "kw"), HEADS, ids=IDS)
def test_low_precision_inputs(cls: type[nn.Module], kw: dict) -> None:
    """float16 / bfloat16 inputs and CPU autocast give float32 logits equal to the float32 math."""
    head = make_head(cls, **kw).eval()
    x, y = batch(torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        xl = x.to(dtype)
        want = head(xl.float(), y)
        got = head(xl, y)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got_ac = head(xl, y)
        assert got_ac.dtype == torch.float32
        torch.testing.assert_close(got_ac, want)


@pytest.mark.parametrize(("cls", "kw"), HEADS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_gradients_finite_at_extremes(cls: type[nn.Module], kw: dict, dtype: torch.dtype) -> None:
    """A zero row must not send a 1/eps gradient back: cast to float16 that is inf."""
    head = make_head(cls, **kw).train()
    x, y = extreme_batch(head)
    x.requires_grad_(True)
    F.cross_entropy(head(x.to(dtype), y), y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    assert (x.grad[4] == 0).all()  # the all-zero row: no direction, no gradient


# ---- SphereFace ------------------------------------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_sphereface_psi_formula_and_monotone(m: int) -> None:
    theta = torch.linspace(0.0, math.pi, 2001, dtype=torch.float64)
    psi = sphereface_psi(torch.cos(theta), m)
    want = []
    for t in theta.tolist():
        k = min(int(m * t / math.pi), m - 1)
        want.append((-1) ** k * math.cos(m * t) - 2 * k)
    torch.testing.assert_close(psi, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-9)
    assert (psi.diff() <= 1e-12).all()  # decreasing on [0, pi]
    assert psi[0].item() == pytest.approx(1.0) and psi[-1].item() == pytest.approx(1.0 - 2.0 * m)


def test_sphereface_plain_cos_m_theta_is_not_monotone() -> None:
    """The property above is not automatic: cos(4 theta) itself turns back up."""
    theta = torch.linspace(0.0, math.pi, 2001, dtype=torch.float64)
    assert (torch.cos(4 * theta).diff() > 0).any()


@pytest.mark.parametrize("it", [0, 1, 10, 100, 1000, 1658, 1659, 10_000])
def test_sphereface_annealing_schedule(it: int) -> None:
    head = SphereFace(D, C)
    head.iteration.fill_(it)
    want = max(5.0, 1000.0 * (1.0 + 0.12 * it) ** -1.0)
    assert head.current_lambda() == pytest.approx(want, rel=1e-12)


def test_sphereface_schedule_reaches_floor_at_1659() -> None:
    head = SphereFace(D, C)
    assert head.lambda_at(1658).item() > 5.0 and head.lambda_at(1659).item() == 5.0


def test_sphereface_counter_in_state_dict() -> None:
    head = make_head(SphereFace).train()
    x, y = batch(torch.float32)
    for _ in range(5):
        head(x, y)
    fresh = SphereFace(D, C)
    fresh.load_state_dict(head.state_dict())
    assert int(fresh.iteration) == 5 and fresh.current_lambda() == head.current_lambda()


# ---- ArcFace --------------------------------------------------------------------------
@pytest.mark.parametrize("m", [0.1, 0.5, 1.0])
def test_arcface_target_monotone_with_fallback(m: float) -> None:
    head = ArcFace(D, C, s=1.0, m=m)
    theta = torch.linspace(0.0, math.pi, 4001, dtype=torch.float64)
    g = head.target_logit(torch.cos(theta))
    assert (g.diff() <= 1e-12).all()
    # Without the fallback, cos(theta + m) turns back up once theta + m > pi.
    assert (torch.cos(theta + m).diff() > 0).any()


def test_arcface_easy_margin() -> None:
    head = ArcFace(D, C, s=1.0, m=0.5, easy_margin=True)
    cos = torch.tensor([0.9, 0.3, 1e-3, 0.0, -0.2, -1.0], dtype=torch.float64)
    got = head.target_logit(cos)
    want = [math.cos(math.acos(c) + 0.5) if c > 0 else c for c in cos.tolist()]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


# ---- AdaCos ---------------------------------------------------------------------------
W_ANGLES = [0.0, math.pi / 2, math.pi, 3 * math.pi / 2, 0.3]
X_ANGLES = {
    "easy": [0.1, 1.2, 2.9, 4.0, 0.5, 2.0, 5.5, 0.05],  # median target angle < pi/4
    "hard": [1.3, 0.1, 4.5, 2.0, 2.2, 1.1, 0.2, 3.0],  # median target angle > pi/4: the min binds
}
LABELS = [0, 1, 2, 3, 4, 0, 3, 4]


def adacos_hand_batch(
    n: int, kind: str = "easy"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float], list[int]]:
    """2-D weights at known angles and embeddings at known angles, so every cosine is cos(a - b)."""
    x_angles, labels = X_ANGLES[kind][:n], LABELS[:n]
    weight = torch.tensor([[math.cos(a), math.sin(a)] for a in W_ANGLES])
    x = torch.tensor([[math.cos(a), math.sin(a)] for a in x_angles]) * 2.5
    return weight, x, torch.tensor(labels), x_angles, labels


def target_angles_by_hand(x_angles: list[float], labels: list[int]) -> list[float]:
    return [math.acos(math.cos(a - W_ANGLES[yi])) for a, yi in zip(x_angles, labels)]


def adacos_step_by_hand(s_prev: float, x_angles: list[float], labels: list[int]) -> float:
    """Zhang et al. 2019: B_avg over non-target classes with the previous scale, median target angle."""
    b_sum = 0.0
    for a, yi in zip(x_angles, labels):
        for k, b in enumerate(W_ANGLES):
            if k != yi:
                b_sum += math.exp(s_prev * math.cos(a - b))
    b_avg = b_sum / len(x_angles)
    theta_med = statistics.median(target_angles_by_hand(x_angles, labels))
    return math.log(b_avg) / math.cos(min(math.pi / 4, theta_med))


def test_adacos_hand_batches_cover_both_sides_of_pi_over_4() -> None:
    for kind, below in (("easy", True), ("hard", False)):
        med = statistics.median(target_angles_by_hand(X_ANGLES[kind][:7], LABELS[:7]))
        assert (med < math.pi / 4) == below


@pytest.mark.parametrize("kind", ["easy", "hard"])
@pytest.mark.parametrize("n", [7, 8])  # odd and even batch: the median differs
def test_adacos_dynamic_update_by_hand(n: int, kind: str) -> None:
    weight, x, y, x_angles, labels = adacos_hand_batch(n, kind)
    head = AdaCos(2, 5, track_history=True).train()
    with torch.no_grad():
        head.weight.copy_(weight)
    s0 = math.sqrt(2) * math.log(4)
    assert head.scale == pytest.approx(s0)
    s1 = adacos_step_by_hand(s0, x_angles, labels)
    logits = head(x, y)
    assert head.scale == pytest.approx(s1, rel=1e-5)
    cos = torch.tensor([[math.cos(a - b) for b in W_ANGLES] for a in x_angles])
    torch.testing.assert_close(logits, s1 * cos, rtol=1e-5, atol=1e-5)  # new scale used at once
    s2 = adacos_step_by_hand(s1, x_angles, labels)
    head(x, y)
    assert head.scale == pytest.approx(s2, rel=1e-5)
    assert head.scale_history == pytest.approx([s1, s2], rel=1e-5)
    assert head.state_dict()["s"].item() == pytest.approx(s2, rel=1e-6)


def test_adacos_no_update_in_eval_or_fixed_or_without_labels() -> None:
    weight, x, y, _, _ = adacos_hand_batch(7)
    s0 = math.sqrt(2) * math.log(4)
    for head in (AdaCos(2, 5).eval(), AdaCos(2, 5, dynamic=False).train()):
        with torch.no_grad():
            head.weight.copy_(weight)
        head(x, y)
        assert head.scale == pytest.approx(s0)
    head = AdaCos(2, 5).train()
    head(x)
    assert head.scale == pytest.approx(s0)


def test_adacos_update_carries_no_gradient() -> None:
    weight, x, y, _, _ = adacos_hand_batch(8)
    head = AdaCos(2, 5).train()
    head(x, y).sum().backward()
    assert not head.s.requires_grad and head.weight.grad is not None


# ---- L2-softmax, API and errors -------------------------------------------------------
def test_l2_softmax_lower_bound() -> None:
    assert l2_softmax_scale_lower_bound(10, 0.9) == pytest.approx(math.log(0.9 * 8 / 0.1))
    # At alpha_low the best case of the paper's derivation (target at cos 1, one class at
    # cos -1, the other C - 2 at cos 0) reaches exactly p.
    c, p = 751, 0.95
    a = l2_softmax_scale_lower_bound(c, p)
    prob = math.exp(a) / (math.exp(a) + (c - 2) + math.exp(-a))
    assert prob == pytest.approx(p, rel=1e-3)
    with pytest.raises(ValueError, match="num_classes"):
        l2_softmax_scale_lower_bound(2)
    with pytest.raises(ValueError, match="p must"):
        l2_softmax_scale_lower_bound(10, 1.0)


def test_l2_softmax_learned_scale_gets_gradient() -> None:
    head = make_head(L2Softmax, learn_scale=True)
    x, y = batch(torch.float32)
    F.cross_entropy(head(x, y), y).backward()
    assert isinstance(head.scale, nn.Parameter) and head.scale.grad is not None
    assert "scale" in dict(make_head(L2Softmax).named_buffers())  # fixed: a buffer, not trained


@pytest.mark.parametrize(("cls", "kw"), HEADS, ids=IDS)
def test_weight_shape_and_non_target_logits_unchanged(cls: type[nn.Module], kw: dict) -> None:
    head = make_head(cls, **kw).eval()
    assert head.weight.shape == (C, D)
    x, y = batch(torch.float32)
    with_labels, plain = head(x, y), head(x)
    off_target = torch.ones(B, C, dtype=torch.bool).scatter_(1, y.unsqueeze(1), False)
    torch.testing.assert_close(with_labels[off_target], plain[off_target])


@pytest.mark.parametrize(("cls", "kw"), HEADS, ids=IDS)
def test_bad_inputs_raise(cls: type[nn.Module], kw: dict) -> None:
    head = make_head(cls, **kw)
    x, y = batch(torch.float32)
    with pytest.raises(ValueError, match="embeddings"):
        head(torch.randn(B, D + 1), y)
    with pytest.raises(ValueError, match="labels"):
        head(x, y[:-1])
    with pytest.raises(ValueError, match="labels"):
        head(x, y.float())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        head(x, torch.full((B,), C))


def test_bad_hyperparameters_raise() -> None:
    with pytest.raises(ValueError, match="s must"):
        CosFace(D, C, s=0.0)
    with pytest.raises(ValueError, match="m must"):
        CosFace(D, C, m=-0.1)
    with pytest.raises(ValueError, match="m must"):
        ArcFace(D, C, m=2.0)
    with pytest.raises(ValueError, match="m must"):
        SphereFace(D, C, m=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        AdaCos(D, 2)
    with pytest.raises(ValueError, match="num_classes"):
        CosFace(D, 1)
