"""Tests for the Graph Sampling chapter's code: reid_core.chapters.graph_sampling, reid_core.losses.qaconv_criterion,
reid_core.samplers.graph_epoch and reid_core.engine.callbacks.

References: per-pair loops written from the formulas (QAConv score triplet loss, Liao & Shao
CVPR 2022), brute-force nearest classes, hand-worked interpolations and epoch counts.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.chapters.graph_sampling.experiment import (
    CurvePoint,
    LearningCurve,
    batch_hardness,
    epoch_seconds,
    family_index,
    fit_graph_cost,
    measure_graph_seconds,
    qaconv_param_groups,
    same_family_fraction,
    time_to_reach,
)
from reid_core.engine.callbacks import FreezeBackboneBN
from reid_core.engine.evaluate import EvalResult
from reid_core.engine.trainer import TrainConfig, Trainer
from reid_core.losses.qaconv_criterion import QAConvCriterion
from reid_core.models.outputs import ReIDOutput
from reid_core.models.qaconv import QAConv
from reid_core.samplers.graph_epoch import GraphSamplingCallback, preloaded_image_lookup
from reid_core.samplers.graph_sampler import GraphSampler

D, H, W = 4, 2, 1  # tiny feature maps: d channels, h x w positions


class TinyNet(nn.Module):
    """A 'backbone' (conv + BN) and a neck giving (B, D, H, W) unit-normalised maps."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.neck = nn.Conv2d(6, D, 1)

    def forward(self, x: Tensor) -> ReIDOutput:
        fmap = F.adaptive_avg_pool2d(self.neck(self.backbone(x)), (H, W))  # (B, D, H, W)
        fmap = F.normalize(fmap, dim=1)
        return ReIDOutput(feat=fmap.flatten(1), feature_map=fmap)


class ColourNet(nn.Module):
    """feat = mean colour of the image: class distances are known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> ReIDOutput:
        return ReIDOutput(feat=x.mean(dim=(2, 3)) + 0 * self.dummy)  # (B, 3)


def to_float(image: Tensor) -> Tensor:
    return image.float() / 255.0


def slow_triplet(scores: Tensor, labels: Tensor, margin: float) -> float:
    """Per-anchor loops: hardest positive = lowest positive score (self excluded), hardest negative = highest."""
    losses = []
    for a in range(len(labels)):
        pos = [float(scores[a, p]) for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [float(scores[a, n]) for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            losses.append(max(0.0, margin - (min(pos) - max(neg))))
    return sum(losses) / len(losses)


# ------------------------------------------------------------------------------ criterion
def test_criterion_triplet_equals_loop_on_matcher_scores() -> None:
    torch.manual_seed(0)
    matcher = QAConv(D, H, W)
    crit = QAConvCriterion(matcher, loss="triplet", margin=3.0)
    fmap = F.normalize(torch.randn(8, D, H, W), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    terms = crit(SimpleNamespace(feature_map=fmap), labels)
    assert set(terms) == {"triplet"}
    scores = matcher(fmap, fmap).detach()  # same train-mode BN batch: same scores
    assert terms["triplet"].item() == pytest.approx(slow_triplet(scores, labels, 3.0), rel=1e-5)
    assert len(crit.log) == 1
    log = crit.log[0]
    same = labels[:, None] == labels[None, :]
    assert log["mean_neg"] == pytest.approx(float(scores[~same].mean()), rel=1e-5)


def test_criterion_pairwise_and_weight_and_log_only_in_training() -> None:
    torch.manual_seed(1)
    matcher = QAConv(D, H, W).eval()
    fmap = F.normalize(torch.randn(6, D, H, W), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    crit = QAConvCriterion(matcher, loss="pairwise", weight=2.0).eval()
    loss = crit(SimpleNamespace(feature_map=fmap), labels)["pairwise"]
    scores = matcher(fmap, fmap)
    target = (labels[:, None] == labels[None, :]).float()
    ref = (
        sum(F.binary_cross_entropy_with_logits(scores[i, j], target[i, j]).item() for i in range(6) for j in range(6))
        / 6
    )
    assert loss.item() == pytest.approx(2.0 * ref, rel=1e-5)
    assert crit.log == []  # eval mode: nothing logged


def test_criterion_rejects_bad_input() -> None:
    matcher = QAConv(D, H, W)
    with pytest.raises(ValueError, match="loss"):
        QAConvCriterion(matcher, loss="softmax")
    with pytest.raises(ValueError, match="feature_map"):
        QAConvCriterion(matcher)(SimpleNamespace(feature_map=None), torch.zeros(2, dtype=torch.long))


def test_param_groups_split_backbone_and_cover_everything_once() -> None:
    net, matcher = TinyNet(), QAConv(D, H, W)
    groups = qaconv_param_groups(net, matcher, backbone_lr_mult=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    expected = [id(p) for p in list(net.parameters()) + list(matcher.parameters())]
    assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids)
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in net.backbone.parameters()}
    assert groups[0]["lr_mult"] == 0.1 and groups[1]["lr_mult"] == 1.0
    with pytest.raises(ValueError, match="backbone"):
        qaconv_param_groups(nn.Linear(2, 2), matcher)


def test_freeze_backbone_bn_keeps_running_stats() -> None:
    net = TinyNet().train()
    FreezeBackboneBN().on_epoch_start(SimpleNamespace(model=net), 0)
    bn = net.backbone[1]
    before = bn.running_mean.clone()
    net(torch.randn(4, 3, 8, 4))
    assert not net.backbone.training and net.neck.training
    assert torch.equal(bn.running_mean, before)


# ------------------------------------------------------------------------------ graph sampling
def colour_items(
    num_classes: int, per_class: int, seed: int = 0
) -> tuple[list[tuple[str, int, int]], dict[str, Tensor], np.ndarray]:
    """Items whose images are flat 4x2 colours, one colour per class, in shuffled order."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(num_classes, 3))  # (C, 3)
    items, table = [], {}
    for c in range(num_classes):
        for j in range(per_class):
            path = f"img_{c}_{j}.png"
            items.append((path, 10 + c, j % 2))
            table[path] = torch.tensor(colours[c], dtype=torch.uint8).view(3, 1, 1).expand(3, 4, 2).clone()
    order = rng.permutation(len(items))
    return [items[i] for i in order], table, colours


def brute_force_neighbours(points: np.ndarray, k: int) -> list[list[int]]:
    out = []
    for c in range(len(points)):
        d = sorted((float(np.linalg.norm(points[c] - points[j])), j) for j in range(len(points)) if j != c)
        out.append([j for _, j in d[:k]])
    return out


def test_callback_builds_the_graph_of_the_current_model() -> None:
    items, table, colours = colour_items(num_classes=9, per_class=3)
    sampler = GraphSampler([p for _, p, _ in items], batch_size=6, num_instances=2, seed=0)
    cb = GraphSamplingCallback(sampler, items, to_float, "euclidean", image_loader=table.__getitem__)
    net = ColourNet()
    cb.on_epoch_start(SimpleNamespace(model=net, device=torch.device("cpu")), 0)
    assert sampler.neighbors is not None and len(cb.seconds) == 1
    expected = brute_force_neighbours(colours / 255.0, k=2)
    assert sampler.neighbors.tolist() == expected
    assert cb.class_dist.shape == (9, 9)


def test_callback_restores_every_submodule_mode_and_respects_start_epoch() -> None:
    items, table, _ = colour_items(num_classes=6, per_class=2)
    pids = [p for _, p, _ in items]
    sampler = GraphSampler(pids, batch_size=4, num_instances=2, seed=0)
    transform = lambda im: F.interpolate(to_float(im)[None], size=(8, 4))[0]  # noqa: E731
    matcher = QAConv(D, H, W)
    cb = GraphSamplingCallback(sampler, items, transform, matcher, image_loader=table.__getitem__, start_epoch=1)
    net = TinyNet().train()
    net.backbone.eval()  # a frozen backbone must stay frozen
    trainer = SimpleNamespace(model=net, device=torch.device("cpu"))
    cb.on_epoch_start(trainer, 0)
    assert sampler.neighbors is None  # PK fallback before start_epoch
    cb.on_epoch_start(trainer, 1)
    assert sampler.neighbors is not None
    assert net.training and net.neck.training and not net.backbone.training and matcher.training


def test_callback_validates() -> None:
    items, table, _ = colour_items(num_classes=4, per_class=2)
    sampler = GraphSampler([p for _, p, _ in items], batch_size=4, num_instances=2)
    with pytest.raises(TypeError, match="GraphSampler"):
        GraphSamplingCallback(object(), items, to_float, "euclidean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="entries"):
        GraphSamplingCallback(sampler, items[:-1], to_float, "euclidean")


def test_trainer_with_graph_sampling_trains_on_graph_batches() -> None:
    """End to end: the trainer's batches are the graph's batches (seed + nearest classes)."""
    items, table, _ = colour_items(num_classes=8, per_class=4)
    pids = [p for _, p, _ in items]
    fetched: list[int] = []

    class RecordingDataset(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int) -> tuple[Tensor, int]:
            fetched.append(i)
            return F.interpolate(to_float(table[items[i][0]])[None], size=(8, 4))[0], pids[i]

    sampler = GraphSampler(pids, batch_size=4, num_instances=2, seed=0)
    loader = torch.utils.data.DataLoader(RecordingDataset(), batch_size=4, sampler=sampler, drop_last=True)
    net, matcher = TinyNet(), QAConv(D, H, W)
    transform = lambda im: F.interpolate(to_float(im)[None], size=(8, 4))[0]  # noqa: E731
    gs = GraphSamplingCallback(sampler, items, transform, matcher, image_loader=table.__getitem__)
    curve = LearningCurve()
    trainer = Trainer(
        net,
        QAConvCriterion(matcher, margin=1.0),
        loader,
        TrainConfig(
            epochs=1,
            optimizer="sgd",
            lr=0.01,
            warmup_epochs=0,
            scheduler="constant",
            max_iters_per_epoch=3,
            progress=False,
        ),
        device="cpu",
        callbacks=[curve, gs],
    )
    trainer.fit()
    assert curve.images == 12 and curve.iterations == 3 and curve.train_seconds > 0
    assert len(gs.seconds) == 1
    classes = sampler.classes.tolist()
    allowed = {tuple(sorted(row)) for row in sampler.batch_classes().tolist()}
    batches = np.asarray(fetched[:12]).reshape(3, 4)
    for batch in batches:
        batch_classes = tuple(sorted({classes.index(pids[i]) for i in batch}))
        assert batch_classes in allowed


# ------------------------------------------------------------------------------ curves
def fake_result(rank1: float) -> EvalResult:
    return EvalResult(
        np.array([rank1 / 100]), 0.5, {"rank1": rank1, "rank5": rank1, "rank10": rank1, "mAP": 50.0}, torch.zeros(1, 1)
    )


def test_learning_curve_times_training_not_evaluation() -> None:
    values = iter([10.0, 30.0, 60.0])

    def slow_eval(model: nn.Module) -> EvalResult:
        time.sleep(0.2)
        return fake_result(next(values))

    curve = LearningCurve(evaluate=slow_eval)
    trainer = SimpleNamespace(
        state=SimpleNamespace(iteration=0), config=SimpleNamespace(epochs=3), stop_training=False, model=None
    )
    for epoch in range(3):
        curve.on_epoch_start(trainer, epoch)
        time.sleep(0.01)
        trainer.state.iteration += 5
        curve.on_epoch_end(trainer, epoch, {"images": 320.0})
    assert [p.images for p in curve.points] == [320, 640, 960]
    assert [p.iterations for p in curve.points] == [5, 10, 15]
    assert [p.rank1 for p in curve.points] == [10.0, 30.0, 60.0]
    assert 0.03 <= curve.train_seconds < 0.2  # three 10 ms epochs, none of the 200 ms evaluations


def test_learning_curve_every_and_last() -> None:
    curve = LearningCurve(evaluate=lambda m: fake_result(1.0), every=2)
    trainer = SimpleNamespace(
        state=SimpleNamespace(iteration=0), config=SimpleNamespace(epochs=3), stop_training=False, model=None
    )
    for epoch in range(3):
        curve.on_epoch_start(trainer, epoch)
        curve.on_epoch_end(trainer, epoch, {"images": 1.0})
    assert [p.epoch for p in curve.points] == [2, 3]
    with pytest.raises(ValueError, match="every"):
        LearningCurve(every=0)


def test_learning_curve_continued_adds_to_the_warm_up() -> None:
    warm = LearningCurve(evaluate=lambda m: fake_result(5.0))
    trainer = SimpleNamespace(
        state=SimpleNamespace(iteration=0), config=SimpleNamespace(epochs=1), stop_training=False, model=None
    )
    warm.on_epoch_start(trainer, 0)
    trainer.state.iteration = 7
    warm.on_epoch_end(trainer, 0, {"images": 70.0})
    branch = warm.continued(evaluate=lambda m: fake_result(9.0))
    fresh = SimpleNamespace(
        state=SimpleNamespace(iteration=0), config=SimpleNamespace(epochs=1), stop_training=False, model=None
    )  # a new trainer counts from 0 again
    branch.on_epoch_start(fresh, 0)
    fresh.state.iteration = 3
    branch.on_epoch_end(fresh, 0, {"images": 30.0})
    assert [(p.epoch, p.iterations, p.images, p.rank1) for p in branch.points] == [(1, 7, 70, 5.0), (2, 10, 100, 9.0)]
    assert len(warm.points) == 1  # the warm-up's curve is not changed


def test_time_to_reach_interpolates() -> None:
    pts = [CurvePoint(1, 10, 100, 10.0, 20.0, 5.0), CurvePoint(2, 20, 200, 30.0, 60.0, 9.0)]
    # between (10 s, 20 %) and (30 s, 60 %): 50 % is 3/4 of the way -> 25 s
    assert time_to_reach(pts, 50.0) == pytest.approx(25.0)
    assert time_to_reach(pts, 10.0) == pytest.approx(5.0)  # from (0, 0) to (10 s, 20 %)
    assert time_to_reach(pts, 50.0, key="images") == pytest.approx(175.0)
    assert time_to_reach(pts, 61.0) is None
    with pytest.raises(ValueError, match="key"):
        time_to_reach(pts, 1.0, key="epochs")


# ------------------------------------------------------------------------------ hardness
def test_same_family_fraction_hand_example() -> None:
    family_of = {1: 0, 2: 0, 3: 1, 4: 2, 5: 2, 6: 2}
    # identities 1, 2 (family 0), 3 (family 1), 4, 5 (family 2): 4 of 5 have a family-mate
    assert same_family_fraction([1, 1, 2, 2, 3, 3, 4, 4, 5, 5], family_of) == pytest.approx(0.8)
    assert same_family_fraction([1, 3, 4], family_of) == 0.0
    with pytest.raises(KeyError):
        same_family_fraction([99], family_of)
    ids = [
        {"pid": 9, "family": 3, "split": "train"},
        {"pid": 4, "family": 1, "split": "train"},
        {"pid": 5, "family": 2, "split": "test"},
    ]
    assert family_index(ids) == {9: 3, 4: 1, 5: 2}
    assert family_index(ids, relabel_split="train") == {0: 1, 1: 3}  # pid 4 -> label 0, pid 9 -> label 1
    with pytest.raises(ValueError, match="split"):
        family_index(ids, relabel_split="val")


def test_batch_hardness_equals_pair_loop() -> None:
    torch.manual_seed(0)
    net, matcher = TinyNet().eval(), QAConv(D, H, W).eval()
    images = torch.randn(8, 3, 8, 4)
    labels = [1, 1, 2, 2, 3, 3, 4, 4]

    class DS:
        items = [("p", y, 0) for y in labels]

        def __getitem__(self, i: int) -> tuple[Tensor, int]:
            return images[i], labels[i]

    out = batch_hardness(net, matcher, DS(), np.array([[0, 1, 2, 3], [4, 5, 6, 7]]), family_of={1: 0, 2: 0, 3: 1, 4: 2})
    with torch.no_grad():
        maps = net(images).feature_map
        neg, hardest = [], []
        for rows in ([0, 1, 2, 3], [4, 5, 6, 7]):
            per_batch_neg, per_batch_hard = [], []
            for a in rows:
                negs = [-float(matcher(maps[a : a + 1], maps[n : n + 1])) for n in rows if labels[n] != labels[a]]
                per_batch_neg += negs
                per_batch_hard.append(min(negs))
            neg.append(np.mean(per_batch_neg))
            hardest.append(np.mean(per_batch_hard))
    assert out["neg_dist"] == pytest.approx(float(np.mean(neg)), rel=1e-4)
    assert out["hardest_neg_dist"] == pytest.approx(float(np.mean(hardest)), rel=1e-4)
    assert out["same_family"] == pytest.approx((1.0 + 0.0) / 2)  # batch 1: pids 1, 2 share family 0
    net.train()
    net.backbone.eval()  # a frozen backbone stays frozen, the rest stays in training mode
    batch_hardness(net, matcher, DS(), np.array([[0, 1, 2, 3]]))
    assert net.training and net.neck.training and not net.backbone.training and not matcher.training


# ------------------------------------------------------------------------------ epoch time
def test_fit_graph_cost_recovers_coefficients() -> None:
    c = np.array([100, 200, 400, 800])
    a, b = fit_graph_cost(c, 0.002 * c + 3e-6 * c**2)
    assert a == pytest.approx(0.002, rel=1e-6) and b == pytest.approx(3e-6, rel=1e-6)
    with pytest.raises(ValueError):
        fit_graph_cost([100], [1.0])


def test_epoch_seconds_hand_values() -> None:
    # 2,000 ids x 6 images, B = 64: PK = floor(12000 / 64) = 187 iterations; GS = 2,000 iterations
    t = epoch_seconds(np.array([2000]), images_per_id=6, batch_size=64, iteration_seconds=0.5, graph_cost=(0.01, 1e-6))
    assert t["pk"][0] == pytest.approx(187 * 0.5)
    assert t["gs_graph"][0] == pytest.approx(0.01 * 2000 + 1e-6 * 2000**2)
    assert t["gs"][0] == pytest.approx(2000 * 0.5 + 24.0)


def test_measure_graph_seconds_and_lookup() -> None:
    items, table, _ = colour_items(num_classes=6, per_class=2)
    secs = measure_graph_seconds(ColourNet(), "euclidean", items, to_float, [2, 6], image_loader=table.__getitem__)
    assert len(secs) == 2 and all(s > 0 for s in secs)
    with pytest.raises(ValueError, match="num_classes"):
        measure_graph_seconds(ColourNet(), "euclidean", items, to_float, [7])
    ds = SimpleNamespace(items=items[:2], preloaded=[table[items[0][0]], table[items[1][0]]])
    lookup = preloaded_image_lookup(ds)
    assert torch.equal(lookup(items[1][0]), table[items[1][0]])
    with pytest.raises(KeyError, match="preloaded"):
        lookup("nope.png")
    with pytest.raises(ValueError, match="preload"):
        preloaded_image_lookup(SimpleNamespace(items=items, preloaded=None))
