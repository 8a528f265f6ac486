"""Tests for chapter 05's runs: the per-run function is repeatable, the class memory matches a
per-image loop written from QAConv 1.x's loss, the PK-then-GS switch, the control world, and a
pretrained backbone loaded before QAConvNet cuts it.

References: QAConv 1.x ``ClassMemoryLoss`` (focal BCE against the memory of every class, the
memory written after the loss), Liao & Shao CVPR 2022 (GS).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from reid_core.book.pretrained import PretrainedBackbone
from reid_core.chapters.graph_sampling import (
    CONTROL_PRESETS,
    ClassMemoryCriterion,
    GraphAfterAccuracy,
    classes_covered,
    prepare_world,
    qaconv_net,
    train_and_evaluate,
)
from reid_core.data import SynthReIDInfo, render_synthreid
from reid_core.engine import save_checkpoint
from reid_core.models import ResNetBackbone
from reid_core.models.outputs import ReIDOutput
from reid_core.models.qaconv import QAConv

RECIPE = dict(
    backbone="resnet10",
    pretrained=False,
    height=32,
    width=16,
    neck_dim=8,
    batch_size=8,
    num_instances=2,
    loss="pairwise",
    margin=16.0,
    optimizer="adam",
    lr=1e-3,
    backbone_lr_mult=0.1,
    weight_decay=5e-4,
    nesterov=False,
    epochs=2,
    max_iters_per_epoch=2,
    switch_accuracy=0.01,
    adaptive_step=False,
    grad_clip=None,
    amp=False,
    precision="bf16",
    batch_augment=True,
    freeze_backbone_bn=False,
    pad=2,
    random_erasing_p=0.0,
    color_jitter=False,
    flip_test=False,
    graph_chunk=64,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gs_world") / "w"
    render_synthreid(
        root,
        num_ids=12,
        images_per_id=4,
        num_cameras=2,
        seed=0,
        height=64,
        width=32,
        lookalike_family_size=2,
        workers=1,
        progress=False,
    )
    return root


@pytest.mark.parametrize("arm", ["pk", "gs", "pk_then_gs", "memory"])
def test_train_and_evaluate_same_seed_same_results(world: Path, arm: str) -> None:
    spec = dict(name="synthreid", root=str(world))
    runs = [train_and_evaluate(arm, seed, train_spec=spec, recipe=RECIPE) for seed in (3, 3, 4)]
    same = [(r["rank1"], r["mAP"], [(p["rank1"], p["mAP"]) for p in r["curve"]], r["batch_log"]) for r in runs]
    assert same[0] == same[1], f"{arm}: the same seed gave different results"
    assert same[0][3] != same[2][3], f"{arm}: another seed gave the same batches"
    out = runs[0]
    assert out["iterations"] == RECIPE["epochs"] * RECIPE["max_iters_per_epoch"]
    assert out["curve"][0]["iterations"] == 0 and len(out["curve"]) == RECIPE["epochs"] + 1
    if arm == "gs":
        assert out["graph_builds"] == RECIPE["epochs"] and out["coverage"]["seed_classes"] == out["iterations"]
    if arm == "pk_then_gs":  # a threshold of 1% is passed after the first epoch: one GS epoch follows
        assert out["switch_epoch"] == 1 and out["graph_builds"] == 1
        assert out["coverage"]["seed_classes"] == RECIPE["max_iters_per_epoch"]


def test_same_seed_arms_start_from_the_same_weights(world: Path) -> None:
    spec = dict(name="synthreid", root=str(world))
    starts = {
        arm: train_and_evaluate(arm, 5, train_spec=spec, recipe={**RECIPE, "epochs": 1})["curve"][0]
        for arm in ("pk", "memory")
    }
    assert starts["pk"] == starts["memory"]


def test_validation_split_and_cross_domain(world: Path) -> None:
    spec = dict(name="synthreid", root=str(world))
    out = train_and_evaluate(
        "pk",
        0,
        train_spec=spec,
        recipe={**RECIPE, "epochs": 1},
        split="validation",
        curve_every=None,
        cross_specs={"other": spec},
    )
    assert out["split"] == "validation" and len(out["curve"]) == 1
    assert set(out["cross"]) == {"other"} and 0.0 <= out["cross"]["other"]["rank1"] <= 100.0
    with pytest.raises(ValueError, match="arm"):
        train_and_evaluate("nope", 0, train_spec=spec, recipe=RECIPE)


def slow_memory_loss(scores: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per image, per valid class: focal-weighted BCE, summed over classes, averaged over images."""
    total = 0.0
    for i in range(scores.shape[0]):
        row = 0.0
        for j, c in enumerate(classes.tolist()):
            s = float(scores[i, j])
            y = 1.0 if c == int(labels[i]) else 0.0
            p = 1.0 / (1.0 + torch.exp(torch.tensor(-s)).item())
            bce = -(y * torch.log(torch.tensor(p)) + (1 - y) * torch.log(torch.tensor(1 - p))).item()
            weight = (1 - p) ** gamma if y else p**gamma
            row += weight * bce
        total += row
    return torch.tensor(total / scores.shape[0])


def test_class_memory_matches_the_loop_and_writes_after_the_loss() -> None:
    torch.manual_seed(0)
    matcher = QAConv(4, 2, 1).eval()
    criterion = ClassMemoryCriterion(matcher, num_classes=5)
    first = F.normalize(torch.randn(4, 4, 2, 1), dim=1)
    labels = torch.tensor([0, 0, 2, 3])
    terms = criterion(ReIDOutput(feat=first.flatten(1), feature_map=first), labels)
    assert float(terms["class_memory"]) == 0.0  # nothing in the memory yet
    assert criterion.valid.tolist() == [True, False, True, True, False]
    assert torch.equal(criterion.memory[0], first[1]) and torch.equal(criterion.memory[3], first[3])  # the last wins
    memory_before = criterion.memory.clone()
    second = F.normalize(torch.randn(3, 4, 2, 1), dim=1)
    labels2 = torch.tensor([2, 4, 0])
    criterion.train()
    loss = criterion(ReIDOutput(feat=second.flatten(1), feature_map=second), labels2)["class_memory"]
    classes = torch.tensor([0, 2, 3])
    with torch.no_grad():
        scores = matcher(second, memory_before[classes])  # matcher in train mode: the criterion's BN statistics
    assert torch.allclose(loss, slow_memory_loss(scores, labels2, classes, 2.0), atol=1e-5)
    assert criterion.valid[4] and torch.equal(criterion.memory[4], second[1])
    assert len(criterion.log) == 1


def test_class_memory_rejects_bad_input() -> None:
    matcher = QAConv(4, 2, 1)
    with pytest.raises(ValueError, match="num_classes"):
        ClassMemoryCriterion(matcher, num_classes=1)
    criterion = ClassMemoryCriterion(matcher, num_classes=3)
    fmap = torch.zeros(2, 4, 2, 1)
    with pytest.raises(ValueError, match="labels"):
        criterion(ReIDOutput(feat=fmap.flatten(1), feature_map=fmap), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="feature_map"):
        criterion(ReIDOutput(feat=fmap.flatten(1)), torch.tensor([0, 1]))


def test_graph_after_accuracy_switches_once_the_threshold_is_reached() -> None:
    rebuilt = []
    graph = SimpleNamespace(rebuild=lambda model, device, epoch: rebuilt.append(epoch))
    log: list[dict[str, float]] = []
    switch = GraphAfterAccuracy(graph, log, threshold=0.9)
    trainer = SimpleNamespace(model=None, device="cpu")
    for epoch, accuracies in enumerate(([0.5, 0.7], [0.95, 0.9], [0.2])):
        switch.on_epoch_start(trainer, epoch)
        log += [{"accuracy": a} for a in accuracies]
        switch.on_epoch_end(trainer, epoch, {})
    assert switch.accuracies == pytest.approx([0.6, 0.925]) and switch.switch_epoch == 2 and rebuilt == [2]
    with pytest.raises(ValueError, match="threshold"):
        GraphAfterAccuracy(graph, log, threshold=0.0)


def test_classes_covered() -> None:
    assert classes_covered(120, 2000, 15) == {"seed_classes": 120, "num_classes": 2000, "class_visits": 1920}
    assert classes_covered(5000, 2000, 15)["seed_classes"] == 2000


def test_qaconv_net_loads_the_backbone_before_cutting_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    full = ResNetBackbone("resnet10", pretrained=False, last_stride=1)
    path = save_checkpoint({"backbone": "resnet10", "state_dict": full.state_dict()}, tmp_path / "b.pt")
    net = qaconv_net(dict(backbone="resnet10", neck_dim=8, height=32, width=16), PretrainedBackbone(path, {}))
    assert isinstance(net.backbone.layer4, torch.nn.Identity)
    for name, value in net.backbone.state_dict().items():
        assert torch.equal(value, full.state_dict()[name]), name


def test_control_world_has_no_families(tmp_path: Path) -> None:
    assert set(CONTROL_PRESETS) >= {"synth_gs_nofamily", "smoke_nofamily"}
    root = prepare_world(tmp_path, "smoke_nofamily")
    info = SynthReIDInfo.from_json(root)
    assert len({i["family"] for i in info.identities}) == len(info.identities)
    with pytest.raises(ValueError, match="valid"):
        prepare_world(tmp_path, "nope")
