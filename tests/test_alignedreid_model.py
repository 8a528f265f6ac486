"""Tests for reid_core.models.alignedreid: global + local branches (Zhang et al. 2017)."""

from __future__ import annotations

import pytest
import torch

from reid_core.models.alignedreid import AlignedReID
from reid_core.models.outputs import ReIDOutput

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 128, 64, generator=torch.Generator().manual_seed(0))


def _filled_fields(out: ReIDOutput) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in vars(out).items() if v is not None}


def test_shapes_in_train_and_eval_mode(images: torch.Tensor) -> None:
    net = AlignedReID(NUM_CLASSES, backbone="resnet18", local_dim=32)
    expected = {
        "feat": (3, 512),
        "global_feat": (3, 512),
        "logits": (3, NUM_CLASSES),
        "local": (3, 8, 32),  # 128 / 16 = 8 stripes with last stride 1
        "feature_map": (3, 512, 8, 4),
    }
    assert _filled_fields(net.train()(images)) == expected
    with torch.no_grad():
        assert _filled_fields(net.eval()(images)) == expected


@pytest.mark.parametrize("global_pool, local_pool", [("avg", "max"), ("avg", "avg"), ("max", "max"), ("max", "avg")])
def test_branches_compute_the_documented_pooling(global_pool: str, local_pool: str) -> None:
    net = AlignedReID(NUM_CLASSES, backbone="resnet18", global_pool=global_pool, local_pool=local_pool, local_dim=16)
    with torch.no_grad():
        net.local_reduce[1].running_mean.uniform_(-0.5, 0.5)  # non-trivial BN statistics
        net.local_reduce[1].running_var.uniform_(0.5, 2.0)
    fmap = torch.rand(3, 512, 8, 4, generator=torch.Generator().manual_seed(1))  # (B, C, H, W)
    for mode in ("train", "eval"):
        net.train(mode == "train")
        with torch.no_grad():
            out = net.forward_head(fmap)
        assert _filled_fields(out) == {
            "feat": (3, 512),
            "global_feat": (3, 512),
            "logits": (3, NUM_CLASSES),
            "local": (3, 8, 16),
            "feature_map": (3, 512, 8, 4),
        }
    glob = fmap.mean(dim=(2, 3)) if global_pool == "avg" else fmap.amax(dim=(2, 3))  # (B, C)
    rows = fmap.mean(dim=3) if local_pool == "avg" else fmap.amax(dim=3)  # (B, C, H)
    conv, bn = net.local_reduce[0], net.local_reduce[1]
    with torch.no_grad():
        reduced = torch.einsum("oc,bch->bho", conv.weight[:, :, 0, 0], rows) + conv.bias  # (B, H, d)
        local = torch.relu((reduced - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
        logits = glob @ net.classifier.weight.T + net.classifier.bias
    torch.testing.assert_close(out.global_feat, glob)
    assert out.feat is out.global_feat
    torch.testing.assert_close(out.local, local, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits, logits, rtol=1e-4, atol=1e-6)


def test_last_stride_two_halves_the_stripes(images: torch.Tensor) -> None:
    net = AlignedReID(NUM_CLASSES, backbone="resnet18", last_stride=2, local_dim=16)
    with torch.no_grad():
        assert net(images).local.shape == (3, 4, 16)


def test_backward_reaches_both_branches_and_the_backbone(images: torch.Tensor) -> None:
    net = AlignedReID(NUM_CLASSES, backbone="resnet18", local_dim=16).train()
    out = net(images[:, :, :64, :32])
    (out.logits.sum() + out.local.pow(2).sum()).backward()
    for name in (
        "classifier.weight",
        "local_reduce.0.weight",
        "backbone.layer4.0.conv1.weight",
        "backbone.stem.0.weight",
    ):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_classifier_init_and_bad_arguments() -> None:
    net = AlignedReID(NUM_CLASSES, backbone="resnet18")
    assert torch.equal(net.classifier.bias, torch.zeros(NUM_CLASSES))
    assert net.classifier.weight.std() < 0.01  # N(0, 0.001^2) as in the re-production
    with pytest.raises(ValueError, match="local_pool"):
        AlignedReID(NUM_CLASSES, backbone="resnet18", local_pool="gem")
    with pytest.raises(ValueError, match="global_pool"):
        AlignedReID(NUM_CLASSES, backbone="resnet18", global_pool="sum")
    with pytest.raises(ValueError, match="num_classes"):
        AlignedReID(0, backbone="resnet18")
    with pytest.raises(ValueError, match="local_dim"):
        AlignedReID(NUM_CLASSES, backbone="resnet18", local_dim=0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.zeros(1, 1, 128, 64))
