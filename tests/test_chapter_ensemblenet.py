"""Tests for the EnsembleNet chapter's code: reid_core.chapters.ensemblenet, reid_core.models.concat_ensemble and
reid_core.models.parameters."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid_core.chapters.ensemblenet.experiment import (
    branch_feature_slices,
    concat_features,
    ensemblenet_parameter_groups,
    evaluate_query_subset,
    local_part_only_pids,
    part_feature_slices,
    slice_features,
)
from reid_core.chapters.ensemblenet.figures import plot_branch_curve, plot_part_activations, plot_part_rank1
from reid_core.engine.evaluate import evaluate_distance
from reid_core.engine.features import Features
from reid_core.evaluation.rank import evaluate_rank
from reid_core.models.backbone import build_backbone
from reid_core.models.concat_ensemble import ConcatEnsemble
from reid_core.models.ensemblenet import EnsembleNet, part_activation_maps
from reid_core.models.outputs import ReIDOutput
from reid_core.models.parameters import count_parameters

DIM = 16


class _Linear(nn.Module):
    """A tiny 'model': flattens the image and maps it linearly (features of known form)."""

    def __init__(self, out_dim: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(3 * 4 * 2, out_dim)
        self.classifier = nn.Linear(out_dim, 5)

    def forward(self, x: torch.Tensor) -> ReIDOutput:
        feat = self.fc(x.flatten(1))
        return ReIDOutput(feat=feat, logits=self.classifier(feat))


@pytest.fixture(scope="module")
def net3() -> EnsembleNet:
    torch.manual_seed(0)
    return EnsembleNet(7, num_branches=3, backbone="resnet18", reduction_dim=DIM).eval()


# ----------------------------------------------------------------------------- ConcatEnsemble
def test_concat_ensemble_equals_manual_concatenation() -> None:
    members = [_Linear(3, seed=1), _Linear(5, seed=2)]
    x = torch.randn(4, 3, 4, 2)
    out = ConcatEnsemble(members)(x)
    expected = torch.cat([members[0].fc(x.flatten(1)), members[1].fc(x.flatten(1))], dim=1)
    assert out.feat.shape == (4, 8)
    torch.testing.assert_close(out.feat, expected)
    assert [p.shape[1] for p in out.parts] == [3, 5]


def test_concat_ensemble_normalized_distance_is_sum_of_member_distances() -> None:
    members = [_Linear(3, seed=1), _Linear(5, seed=2)]
    x, y = torch.randn(1, 3, 4, 2), torch.randn(1, 3, 4, 2)
    ens = ConcatEnsemble(members, normalize=True)
    with torch.no_grad():
        fx, fy = ens(x), ens(y)
        # ||f(x) - f(y)||^2 = sum_k ||f_k(x)/|f_k(x)| - f_k(y)/|f_k(y)|||^2, each term in [0, 4]
        per_member = [(F.normalize(m(x).feat, dim=1) - F.normalize(m(y).feat, dim=1)).pow(2).sum() for m in members]
    torch.testing.assert_close((fx.feat - fy.feat).pow(2).sum(), sum(per_member))
    assert all(0.0 <= float(d) <= 4.0 + 1e-6 for d in per_member)


def test_concat_ensemble_mode_propagates_to_members() -> None:
    ens = ConcatEnsemble([_Linear(3, 1), _Linear(3, 2)]).eval()
    assert all(not m.training for m in ens.members)


def test_concat_ensemble_rejects_bad_members() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        ConcatEnsemble([])
    with pytest.raises(TypeError, match=r"members\[1\]"):
        ConcatEnsemble([_Linear(3, 1), "not a model"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="field 'local'"):
        ConcatEnsemble([_Linear(3, 1)], field="local")(torch.randn(2, 3, 4, 2))


def test_concat_features_matches_concat_ensemble() -> None:
    members = [_Linear(3, seed=1), _Linear(5, seed=2)]
    x = torch.randn(6, 3, 4, 2)
    pids, camids = np.arange(6), np.zeros(6, dtype=int)
    with torch.no_grad():
        feats = [Features(m(x).feat, pids, camids) for m in members]
        for normalize in (False, True):
            joined = concat_features(feats, normalize=normalize)
            torch.testing.assert_close(joined.features, ConcatEnsemble(members, normalize=normalize)(x).feat)
    bad = Features(torch.zeros(6, 2), pids[::-1].copy(), camids)
    with pytest.raises(ValueError, match="other images"):
        concat_features([feats[0], bad])


# -------------------------------------------------------------------------- parameter counts
def test_count_parameters_hand_worked() -> None:
    # Linear(3, 4): 3*4 + 4 = 16; Linear(4, 2) named classifier: 4*2 + 2 = 10
    model = nn.Sequential()
    model.add_module("body", nn.Linear(3, 4))
    model.add_module("classifier", nn.Linear(4, 2))
    assert count_parameters(model) == 26
    assert count_parameters(model, exclude=("classifier",)) == 16
    model.body.bias.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 22


def test_count_parameters_counts_shared_weights_once() -> None:
    shared = nn.Linear(3, 3)  # 12 parameters
    model = nn.Sequential(shared, shared)
    assert count_parameters(model) == 12


def test_ensemblenet_parameter_groups_against_backbone(net3: EnsembleNet) -> None:
    groups = ensemblenet_parameter_groups(net3)
    resnet = build_backbone("resnet18", last_stride=1)
    trunk = sum(
        p.numel()
        for m in (resnet.stem, resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4[0])
        for p in m.parameters()
    )
    rest = sum(p.numel() for p in resnet.layer4[1:].parameters())
    assert groups["shared trunk"] == trunk
    assert groups["branches"] == 3 * rest
    # 6 parts: reduction conv 512*d + BN 2d; classifier d*7 + 7
    assert groups["part reductions"] == 6 * (512 * DIM + 2 * DIM)
    assert groups["part classifiers"] == 6 * (DIM * 7 + 7)
    assert groups["total"] == sum(p.numel() for p in net3.parameters())
    assert groups["test-time"] == groups["total"] - groups["part classifiers"]
    with pytest.raises(TypeError, match="EnsembleNet"):
        ensemblenet_parameter_groups(nn.Linear(2, 2))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- feature slices
def test_part_slices_match_model_parts(net3: EnsembleNet) -> None:
    with torch.no_grad():
        out = net3(torch.randn(2, 3, 64, 32))
    slices = part_feature_slices(3, DIM)
    assert [s.label for s in slices] == ["b1p1", "b2p1", "b2p2", "b3p1", "b3p2", "b3p3"]
    for piece, part in zip(slices, out.parts):
        torch.testing.assert_close(out.feat[:, piece.columns], part)
    branches = branch_feature_slices(3, DIM)
    assert [s.label for s in branches] == ["b1", "b2", "b3"]
    # branch b holds parts b(b-1)/2 .. b(b+1)/2 - 1, contiguous, and together they tile feat
    torch.testing.assert_close(out.feat[:, branches[2].columns], torch.cat(out.parts[3:6], dim=1))
    torch.testing.assert_close(torch.cat([out.feat[:, b.columns] for b in branches], dim=1), out.feat)


def test_slices_reject_bad_layout() -> None:
    with pytest.raises(ValueError, match="num_branches"):
        part_feature_slices(0, 4)
    with pytest.raises(ValueError, match="reduction_dim"):
        branch_feature_slices(2, 0)


def test_slice_features_keeps_labels() -> None:
    feats = Features(torch.arange(12.0).view(3, 4), np.array([1, 2, 3]), np.array([0, 1, 0]))
    sub = slice_features(feats, slice(1, 3))
    torch.testing.assert_close(sub.features, torch.tensor([[1.0, 2.0], [5.0, 6.0], [9.0, 10.0]]))
    assert sub.pids is feats.pids


# ---------------------------------------------------------------------- evaluation on subsets
def test_local_part_only_pids() -> None:
    identities = [
        {"pid": 1, "split": "test", "local_part_only": True},
        {"pid": 2, "split": "test", "local_part_only": False},
        {"pid": 3, "split": "train", "local_part_only": True},
    ]
    assert local_part_only_pids(identities) == {1}
    assert local_part_only_pids(identities, split="train") == {3}
    with pytest.raises(ValueError, match="lacks"):
        local_part_only_pids([{"pid": 1}])
    with pytest.raises(ValueError, match="split"):
        local_part_only_pids(identities, split="query")


def test_evaluate_query_subset_equals_rank_on_rows() -> None:
    rng = np.random.default_rng(0)
    q_pids, q_cams = np.array([1, 2, 3, 1]), np.array([0, 0, 0, 1])
    g_pids, g_cams = np.array([1, 2, 3, 1, 2, 3, 0]), np.array([1, 1, 1, 2, 2, 2, 1])
    distmat = torch.from_numpy(rng.random((4, 7)))
    q = Features(torch.zeros(4, 2), q_pids, q_cams)
    g = Features(torch.zeros(7, 2), g_pids, g_cams)
    full = evaluate_distance(distmat, q, g)
    mask = np.array([True, False, True, False])
    sub = evaluate_query_subset(full, mask)
    cmc, mAP = evaluate_rank(distmat[[0, 2]].numpy(), q_pids[mask], g_pids, q_cams[mask], g_cams, max_rank=7)
    np.testing.assert_allclose(sub.cmc, cmc)
    assert sub.mAP == pytest.approx(mAP)
    with pytest.raises(ValueError, match="shape"):
        evaluate_query_subset(full, np.array([True]))
    with pytest.raises(ValueError, match="no query"):
        evaluate_query_subset(full, np.zeros(4, dtype=bool))


# ----------------------------------------------------------------------------------- figures
def test_figures_draw(net3: EnsembleNet) -> None:
    fig = plot_branch_curve([1, 2, 3], {"R1": [1.0, 2.0, 3.0]}, references={"ensemble": 2.5})
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="3 branch counts"):
        plot_branch_curve([1, 2, 3], {"R1": [1.0]})
    slices = part_feature_slices(2, DIM)
    fig = plot_part_rank1(slices, {"all": [1.0, 2.0, 3.0], "subset": [0.5, 1.0, 1.5]})
    assert len(fig.axes[0].patches) == 6
    images = torch.randn(2, 3, 64, 32)
    maps = part_activation_maps(net3, images)
    fig = plot_part_activations(images, maps, titles=["a", "b"])
    assert len(fig.axes) == 2 * (1 + 3)
    # branch 3's two stripe borders are drawn on its panel
    assert len(fig.axes[3].lines) == 2


# ------------------------------------------------------------------------ the chapter's runs
def test_slices_follow_custom_stripes() -> None:
    parts = part_feature_slices(3, DIM, stripes=(1, 1, 1))
    assert [s.label for s in parts] == ["b1p1", "b2p1", "b3p1"]
    branches = branch_feature_slices(3, DIM, stripes=(1, 1, 1))
    assert [(s.columns.start, s.columns.stop) for s in branches] == [(0, DIM), (DIM, 2 * DIM), (2 * DIM, 3 * DIM)]
    with pytest.raises(ValueError, match="stripes"):
        part_feature_slices(2, DIM, stripes=(1,))


def test_forward_macs_hand_worked() -> None:
    from reid_core.chapters.ensemblenet.experiment import forward_macs

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)  # 4x2 output: 8 positions x 4 channels x 27
            self.fc = nn.Linear(32, 5)  # 32 x 5

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).flatten(1))

    model = Tiny().train()
    assert forward_macs(model, 4, 2) == 8 * 4 * 27 + 32 * 5
    assert model.training  # the mode is restored


@pytest.fixture(scope="module")
def run_world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from reid_core.data import render_synthreid

    root = tmp_path_factory.mktemp("ensemblenet_runs") / "world"
    render_synthreid(root, num_ids=12, images_per_id=4, num_cameras=2, seed=0, lookalike_family_size=2, progress=False)
    return {"synthreid_root": str(root)}


RECIPE = dict(
    backbone="resnet10",
    imagenet=False,
    height=32,
    width=16,
    reduction_dim=8,
    reduction_relu=False,
    trunk_end="layer3",
    epochs=1,
    max_iters_per_epoch=2,
    ids_per_batch=2,
    num_instances=2,
    optimizer="adam",
    lr=1e-3,
    weight_decay=5e-4,
    scheduler="constant",
    milestones=(),
    warmup_epochs=0.0,
    random_erasing_p=0.0,
    flip_test=False,
    precision="bf16",
    batch_augment=True,
    preload=True,
)
KEYS = ("rank1", "mAP", "rank1_local", "mAP_local", "parameters", "feat_dim", "macs")


@pytest.mark.parametrize("arm", ["b3", "members3"])
def test_a_run_repeats_exactly_with_its_seed(run_world: dict, arm: str) -> None:
    from reid_core.chapters.ensemblenet import train_and_evaluate

    torch.set_num_threads(1)
    first = train_and_evaluate(arm, 0, data=run_world, recipe=RECIPE)
    again = train_and_evaluate(arm, 0, data=run_world, recipe=RECIPE)
    assert {k: first[k] for k in KEYS} == {k: again[k] for k in KEYS}
    assert first["history"][-1]["id"] == again["history"][-1]["id"]
    other = train_and_evaluate(arm, 1, data=run_world, recipe=RECIPE)
    assert other["history"][-1]["id"] != first["history"][-1]["id"]  # another seed: other batches, other heads
    if arm == "members3":
        assert len(first["members"]) == 3 and first["feat_dim"] == 3 * RECIPE["reduction_dim"]
        # each member trains a third of the 3-branch network's compute per epoch
        expected = max(1, round(RECIPE["max_iters_per_epoch"] * first["matched_macs"] / first["macs"]))
        assert first["member_iters_per_epoch"] == expected
    else:
        assert [p["label"] for p in first["part_rank1"]][:6] == ["b1p1", "b2p1", "b2p2", "b3p1", "b3p2", "b3p3"]


def test_unknown_arm_is_named(run_world: dict) -> None:
    from reid_core.chapters.ensemblenet import train_and_evaluate

    with pytest.raises(ValueError, match="unknown arm 'b9'"):
        train_and_evaluate("b9", 0, data=run_world, recipe=RECIPE)
