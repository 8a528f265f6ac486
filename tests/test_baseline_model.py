"""Tests for reid_core.models.baseline: the BNNeck strong baseline (Luo et al. 2019)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reid_core.models.baseline import BaselineNet, GeneralizedMeanPooling
from reid_core.models.outputs import ReIDOutput

NUM_CLASSES = 7


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 128, 64, generator=torch.Generator().manual_seed(0))


def _filled_fields(out: ReIDOutput) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in vars(out).items() if v is not None}


def test_shapes_train_and_eval(images: torch.Tensor) -> None:
    net = BaselineNet(NUM_CLASSES, backbone="resnet18")
    out_train = net.train()(images)
    with torch.no_grad():
        out_eval = net.eval()(images)
    expected = {
        "feat": (4, 512),
        "global_feat": (4, 512),
        "logits": (4, NUM_CLASSES),
        "feature_map": (4, 512, 8, 4),  # 128x64 / 16 with last stride 1
    }
    assert _filled_fields(out_train) == expected
    assert _filled_fields(out_eval) == expected


def test_bnneck_is_batchnorm_of_the_pooled_feature(images: torch.Tensor) -> None:
    net = BaselineNet(NUM_CLASSES, backbone="resnet18").train()
    with torch.no_grad():
        net.neck.weight.uniform_(0.5, 2.0)  # a non-trivial gamma so the check covers the scale
        out = net(images)
    f_t = out.feature_map.mean(dim=(2, 3))  # global average pooling, (B, D)
    torch.testing.assert_close(out.global_feat, f_t)
    # Train-mode BN: batch mean and biased batch variance, no shift.
    mu, var = f_t.mean(0), f_t.var(0, unbiased=False)
    f_i = (f_t - mu) / torch.sqrt(var + net.neck.eps) * net.neck.weight
    torch.testing.assert_close(out.feat, f_i, rtol=1e-4, atol=1e-5)
    # Classifier without bias on f_i.
    torch.testing.assert_close(out.logits, f_i @ net.classifier.weight.T, rtol=1e-4, atol=1e-6)


def test_bnneck_bias_is_frozen_at_zero(images: torch.Tensor) -> None:
    net = BaselineNet(NUM_CLASSES, backbone="resnet18").train()
    assert net.classifier.bias is None
    assert not net.neck.bias.requires_grad
    assert torch.equal(net.neck.bias, torch.zeros_like(net.neck.bias))
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    labels = torch.tensor([0, 1, 2, 3])
    weight_before = net.neck.weight.detach().clone()
    for _ in range(2):
        out = net(images)
        loss = F.cross_entropy(out.logits, labels) + out.global_feat.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert net.neck.bias.grad is None
    assert torch.equal(net.neck.bias, torch.zeros_like(net.neck.bias))
    assert not torch.equal(net.neck.weight, weight_before)  # gamma does learn
    assert net.backbone.stem[0].weight.grad is not None


def test_initialisation() -> None:
    net = BaselineNet(50, backbone="resnet18")
    std = net.classifier.weight.std().item()
    assert 0.0008 < std < 0.0012  # N(0, 0.001^2) over 50 x 512 weights
    assert torch.equal(net.neck.weight, torch.ones(512))


def test_no_neck_uses_the_pooled_feature(images: torch.Tensor) -> None:
    net = BaselineNet(NUM_CLASSES, backbone="resnet18", neck="none").eval()
    with torch.no_grad():
        out = net(images)
    torch.testing.assert_close(out.feat, out.global_feat)
    assert net.classifier.bias is not None
    torch.testing.assert_close(out.logits, out.feat @ net.classifier.weight.T + net.classifier.bias)


@pytest.mark.parametrize("pooling", ["avg", "max", "gem"])
def test_pooling_matches_its_formula(images: torch.Tensor, pooling: str) -> None:
    net = BaselineNet(NUM_CLASSES, backbone="resnet18", pooling=pooling).eval()
    with torch.no_grad():
        out = net(images)
    fmap = out.feature_map  # (B, D, h, w)
    if pooling == "avg":
        expected = fmap.mean(dim=(2, 3))
    elif pooling == "max":
        expected = fmap.amax(dim=(2, 3))
    else:  # GeM with p = 3 (Radenovic et al. 2018)
        expected = fmap.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
    torch.testing.assert_close(out.global_feat, expected, rtol=1e-4, atol=1e-6)


def test_gem_limits() -> None:
    x = torch.rand(2, 3, 5, 4) + 0.1
    torch.testing.assert_close(GeneralizedMeanPooling(p=1.0)(x).flatten(1), x.mean(dim=(2, 3)))
    big_p = GeneralizedMeanPooling(p=200.0)(x.double()).flatten(1)
    torch.testing.assert_close(big_p, x.double().amax(dim=(2, 3)), rtol=0.02, atol=0)
    gem = GeneralizedMeanPooling()
    gem(x).sum().backward()
    assert gem.p.grad is not None  # p is learnt


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="neck"):
        BaselineNet(3, backbone="resnet18", neck="bn")
    with pytest.raises(ValueError, match="pooling"):
        BaselineNet(3, backbone="resnet18", pooling="sum")
    with pytest.raises(ValueError, match="num_classes"):
        BaselineNet(0, backbone="resnet18")
    with pytest.raises(ValueError, match="GeM exponent"):
        GeneralizedMeanPooling(p=0.0)
    net = BaselineNet(3, backbone="resnet18")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.zeros(3, 128, 64))
