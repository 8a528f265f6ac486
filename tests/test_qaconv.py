"""Tests for reid_core.models.qaconv: the QAConv 2.1 matcher and the layer3 + neck network.

The reference is a slow loop over pairs and positions written from the description in
Liao & Shao (ECCV 2020; CVPR 2022 code 2.1): s_sr = <P_s, G_r>, a_s = max_r s_sr,
b_r = max_s s_sr, shared BN(1) -> FC(hw -> 1) on each, summed, BN(1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid_core.models.outputs import ReIDOutput
from reid_core.models.qaconv import QAConv, QAConvNet, feature_map_size

D, H, W = 5, 3, 2
HW = H * W


def random_maps(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, D, H, W, generator=gen), dim=1)  # (n, D, H, W)


def randomised_matcher(seed: int = 0) -> QAConv:
    """A matcher with non-trivial parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    m = QAConv(D, H, W)
    with torch.no_grad():
        m.fc.weight.copy_(torch.randn(1, HW, generator=gen))
        m.fc.bias.fill_(0.3)
        for bn, mean, var in ((m.bn, 0.2, 1.7), (m.logit_bn, -0.4, 2.5)):
            bn.weight.fill_(1.3)
            bn.bias.fill_(-0.2)
            bn.running_mean.fill_(mean)
            bn.running_var.fill_(var)
    return m


def directional_maxima(p: np.ndarray, g: np.ndarray) -> tuple[list[float], list[float]]:
    """Per pair of (D, H, W) maps: a_s = max_r <p_s, g_r>, b_r = max_s <p_s, g_r> (loops)."""
    pos_p = [p[:, i, j] for i in range(H) for j in range(W)]  # row-major positions
    pos_g = [g[:, i, j] for i in range(H) for j in range(W)]
    sim = [[sum(float(ps[c]) * float(gr[c]) for c in range(D)) for gr in pos_g] for ps in pos_p]
    a = [max(sim[s][r] for r in range(HW)) for s in range(HW)]
    b = [max(sim[s][r] for s in range(HW)) for r in range(HW)]
    return a, b


def slow_scores(m: QAConv, probe: torch.Tensor, gallery: torch.Tensor, train: bool) -> np.ndarray:
    """The score matrix by loops over pairs and positions (BN in eval or train mode)."""
    w = m.fc.weight.detach().numpy()[0]
    fc_b = float(m.fc.bias.detach())
    eps = m.bn.eps
    pairs = [
        directional_maxima(probe[i].numpy(), gallery[j].numpy()) for i in range(len(probe)) for j in range(len(gallery))
    ]
    values = [x for a, b in pairs for x in a + b]
    if train:  # batch statistics over every value of every pair, both directions (biased var)
        mean1, var1 = float(np.mean(values)), float(np.var(values))
    else:
        mean1, var1 = float(m.bn.running_mean.detach()), float(m.bn.running_var.detach())

    def bn1(x: float) -> float:
        return (x - mean1) / math.sqrt(var1 + eps) * float(m.bn.weight.detach()) + float(m.bn.bias.detach())

    def fc(v: list[float]) -> float:
        return sum(w[s] * bn1(v[s]) for s in range(HW)) + fc_b

    logits = [fc(a) + fc(b) for a, b in pairs]
    if train:
        mean2, var2 = float(np.mean(logits)), float(np.var(logits))
    else:
        mean2, var2 = float(m.logit_bn.running_mean.detach()), float(m.logit_bn.running_var.detach())
    gamma2, beta2 = float(m.logit_bn.weight.detach()), float(m.logit_bn.bias.detach())
    out = [(x - mean2) / math.sqrt(var2 + eps) * gamma2 + beta2 for x in logits]
    return np.array(out).reshape(len(probe), len(gallery))


@pytest.mark.parametrize("train", [False, True])
def test_score_equals_slow_loop(train: bool) -> None:
    m = randomised_matcher()
    m.train(train)
    probe, gallery = random_maps(3, 1), random_maps(4, 2)
    with torch.no_grad():
        got = m(probe, gallery)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got.numpy(), slow_scores(m, probe, gallery, train), rtol=1e-4, atol=1e-4)


def test_initial_fc_averages_best_matches() -> None:
    """Fresh matcher, identity BNs in eval: score = mean(a) + mean(b) (fc weights 1/hw, bias 0)."""
    m = QAConv(D, H, W).eval()
    probe, gallery = random_maps(2, 3), random_maps(2, 4)
    eps_scale = 1.0 / math.sqrt(1.0 + m.bn.eps)  # running_var = 1, running_mean = 0
    for i in range(2):
        for j in range(2):
            a, b = directional_maxima(probe[i].numpy(), gallery[j].numpy())
            expected = (np.mean(a) + np.mean(b)) * eps_scale * eps_scale
            assert m(probe[i : i + 1], gallery[j : j + 1]).item() == pytest.approx(expected, abs=1e-5)


def test_identical_maps_score_above_others_with_fresh_matcher() -> None:
    """Unit vectors: <x_s, x_s> = 1 is the largest possible similarity, so self-match wins."""
    m = QAConv(D, H, W).eval()
    x = random_maps(6, 5)
    scores = m.pairwise(x)
    assert (scores.diagonal().unsqueeze(1) >= scores - 1e-6).all()


@pytest.mark.parametrize("train", [False, True])
def test_symmetry_swapping_probe_and_gallery(train: bool) -> None:
    m = randomised_matcher(3)
    m.train(train)
    probe, gallery = random_maps(3, 6), random_maps(5, 7)
    with torch.no_grad():
        forward = m(probe, gallery)  # (3, 5)
        backward = m(gallery, probe)  # (5, 3)
        batch = torch.cat([probe, gallery])
        pair = m.pairwise(batch)
    torch.testing.assert_close(forward, backward.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pair, pair.T, rtol=1e-5, atol=1e-5)
    # The probe-side and gallery-side maxima really differ, so the symmetry is not trivial.
    a, b = directional_maxima(probe[0].numpy(), gallery[0].numpy())
    assert not np.allclose(a, b)


def test_match_all_chunked_equals_unchunked() -> None:
    m = randomised_matcher(4).train()
    probe, gallery = random_maps(7, 8), random_maps(9, 9)
    with torch.no_grad():
        full = m.eval()(probe, gallery)
    m.train()
    chunked = m.match_all(probe, gallery, chunk=2, progress=False)
    assert m.training, "match_all must restore the module's mode"
    assert chunked.dtype == torch.float32 and chunked.shape == (7, 9)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)
    flat = m.match_all(probe.flatten(1), gallery.flatten(1), chunk=4, progress=False)
    torch.testing.assert_close(flat, full, rtol=1e-5, atol=1e-5)


def test_gradients_flow_to_maps_and_parameters() -> None:
    m = QAConv(D, H, W).train()
    x = random_maps(6, 10).requires_grad_(True)
    scores = m.pairwise(x)  # (6, 6)
    target = torch.eye(6)
    F.binary_cross_entropy_with_logits(scores, target).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.fc.weight.grad.abs().sum() > 0


def test_shape_errors_name_the_argument() -> None:
    m = QAConv(D, H, W)
    with pytest.raises(ValueError, match="gallery"):
        m(random_maps(2, 0), torch.zeros(2, D, H + 1, W))
    with pytest.raises(ValueError, match="probe"):
        m(torch.zeros(2, D * H * W + 1), random_maps(2, 0))
    with pytest.raises(ValueError, match="chunk"):
        m.match_all(random_maps(2, 0), random_maps(2, 0), chunk=0)


def test_feature_map_size_is_stride_16() -> None:
    assert feature_map_size(384, 128) == (24, 8)  # the paper's 384x128 -> 24x8
    assert feature_map_size(256, 128) == (16, 8)
    assert feature_map_size(100, 50) == (7, 4)  # ceil at every halving: 100-50-25-13-7


def test_qaconvnet_outputs_normalised_maps_in_both_modes() -> None:
    torch.manual_seed(0)
    net = QAConvNet(num_classes=5, backbone="resnet18", neck_dim=16, height=64, width=32)
    assert (net.map_height, net.map_width) == (4, 2)
    assert not any(name.startswith("backbone.layer4") for name, _ in net.named_parameters())
    images = torch.randn(2, 3, 64, 32)
    for train in (True, False):
        net.train(train)
        out = net(images)
        assert isinstance(out, ReIDOutput)
        assert out.feature_map.shape == (2, 16, 4, 2)
        torch.testing.assert_close(out.feature_map.norm(dim=1), torch.ones(2, 4, 2))
        torch.testing.assert_close(out.feat, out.feature_map.flatten(1))
        assert out.logits.shape == (2, 5)
    matcher = net.make_matcher().eval()
    assert matcher(out.feature_map, out.feat).shape == (2, 2)
    with pytest.raises(ValueError, match="images"):
        net(torch.randn(2, 1, 64, 32))


def test_qaconvnet_backward_reaches_backbone() -> None:
    torch.manual_seed(1)
    net = QAConvNet(backbone="resnet18", neck_dim=8, height=32, width=16)
    matcher = net.make_matcher()
    scores = matcher.pairwise(net(torch.randn(4, 3, 32, 16)).feature_map)
    scores.sum().backward()
    assert net.neck.weight.grad is not None and net.neck.weight.grad.abs().sum() > 0
    assert net.backbone.layer3[0].conv1.weight.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_match_all_fp16_on_cuda_close_to_fp32() -> None:
    m = randomised_matcher(5)
    probe, gallery = random_maps(33, 11), random_maps(40, 12)
    with torch.no_grad():
        ref = m.eval()(probe, gallery)
    m.cuda()
    got = m.match_all(probe.cuda(), gallery.cuda(), chunk=16, progress=False)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), ref, rtol=2e-2, atol=2e-2)
