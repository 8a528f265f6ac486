"""Tests for the metric-learning chapter's code: reid_core.data.digits, the models, reid_core.losses.metric_criterion,
and reid_core.chapters.metric_learning (retrieval, head sizes, the sphere figures). References are written from the
formulas."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from reid_core.book.tables import format_mean_std
from reid_core.chapters.metric_learning.experiment import (
    angular_statistics,
    embed,
    head_parameter_count,
    leave_one_out_retrieval,
    make_pk_loader,
    relabel,
    train_embedding,
)
from reid_core.chapters.metric_learning.figures import (
    plot_digit_grid,
    plot_head_parameters,
    plot_scale_history,
    plot_sphere_embeddings,
    plot_target_logits,
    seam_distance,
    seam_rotation,
    sphere_to_lonlat,
    unit_directions,
)
from reid_core.data.digits import load_digits_split
from reid_core.engine.trainer import TrainConfig  # noqa: E402
from reid_core.losses.metric_criterion import (
    METRIC_LOSSES,
    MetricCriterion,
    build_metric_criterion,
    sphereface_gamma_for,
)
from reid_core.losses.sphereface import SphereFace  # noqa: E402
from reid_core.models.digits_net import DigitsConvNet  # noqa: E402
from reid_core.models.embedding_net import EmbeddingNet  # noqa: E402
from reid_core.models.outputs import ReIDOutput  # noqa: E402
from reid_core.models.parameters import count_parameters


# ---------------------------------------------------------------------------- models
def test_digits_net_shapes_and_errors() -> None:
    net = DigitsConvNet(embedding_dim=3, width=8)
    out = net(torch.randn(5, 1, 8, 8))
    assert isinstance(out, ReIDOutput)
    assert out.feat.shape == (5, 3) and out.global_feat is out.feat
    with pytest.raises(ValueError, match="images"):
        net(torch.randn(5, 3, 8, 8))
    with pytest.raises(ValueError, match="embedding_dim"):
        DigitsConvNet(embedding_dim=0)


def test_embedding_net_shapes() -> None:
    net = EmbeddingNet("resnet18", embedding_dim=16, last_stride=2)
    out = net(torch.randn(2, 3, 64, 32))
    assert out.feat.shape == (2, 16) and net.embedding_dim == 16 and net.backbone.out_channels == 512
    with pytest.raises(ValueError, match="embedding_dim"):
        EmbeddingNet("resnet18", embedding_dim=0)


# ------------------------------------------------------------------------- criterion
def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def test_unknown_loss_raises() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        build_metric_criterion("npair", 3, 10)
    with pytest.raises(ValueError, match="exactly one"):
        MetricCriterion("x")


def test_softmax_criterion_is_linear_cross_entropy() -> None:
    torch.manual_seed(0)
    crit = build_metric_criterion("softmax", 4, 6)
    x, y = torch.randn(8, 4), torch.randint(0, 6, (8,))
    w, b = crit.head.weight, crit.head.bias
    # per-sample reference: -log softmax(W x + b)_y
    ref = torch.stack([-(torch.log_softmax(w @ x[i] + b, 0)[y[i]]) for i in range(8)]).mean()
    assert torch.allclose(crit(ReIDOutput(feat=x), y)["softmax"], ref, atol=1e-6)


def test_arcface_criterion_matches_formula() -> None:
    torch.manual_seed(1)
    s, m = 10.0, 0.3
    crit = build_metric_criterion("arcface", 5, 4, s=s, m=m)
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    crit = crit.double()
    w = _normalize(crit.head.weight.detach())
    losses = []
    for i in range(6):
        cos = w @ (x[i] / x[i].norm())  # (C,)
        theta = torch.acos(cos[y[i]])
        assert theta + m < math.pi  # the plain formula applies (no fallback branch)
        z = s * cos.clone()
        z[y[i]] = s * torch.cos(theta + m)
        losses.append(-torch.log_softmax(z, 0)[y[i]])
    got = crit(x, y)["arcface"]
    assert torch.allclose(got, torch.stack(losses).mean(), atol=1e-8)


def test_pair_criteria_use_normalised_embeddings() -> None:
    torch.manual_seed(2)
    x = torch.randn(8, 3) * 5.0
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    u = _normalize(x)
    # contrastive, brute force over i < j: 1/2 D^2 (same) or 1/2 max(0, m - D)^2 (different)
    margin = 1.0
    terms = []
    for i in range(8):
        for j in range(i + 1, 8):
            d = (u[i] - u[j]).norm()
            terms.append(0.5 * d**2 if y[i] == y[j] else 0.5 * torch.clamp(margin - d, min=0) ** 2)
    got = build_metric_criterion("contrastive", 3, 4, margin=margin)(x, y)["contrastive"]
    assert torch.allclose(got, torch.stack(terms).mean(), atol=1e-6)
    # batch-hard triplet: [m + max_p D_ap - min_n D_an]_+ averaged over anchors
    tm = 0.3
    dist = torch.cdist(u, u)
    ref = []
    for a in range(8):
        pos = dist[a][(y == y[a])].max()
        neg = dist[a][(y != y[a])].min()
        ref.append(torch.clamp(tm + pos - neg, min=0))
    got = build_metric_criterion("triplet", 3, 4, margin=tm)(x, y)["triplet"]
    assert torch.allclose(got, torch.stack(ref).mean(), atol=1e-5)
    # scaling the embedding must not change a loss on normalised embeddings
    crit = build_metric_criterion("triplet", 3, 4, margin=tm)
    assert torch.allclose(crit(x, y)["triplet"], crit(3.0 * x, y)["triplet"], atol=1e-6)
    # Hermans et al.'s variant: soft margin ln(1 + e^(D_ap - D_an)) on the raw euclidean embedding
    raw = torch.cdist(x, x)
    soft = torch.stack([torch.log1p(torch.exp(raw[a][y == y[a]].max() - raw[a][y != y[a]].min())) for a in range(8)])
    got = build_metric_criterion("triplet", 3, 4, soft_margin=True, normalize=False)(x, y)["triplet"]
    assert torch.allclose(got, soft.mean(), atol=1e-5)


@pytest.mark.parametrize("loss", METRIC_LOSSES)
def test_every_loss_is_finite_and_trains_its_head(loss: str) -> None:
    torch.manual_seed(3)
    crit = build_metric_criterion(loss, 3, 4)
    x = torch.randn(8, 3, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    value = crit(x, y)[loss]
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    if crit.head is not None:  # the trainer optimises criterion.parameters(): the head must be there
        assert any(p is crit.head.weight for p in crit.parameters())
        assert crit.head.weight.grad is not None


def test_sphereface_gamma_reaches_lambda_min_on_time() -> None:
    gamma = sphereface_gamma_for(200)
    head = SphereFace(3, 4, gamma=gamma)
    assert float(head.lambda_at(200)) == pytest.approx(5.0, rel=1e-9)
    assert float(head.lambda_at(100)) > 5.0 + 1.0
    with pytest.raises(ValueError):
        sphereface_gamma_for(0)


# ------------------------------------------------------------------------------ data
def test_digits_split_is_stratified_and_standardised() -> None:
    split = load_digits_split(test_fraction=0.3, seed=0)
    n_train, n_test = len(split.train_labels), len(split.test_labels)
    assert n_train + n_test == 1797
    assert split.train_images.shape[1:] == (1, 8, 8)
    for c in range(10):
        total = int((split.train_labels == c).sum() + (split.test_labels == c).sum())
        assert abs(int((split.test_labels == c).sum()) - 0.3 * total) <= 1
    assert abs(float(split.train_images.mean())) < 1e-4
    assert float(split.train_images.std()) == pytest.approx(1.0, abs=1e-3)
    again = load_digits_split(test_fraction=0.3, seed=0)
    assert torch.equal(again.test_labels, split.test_labels) and torch.equal(again.test_images, split.test_images)
    other = load_digits_split(test_fraction=0.3, seed=1)
    assert not torch.equal(other.test_images, split.test_images)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(test_fraction=1.0)


def test_digits_subset_and_relabel() -> None:
    split = load_digits_split(seed=0).subset(train_classes=(0, 1, 2), test_classes=(7, 9))
    assert set(split.train_labels.tolist()) == {0, 1, 2}
    assert set(split.test_labels.tolist()) == {7, 9}
    with pytest.raises(ValueError, match="select no image"):
        split.subset(train_classes=(5,))
    contiguous, classes = relabel(torch.tensor([5, 7, 5, 9]))
    assert contiguous.tolist() == [0, 1, 0, 2] and classes.tolist() == [5, 7, 9]


def test_pk_loader_batches() -> None:
    labels = torch.arange(60) % 6  # 6 classes x 10 images
    loader = make_pk_loader(torch.randn(60, 2), labels, batch_size=12, num_instances=4)
    for _, y in loader:
        counts = torch.bincount(y, minlength=6)
        assert len(y) == 12 and sorted(counts[counts > 0].tolist()) == [4, 4, 4]
    with pytest.raises(ValueError, match="classes"):
        make_pk_loader(torch.randn(60, 2), labels, batch_size=28, num_instances=4)


# ------------------------------------------------------------------------- retrieval
def _slow_leave_one_out(features: torch.Tensor, labels: np.ndarray) -> tuple[float, float]:
    """Reference: cosine distance, every other image ranked, AP = mean precision at the hits."""
    u = _normalize(features.double())
    dist = 1.0 - u @ u.T
    r1, aps = [], []
    for q in range(len(labels)):
        others = [g for g in range(len(labels)) if g != q]
        order = sorted(others, key=lambda g: (float(dist[q, g]), g))
        hits = [labels[g] == labels[q] for g in order]
        if not any(hits):
            continue
        r1.append(float(hits[0]))
        found, precisions = 0, []
        for k, h in enumerate(hits, start=1):
            if h:
                found += 1
                precisions.append(found / k)
        aps.append(np.mean(precisions))
    return 100 * float(np.mean(r1)), 100 * float(np.mean(aps))


def test_leave_one_out_retrieval_matches_brute_force() -> None:
    torch.manual_seed(4)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3])  # class 3 has one image: no valid match, skipped
    features = torch.randn(9, 4) + torch.as_tensor(labels, dtype=torch.float32)[:, None] * 0.5
    got = leave_one_out_retrieval(features, labels)
    ref_r1, ref_map = _slow_leave_one_out(features, labels)
    assert got["rank1"] == pytest.approx(ref_r1) and got["mAP"] == pytest.approx(ref_map)
    # well separated classes: perfect retrieval
    centres = torch.eye(3)
    perfect = centres[[0, 0, 1, 1, 2, 2]] + 0.01 * torch.randn(6, 3)
    assert leave_one_out_retrieval(perfect, np.array([0, 0, 1, 1, 2, 2])) == {"rank1": 100.0, "mAP": 100.0}
    with pytest.raises(ValueError, match="features"):
        leave_one_out_retrieval(torch.randn(5, 3), labels)


def test_embed_uses_eval_mode_and_restores_it() -> None:
    torch.manual_seed(5)
    net = DigitsConvNet(3, width=8)
    net(torch.randn(16, 1, 8, 8))  # move BN running statistics away from their init
    images = torch.randn(7, 1, 8, 8)
    net.train()
    got = embed(net, images, batch_size=3)
    assert net.training
    net.eval()
    assert torch.allclose(got, net(images).feat, atol=1e-6)


def test_train_embedding_lowers_the_loss_and_tracks_adacos() -> None:
    torch.manual_seed(6)
    split = load_digits_split(seed=0).subset(train_classes=(0, 1, 2, 3))
    loader = make_pk_loader(split.train_images, split.train_labels, batch_size=32, num_instances=8)
    cfg = TrainConfig(epochs=2, lr=3e-3, scheduler="constant", warmup_epochs=0, max_iters_per_epoch=6, progress=False)
    run = train_embedding(DigitsConvNet(3, width=8), "adacos", loader, 4, cfg, track_history=True)
    assert len(run.history) == 2 and run.history[1]["adacos"] < run.history[0]["adacos"]
    assert len(run.criterion.head.scale_history) == 12  # one dynamic update per iteration
    assert run.seconds > 0


def test_angular_statistics_on_hand_made_classes() -> None:
    # class 0 at +-10 degrees around the x axis, class 1 at +-10 degrees around the y axis
    a = math.radians(10)
    feats = torch.tensor(
        [
            [math.cos(a), math.sin(a), 0],
            [math.cos(a), -math.sin(a), 0],
            [math.sin(a), math.cos(a), 0],
            [-math.sin(a), math.cos(a), 0],
        ],
        dtype=torch.float64,
    )
    stats = angular_statistics(feats * 3.0, np.array([0, 0, 1, 1]))  # the norm must not matter
    assert stats["intra"] == pytest.approx(10.0) and stats["inter"] == pytest.approx(90.0)
    with pytest.raises(ValueError, match="two classes"):
        angular_statistics(feats, np.zeros(4))


def test_format_mean_std() -> None:
    assert format_mean_std([1.0, 3.0]) == "2.0 ± 1.0"
    assert format_mean_std([2.0]) == "2.0"
    assert format_mean_std([float("nan")] * 2) == "–"


# ------------------------------------------------------------------------ head sizes
@pytest.mark.parametrize(
    "loss,extra", [("softmax", 1), ("l2_softmax", 1), ("cosface", 0), ("arcface", 0), ("sphereface", 0), ("adacos", 0)]
)
def test_head_parameter_count(loss: str, extra: int) -> None:
    c, d = 7, 5
    assert head_parameter_count(loss, d, c) == c * d + extra * c
    assert head_parameter_count(loss, d, c) == count_parameters(build_metric_criterion(loss, d, c), trainable_only=True)


def test_pair_losses_have_no_head_and_huge_heads_cost_no_memory() -> None:
    assert head_parameter_count("triplet", 512, 100_000) == 0
    assert head_parameter_count("contrastive", 512, 100_000) == 0
    assert head_parameter_count("arcface", 2048, 1_000_000) == 2_048_000_000  # 8 GB if it were real


# ------------------------------------------------------------------------------ viz
def test_sphere_geometry_helpers() -> None:
    with pytest.raises(ValueError, match="zero"):
        unit_directions(np.array([[1.0, 0, 0], [0, 0, 0]]))
    lon, lat = sphere_to_lonlat(np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]))
    assert np.allclose(lon[:2], [0, math.pi / 2]) and np.allclose(lat, [0, 0, math.pi / 2])
    # the seam of the unrotated map: the half great circle from +z through -x to -z
    back, north = np.array([-1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    probes = np.array([[-1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]])
    assert np.allclose(seam_distance(probes, back, north), [0.0, math.pi / 2, math.pi / 2, 0.0])
    rng = np.random.default_rng(0)
    cap = unit_directions(rng.normal(size=(50, 3)) * 0.2 + np.array([-1.0, 0.0, 0.2]))  # a cluster on the seam
    rot = seam_rotation(cap)
    assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-9) and np.linalg.det(rot) == pytest.approx(1.0)
    before = seam_distance(cap, back, north).min()
    after = seam_distance(cap @ rot.T, back, north).min()
    assert before < math.radians(15) and after > math.radians(60)  # the cut moved away from the cluster


@pytest.mark.parametrize("projection", ["equal_area", "3d"])
def test_plot_sphere_embeddings(projection: str) -> None:
    rng = np.random.default_rng(1)
    feats = {"a": rng.normal(size=(20, 3)), "b": rng.normal(size=(20, 3))}
    labels = np.arange(20) % 4
    fig = plot_sphere_embeddings(
        feats, labels, weights={"a": rng.normal(size=(4, 3)), "b": None}, projection=projection, ncols=2
    )
    assert len(fig.axes) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="labels"):
        plot_sphere_embeddings(feats, labels[:5])
    with pytest.raises(ValueError, match="projection"):
        plot_sphere_embeddings(feats, labels, projection="mercator")  # type: ignore[arg-type]


def test_other_figures_draw() -> None:
    fig = plot_head_parameters([10, 100], {"head": [30, 300]}, {"backbone": 1000}, marks={"x": 50})
    plt.close(fig)
    fig = plot_scale_history({"run": [3.0, 2.5, 2.4]}, fixed={"fixed": 3.1})
    plt.close(fig)
    fig = plot_digit_grid(np.zeros((3, 1, 8, 8)), [4, 5, 6], ncols=3)
    assert [ax.get_title() for ax in fig.axes] == ["4", "5", "6"]
    plt.close(fig)
    fig = plot_target_logits({"softmax": lambda c: c})
    assert np.allclose(fig.axes[0].lines[0].get_ydata()[[0, -1]], [1.0, -1.0])  # cos 0 and cos pi
    plt.close(fig)


# ------------------------------------------------------------ one run per (arm, seed): repeatable
@pytest.fixture(scope="module")
def smoke_world(tmp_path_factory: pytest.TempPathFactory) -> str:
    from reid_core.data import prepare_synthreid

    root = tmp_path_factory.mktemp("data")
    prepare_synthreid(root, "smoke", progress=False)
    return str(root)


REID_TINY = dict(preset="smoke", batch_size=16, num_instances=4, epochs=1, max_iters=2)


@pytest.mark.parametrize("arm", ["cosface", "bot"])
def test_reid_run_repeatable(smoke_world: str, arm: str) -> None:
    from reid_core.chapters.metric_learning.experiment import reid_run

    first = reid_run(arm, 0, data_root=smoke_world, **REID_TINY)
    again = reid_run(arm, 0, data_root=smoke_world, **REID_TINY)
    other = reid_run(arm, 1, data_root=smoke_world, **REID_TINY)
    keys = ("rank1", "rank5", "rank10", "mAP")
    assert {k: first[k] for k in keys} == {k: again[k] for k in keys}
    assert first["final"]["loss"] == again["final"]["loss"]
    assert first["final"]["loss"] != other["final"]["loss"]  # another seed draws other batches and weights
    assert first["arm"] == arm and first["seed"] == 0 and first["num_train_pids"] > 0


def test_reid_runs_and_errors(smoke_world: str) -> None:
    from reid_core.chapters.metric_learning.experiment import reid_run, reid_runs

    runs = reid_runs(
        ["adacos", "triplet"], 0, data_root=smoke_world, hparams={"adacos": {"track_history": True}}, **REID_TINY
    )
    assert [r["arm"] for r in runs] == ["adacos", "triplet"]
    assert len(runs[0]["scale_history"]) == 2 and "scale_history" not in runs[1]
    alone = reid_run("triplet", 0, data_root=smoke_world, **REID_TINY)
    assert alone["mAP"] == runs[1]["mAP"]  # a run does not depend on the run before it in its process
    with pytest.raises(ValueError, match="unknown arm"):
        reid_run("center", 0, data_root=smoke_world, **REID_TINY)
    with pytest.raises(ValueError, match="split"):
        reid_run("softmax", 0, data_root=smoke_world, split="train", **REID_TINY)


def test_unseen_classes_run_repeatable() -> None:
    from reid_core.chapters.metric_learning.experiment import unseen_classes_run

    tiny = dict(embedding_dim=8, width=8, epochs=1, max_iters=2)
    first, again = unseen_classes_run("arcface", 0, **tiny), unseen_classes_run("arcface", 0, **tiny)
    assert first == again
    assert unseen_classes_run("arcface", 1, **tiny) != first
    pair = unseen_classes_run("triplet", 0, **tiny)
    assert math.isnan(pair["accuracy"]) and math.isnan(pair["unseen_confidence"])  # no classifier
    assert 0.0 <= pair["mAP"] <= 100.0
    with pytest.raises(ValueError, match="unknown loss"):
        unseen_classes_run("hinge", 0, **tiny)
