"""Tests for one run of the AlignedReID chapter's experiment (``train_and_evaluate``) and the parts
it added to the library: the row-by-row local distance in training (``paired_unaligned_distance``,
``AlignedTripletLoss(local_distance="row")``) and the path-offset summaries.

The repeatability test is issue 19's: the same seed gives identical results twice in one
process (one thread, as every run of the chapter gets from ``run_side_by_side``), and another
seed gives other results.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from reid_core.alignment import paired_unaligned_distance, unaligned_local_distance
from reid_core.book import PretrainedBackbone
from reid_core.chapters.alignedreid import (
    ARMS,
    WorldSpec,
    band_offset_bound,
    build_alignedreid,
    train_and_evaluate,
    widest_path_offsets,
)
from reid_core.data import render_synthreid
from reid_core.engine import save_checkpoint
from reid_core.losses import AlignedTripletLoss
from reid_core.models import NormalizedLocal, ResNetBackbone

RECIPE = dict(
    backbone="resnet10",
    pretrained=False,
    last_stride=1,
    height=64,
    width=32,
    ids_per_batch=4,
    num_instances=2,
    epochs=1,
    max_iters_per_epoch=2,
    optimizer="adam",
    lr=5e-4,
    weight_decay=5e-4,
    scheduler="constant",
    milestones=(),
    decay_start=None,
    local_dim=16,
    margin=0.3,
    local_margin=0.3,
    id_weight=1.0,
    normalize_local=True,
    prob_mutual_weight=1.0,
    global_mutual_weight=1.0,
    precision="bf16",
    batch_augment=True,
)


# ------------------------------------------------------------------ row-by-row distance in training
def test_paired_unaligned_distance_matches_definition_and_the_matrix_form() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(5, 4, 8, generator=gen, dtype=torch.float64),
        torch.randn(5, 4, 8, generator=gen, dtype=torch.float64),
    )
    got = paired_unaligned_distance(x, y)
    for b in range(5):
        ref = sum(math.tanh(float((x[b, i] - y[b, i]).norm()) / 2) for i in range(4))
        assert got[b].item() == pytest.approx(ref, rel=1e-12)
    torch.testing.assert_close(got, unaligned_local_distance(x, y).diagonal())


def test_paired_unaligned_distance_of_a_sample_with_itself_is_zero_with_finite_gradient() -> None:
    x = torch.rand(3, 4, 8, requires_grad=True)
    d = paired_unaligned_distance(x, x)
    assert torch.equal(d.detach(), torch.zeros(3))
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_paired_unaligned_distance_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        paired_unaligned_distance(torch.rand(2, 4, 8), torch.rand(2, 5, 8))


@pytest.mark.parametrize("mining", ["global", "local"])
def test_row_local_loss_uses_the_row_by_row_distance(mining: str) -> None:
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    feats, local = torch.randn(6, 16), torch.rand(6, 4, 8)
    row = AlignedTripletLoss(margin=0.3, local_margin=10.0, mining=mining, local_distance="row")(feats, local, labels)
    dist = unaligned_local_distance(local, local)  # (6, 6)
    if mining == "global":
        g = torch.cdist(feats, feats)
        same = labels[:, None] == labels[None, :]
        pos = g.masked_fill(~same, -1).argmax(1)
        neg = g.masked_fill(same, float("inf")).argmin(1)
        ap, an = dist[torch.arange(6), pos], dist[torch.arange(6), neg]
    else:
        same = labels[:, None] == labels[None, :]
        ap = dist.masked_fill(~same, -1).max(1).values
        an = dist.masked_fill(same, float("inf")).min(1).values
    expected = torch.relu(10.0 + ap - an).mean()  # a large margin keeps every anchor active
    assert row["local"].item() == pytest.approx(expected.item(), rel=1e-5)
    aligned = AlignedTripletLoss(margin=0.3, local_margin=10.0, mining=mining)(feats, local, labels)
    assert aligned["local"].item() != pytest.approx(row["local"].item(), rel=1e-6)
    assert aligned["global"].item() == pytest.approx(row["global"].item())


def test_row_local_loss_rejects_an_unknown_distance() -> None:
    with pytest.raises(ValueError, match="local_distance"):
        AlignedTripletLoss(local_distance="diagonal")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- path offsets
def test_band_offset_bound_counts_the_alternating_path() -> None:
    assert band_offset_bound(6) == pytest.approx(5 / 11)
    assert band_offset_bound(4) == pytest.approx(3 / 7)
    assert band_offset_bound(1) == 0.0
    with pytest.raises(ValueError):
        band_offset_bound(0)


def test_widest_path_offsets_of_identical_and_shifted_stripes() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.rand(1, 6, 32, generator=gen), dim=-1)
    shifted = torch.cat([a[:, :1], a[:, :1], a[:, :1], a[:, :3]], dim=1)  # B's body two stripes lower
    widest = widest_path_offsets(torch.cat([a, a]), torch.cat([a, shifted]))
    assert widest.tolist()[0] <= 1  # identical stripes: the staircase along the diagonal
    assert widest.tolist()[1] >= 2
    with pytest.raises(ValueError):
        widest_path_offsets(torch.rand(2, 4, 8), torch.rand(3, 4, 8))


# ------------------------------------------------------------------------------------ one run
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorldSpec, PretrainedBackbone]:
    root = tmp_path_factory.mktemp("alignedreid_runs")
    render_synthreid(
        root / "synthreid",
        num_ids=8,
        images_per_id=4,
        num_cameras=2,
        seed=0,
        height=64,
        width=32,
        lookalike_family_size=2,
        workers=1,
        progress=False,
    )
    torch.manual_seed(0)
    backbone = ResNetBackbone("resnet10", pretrained=False, last_stride=1)
    path = save_checkpoint({"backbone": "resnet10", "state_dict": backbone.state_dict()}, root / "resnet10.pt")
    return WorldSpec("tiny", root=str(root / "synthreid")), PretrainedBackbone(Path(path), {"file": "resnet10.pt"})


def _comparable(result: dict) -> dict:
    """Everything a run returns except its wall-clock timings."""
    clock = ("seconds", "images_per_second")
    return {
        "variants": result["variants"],
        "history": [{k: v for k, v in epoch.items() if k not in clock} for epoch in result["history"]],
        "figure_local": result.get("figure_local"),
        "offsets": result.get("offsets"),
    }


@pytest.mark.parametrize("arm", ["global + local", "global + local (row by row)"])
def test_train_and_evaluate_is_repeatable_for_one_seed(tiny, arm: str) -> None:
    world, weights = tiny
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in run_side_by_side's workers
    try:
        figure = sorted(str(p) for p in Path(world.root, "query").glob("*.jpg"))[:2]
        kwargs = dict(arm=arm, world=world, recipe=RECIPE, weights=weights, figure_paths=figure, offsets=True)
        first = train_and_evaluate(seed=0, **kwargs)
        again = train_and_evaluate(seed=0, **kwargs)
        other = train_and_evaluate(seed=1, **kwargs)
    finally:
        torch.set_num_threads(threads)
    a, b, c = _comparable(first), _comparable(again), _comparable(other)
    assert a["variants"] == b["variants"] and a["history"] == b["history"]
    assert torch.equal(a["figure_local"], b["figure_local"])
    assert all((x == y).all() for x, y in zip(a["offsets"], b["offsets"]))
    assert a["history"] != c["history"]  # another seed: other batches and other heads
    assert set(first["variants"]) == {"global", "global+local", "local", "local (row by row)"} | {
        "global + RK",
        "global+local + RK",
    }
    assert first["stripes"] == 4 and first["figure_local"].shape == (2, 4, 16)


def test_train_and_evaluate_mutual_reports_both_nets_and_checks_its_arm(tiny) -> None:
    world, weights = tiny
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_and_evaluate(arm="mutual", seed=0, world=world, recipe=RECIPE, weights=weights, rerank=False)
        solo = train_and_evaluate(
            arm="global + local", seed=0, world=world, recipe=RECIPE, weights=weights, rerank=False
        )
    finally:
        torch.set_num_threads(threads)
    assert "net 2: global" in result["variants"] and "global" in result["variants"]
    assert "global + RK" not in result["variants"]
    assert result["history"][0]["id_1"] == pytest.approx(
        solo["history"][0]["id"], rel=0.2
    )  # net 1 starts as the solo net
    with pytest.raises(ValueError, match="arm must be one of"):
        train_and_evaluate(arm="local only", seed=0, world=world, recipe=RECIPE)
    assert "mutual" in ARMS


def test_build_alignedreid_loads_the_pretrained_backbone(tiny) -> None:
    _, weights = tiny
    model = build_alignedreid(5, RECIPE, weights)
    assert isinstance(model, NormalizedLocal)
    state = torch.load(weights.path, weights_only=False)["state_dict"]
    for name, value in model.model.backbone.state_dict().items():
        assert torch.equal(value, state[name])


def test_local_triplet_gradient_is_the_same_on_every_call_with_two_threads() -> None:
    # the local term gathers each anchor's hard positive and negative; gathered by advanced
    # indexing, its backward added with atomics in a varying order on a multi-threaded CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(0)
        labels = torch.arange(16).repeat_interleave(4)  # P=16 x K=4
        feats = torch.randn(64, 32, generator=gen)
        local = torch.rand(64, 4, 128, generator=gen, requires_grad=True)
        loss = AlignedTripletLoss(margin=0.3, local_margin=5.0)
        grads = []
        for _ in range(20):
            local.grad = None
            loss(feats, local, labels)["local"].backward()
            grads.append(local.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(g, grads[0]) for g in grads)


def test_runs_packed_in_one_process_give_what_they_give_alone(tiny) -> None:
    from reid_core.chapters.alignedreid import train_and_evaluate_many

    world, weights = tiny
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shared = dict(world=world, recipe=RECIPE, weights=weights, rerank=False)
        packed = train_and_evaluate_many([dict(arm="global", seed=1), dict(arm="global", seed=0)], **shared)
        alone = train_and_evaluate(arm="global", seed=0, **shared)
    finally:
        torch.set_num_threads(threads)
    assert packed[1]["variants"] == alone["variants"]
    assert packed[0]["seed"] == 1 and packed[1]["seed"] == 0
