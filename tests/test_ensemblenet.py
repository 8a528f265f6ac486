"""Tests for reid_core.models.ensemblenet (Wang, Li, Miao, arXiv 1901.05798)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reid_core.models.ensemblenet import (
    MAX_BRANCHES,
    EnsembleNet,
    ensemble_loss,
    part_activation_maps,
    part_row_ranges,
)

NUM_CLASSES = 5
DIM = 32  # a small reduction keeps the tests fast; the paper's 256 is tested once


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(0))


def _net(num_branches: int, **kwargs: object) -> EnsembleNet:
    torch.manual_seed(0)
    return EnsembleNet(NUM_CLASSES, num_branches=num_branches, backbone="resnet18", reduction_dim=DIM, **kwargs)


@pytest.mark.parametrize("num_branches", range(1, MAX_BRANCHES + 1))
def test_output_shapes(images: torch.Tensor, num_branches: int) -> None:
    net = _net(num_branches).train()
    out = net(images)
    num_parts = num_branches * (num_branches + 1) // 2
    assert out.feat.shape == (2, DIM * num_parts)
    assert len(out.parts) == num_parts and all(p.shape == (2, DIM) for p in out.parts)
    assert len(out.logits) == num_parts and all(z.shape == (2, NUM_CLASSES) for z in out.logits)
    assert torch.equal(out.feat, torch.cat(out.parts, dim=1))
    assert net.feat_dim == DIM * num_parts
    maps = net.forward_features(images)
    assert len(maps) == num_branches and all(m.shape == (2, 512, 8, 4) for m in maps)  # 128x64 / 16


def test_resnet50_paper_setting() -> None:
    net = EnsembleNet(NUM_CLASSES, num_branches=3, backbone="resnet50").eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 32))
    assert out.feat.shape == (2, 256 * 6)  # 1536-d ensemble feature
    assert len(out.logits) == 6
    # res5a runs at stride 1 so the branch maps stay at 1/16 of the input.
    assert net.trunk.res_conv5_1.conv2.stride == (1, 1)
    assert net.trunk.res_conv5_1.downsample[0].stride == (1, 1)
    assert all(m.shape == (1, 2048, 4, 2) for m in net.forward_features(torch.randn(1, 3, 64, 32)))
    assert len(net.branches[0]) == 2  # res5b, res5c


def test_train_and_eval_return_the_same_fields(images: torch.Tensor) -> None:
    net = _net(3)
    out_train = net.train()(images)
    with torch.no_grad():
        out_eval = net.eval()(images)
    for out in (out_train, out_eval):
        assert out.feat is not None and isinstance(out.logits, list) and isinstance(out.parts, list)
        assert out.global_feat is None and out.local is None
    assert out_train.feat.shape == out_eval.feat.shape
    assert [z.shape for z in out_train.logits] == [z.shape for z in out_eval.logits]


def test_part_row_ranges_hand_worked() -> None:
    # H = 8 rows into 3 stripes: [floor(0), ceil(8/3)) = [0, 3), [floor(8/3), ceil(16/3)) = [2, 6), [5, 8).
    assert part_row_ranges(8, 3) == [(0, 3), (2, 6), (5, 8)]
    assert part_row_ranges(8, 2) == [(0, 4), (4, 8)]
    assert part_row_ranges(8, 1) == [(0, 8)]
    with pytest.raises(ValueError, match="num_parts"):
        part_row_ranges(8, 0)


def test_parts_are_stripe_means_reduced(images: torch.Tensor) -> None:
    net = _net(3).eval()
    with torch.no_grad():
        maps = net.forward_features(images)
        out = net.forward_head(maps)
        k = 0
        for b, (fmap, heads) in enumerate(zip(maps, net.heads), start=1):
            for p, (start, end) in enumerate(part_row_ranges(fmap.shape[2], b)):
                stripe = fmap[:, :, start:end, :].mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
                expected = heads[p].reduce(stripe).flatten(1)
                torch.testing.assert_close(out.parts[k], expected, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(out.logits[k], heads[p].classifier(expected), rtol=1e-4, atol=1e-5)
                k += 1


def test_branches_do_not_share_weights_after_the_split(images: torch.Tensor) -> None:
    net = _net(3).eval()
    ids = [{id(p) for p in branch.parameters()} for branch in net.branches]
    assert all(ids[i].isdisjoint(ids[j]) for i in range(3) for j in range(i + 1, 3))
    # All branches start from identical weights (copies of one stage) ...
    for p0, p1 in zip(net.branches[0].parameters(), net.branches[1].parameters()):
        assert torch.equal(p0, p1)
    with torch.no_grad():
        before = net(images)
        first_conv = next(m for m in net.branches[1].modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.weight.mul_(-1.5)  # ... but changing branch 2 changes only branch 2's parts
        after = net(images)
    parts_of_branch = {1: [0], 2: [1, 2], 3: [3, 4, 5]}
    for k in parts_of_branch[1] + parts_of_branch[3]:
        torch.testing.assert_close(after.parts[k], before.parts[k])
    for k in parts_of_branch[2]:
        assert not torch.allclose(after.parts[k], before.parts[k])


def test_trunk_is_shared_and_every_branch_trains_it(images: torch.Tensor) -> None:
    net = _net(3).train()
    all_params = list(net.parameters())
    assert len(all_params) == len({id(p) for p in all_params})
    trunk_ids = {id(p) for p in net.trunk.parameters()}
    for branch in net.branches:
        assert trunk_ids.isdisjoint(id(p) for p in branch.parameters())
    labels = torch.tensor([0, 3])
    shared_weight = net.trunk.res_conv5_1.conv1.weight
    for k in (0, 2, 5):  # one part of each branch, alone
        net.zero_grad(set_to_none=True)
        out = net(images)
        F.cross_entropy(out.logits[k], labels).backward()
        assert shared_weight.grad is not None and shared_weight.grad.abs().sum() > 0
        assert net.trunk.stem[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_loss_is_the_sum_of_part_cross_entropies(images: torch.Tensor, label_smoothing: float) -> None:
    net = _net(3).train()
    out = net(images)
    labels = torch.tensor([1, 4])
    expected = torch.zeros(())
    for z in out.logits:
        # smoothed CE written out: (1 - eps) * NLL + eps * mean over classes of -log p
        log_p = z.log_softmax(dim=1)
        nll = -log_p.gather(1, labels[:, None]).squeeze(1)
        uniform = -log_p.mean(dim=1)
        expected = expected + ((1 - label_smoothing) * nll + label_smoothing * uniform).mean()
    loss = ensemble_loss(out, labels, label_smoothing=label_smoothing)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(net.ensemble_loss(out, labels, label_smoothing), expected)
    loss.backward()
    assert all(head.classifier.weight.grad is not None for heads in net.heads for head in heads)


def test_activation_maps(images: torch.Tensor) -> None:
    net = _net(3).train()
    maps = part_activation_maps(net, images)
    assert net.training  # mode restored
    assert [m.branch for m in maps] == [1, 2, 3]
    for m in maps:
        assert m.activation.shape == (2, 8, 4)
        assert m.activation.amin() >= 0 and m.activation.amax() <= 1
        assert m.part_rows == part_row_ranges(8, m.branch)
    assert maps[2].image_rows(128) == [(0.0, 48.0), (32.0, 96.0), (80.0, 128.0)]
    raw = part_activation_maps(net, images, normalize=False)
    net.eval()
    with torch.no_grad():
        expected = net.forward_features(images)[1].mean(dim=1)
    torch.testing.assert_close(raw[1].activation, expected)


@pytest.mark.parametrize("bad", [0, MAX_BRANCHES + 1, 2.0, True])
def test_bad_num_branches(bad: object) -> None:
    with pytest.raises(ValueError, match="num_branches"):
        EnsembleNet(NUM_CLASSES, num_branches=bad, backbone="resnet18")  # type: ignore[arg-type]


def test_bad_inputs(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="reduction_dim"):
        EnsembleNet(NUM_CLASSES, backbone="resnet18", reduction_dim=0)
    with pytest.raises(ValueError, match="unknown backbone"):
        EnsembleNet(NUM_CLASSES, backbone="vgg16")
    with pytest.raises(ValueError, match="'resnet10' has 1"):  # one block in the last stage: nothing to branch
        EnsembleNet(NUM_CLASSES, backbone="resnet10")
    net = _net(2)
    with pytest.raises(ValueError, match="at least 2 images"):
        net.train()(images[:1])
    with pytest.raises(ValueError, match="non-empty list"):
        ensemble_loss(type(net(images))(feat=images, logits=torch.zeros(2, 3)), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        ensemble_loss(net(images), torch.tensor([0.0, 1.0]))


def test_resnet34_works(images: torch.Tensor) -> None:
    net = EnsembleNet(NUM_CLASSES, num_branches=2, backbone="resnet34", reduction_dim=DIM).eval()
    with torch.no_grad():
        out = net(images)
    assert out.feat.shape == (2, DIM * 3)
    assert len(net.branches[0]) == 2  # layer4 of ResNet-34 has 3 blocks; 2 follow the split


@pytest.mark.parametrize("relu", [True, False])
def test_reduction_relu_option(images: torch.Tensor, relu: bool) -> None:
    net = EnsembleNet(NUM_CLASSES, num_branches=2, backbone="resnet18", reduction_dim=DIM, reduction_relu=relu).eval()
    with torch.no_grad():
        maps = net.forward_features(images)
        out = net.forward_head(maps)
        stripe = maps[0].mean(dim=(2, 3), keepdim=True)  # branch 1 is global: (N, C, 1, 1)
        head = net.heads[0][0]
        bn = head.reduce[1](head.reduce[0](stripe)).flatten(1)  # conv + BN, before any ReLU
    expected = bn.clamp_min(0) if relu else bn
    torch.testing.assert_close(out.parts[0], expected, rtol=1e-4, atol=1e-5)
    assert (bn < 0).any()  # so the two settings really differ on this input
    assert len(head.reduce) == (3 if relu else 2)


# ------------------------------------------------- the chapter's options: split, ready backbone, stripes
def test_layer3_split_gives_each_branch_the_whole_last_stage() -> None:
    torch.manual_seed(0)
    net = EnsembleNet(NUM_CLASSES, num_branches=2, backbone="resnet10", reduction_dim=DIM, trunk_end="layer3")
    assert "res_conv5_1" not in dict(net.trunk.named_children())
    assert all(len(branch) == 1 for branch in net.branches)  # ResNet-10: one BasicBlock in layer4
    out = net.eval()(torch.randn(2, 3, 64, 32))
    assert out.feat.shape == (2, DIM * 3)


def test_resnet10_cannot_split_after_res_conv5_1() -> None:
    with pytest.raises(ValueError, match="trunk_end='layer3'"):
        EnsembleNet(NUM_CLASSES, num_branches=2, backbone="resnet10")
    with pytest.raises(ValueError, match="trunk_end"):
        EnsembleNet(NUM_CLASSES, num_branches=2, backbone="resnet10", trunk_end="layer2")


def test_a_ready_backbone_is_taken_over_and_every_branch_copies_its_last_stage() -> None:
    from reid_core.models import build_backbone

    torch.manual_seed(1)
    backbone = build_backbone("resnet10", last_stride=1)  # stands for one loaded with pretrained weights
    net = EnsembleNet(NUM_CLASSES, num_branches=3, backbone=backbone, reduction_dim=DIM, trunk_end="layer3")
    assert net.trunk.layer3 is backbone.layer3  # the trunk is the backbone's own layers
    reference = backbone.layer4.state_dict()
    for branch in net.branches:
        assert branch is not backbone.layer4
        for name, value in branch.state_dict().items():
            assert torch.equal(value, reference[name]), name  # every branch starts from the same weights
    with pytest.raises(ValueError, match="backbone name"):
        EnsembleNet(NUM_CLASSES, backbone=build_backbone("resnet18"), pretrained=True)
    with pytest.raises(ValueError, match="last stride 1"):
        EnsembleNet(NUM_CLASSES, backbone=build_backbone("resnet18", last_stride=2))


def test_global_branches_pool_the_whole_map(images: torch.Tensor) -> None:
    net = _net(3, stripes=(1, 1, 1)).eval()
    assert net.num_parts == 3 and net.feat_dim == 3 * DIM
    with torch.no_grad():
        maps = net.forward_features(images)
        out = net.forward_head(maps)
        for fmap, heads, part in zip(maps, net.heads, out.parts):
            expected, _ = heads[0](fmap.mean(dim=(2, 3), keepdim=True))
            torch.testing.assert_close(part, expected)
    acts = part_activation_maps(net, images)
    assert [len(a.part_rows) for a in acts] == [1, 1, 1]
    with pytest.raises(ValueError, match="one count per branch"):
        _net(2, stripes=(1, 2, 3))
    with pytest.raises(ValueError, match="stripes"):
        _net(2, stripes=(1, 0))
