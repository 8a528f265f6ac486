"""Tests for reid_core.samplers.graph_sampler and reid_core.samplers.class_distance.

References are written from the paper's description (Liao & Shao, CVPR 2022, Sec. 3 and the
QAConv 2.1 sampler): brute-force nearest classes by Python loops, and the pointer rule
"a class's images are all used before any repeats".
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from reid_core.models.outputs import ReIDOutput
from reid_core.samplers.class_distance import build_class_distance, pick_class_representatives
from reid_core.samplers.graph_sampler import GraphSampler, nearest_classes


def make_pids(counts: list[int], pid_values: list[int] | None = None, seed: int = 0) -> list[int]:
    """Dataset-order pids with counts[c] samples of class c, shuffled (not grouped)."""
    values = pid_values if pid_values is not None else list(range(len(counts)))
    pids = [values[c] for c, n in enumerate(counts) for _ in range(n)]
    rng = np.random.default_rng(seed)
    return [pids[i] for i in rng.permutation(len(pids))]


def brute_force_neighbors(dist: np.ndarray, k: int) -> list[list[int]]:
    """k nearest other classes per class, by plain loops over the rows."""
    out = []
    for c in range(dist.shape[0]):
        candidates = sorted((float(dist[c, j]), j) for j in range(dist.shape[0]) if j != c)
        out.append([j for _, j in candidates[:k]])
    return out


def class_of_index(pids: list[int]) -> np.ndarray:
    """Class index (rank of the pid among sorted distinct pids) of every sample."""
    classes = sorted(set(pids))
    rank = {p: i for i, p in enumerate(classes)}
    return np.array([rank[p] for p in pids])


# ---------------------------------------------------------------- graph and batches


def test_neighbors_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    dist = rng.random((15, 15))
    got = nearest_classes(torch.from_numpy(dist), k=4)
    assert got.tolist() == brute_force_neighbors(dist, 4)


def test_diagonal_is_ignored_even_when_smallest() -> None:
    dist = np.full((4, 4), 5.0)
    np.fill_diagonal(dist, -100.0)  # would win if the diagonal counted
    dist[0, 2] = 1.0
    assert nearest_classes(dist, k=1)[0, 0] == 2


@pytest.mark.parametrize("diagonal", [0.0, 0.5, -np.inf, np.inf, np.nan])
@pytest.mark.parametrize("k", [2, 5])
def test_any_diagonal_value_is_ignored(diagonal: float, k: int) -> None:
    dist = np.random.default_rng(3).random((6, 6))
    np.fill_diagonal(dist, diagonal)
    assert nearest_classes(dist, k=k).tolist() == brute_force_neighbors(dist, k)


def test_batches_are_seed_plus_brute_force_knn() -> None:
    counts = [3, 5, 2, 4, 6, 3, 2, 7, 4, 5, 3, 2]
    pid_values = [10 * c + 7 for c in range(len(counts))][::-1]  # unsorted, non-contiguous pids
    pids = make_pids(counts, pid_values)
    batch_size, k_inst = 8, 2
    sampler = GraphSampler(pids, batch_size=batch_size, num_instances=k_inst, seed=0)
    dist = np.random.default_rng(2).random((12, 12))
    sampler.update_graph(dist)
    expected = brute_force_neighbors(dist, batch_size // k_inst - 1)
    cls = class_of_index(pids)
    batches = sampler.sample_epoch()
    assert batches.shape == (12, batch_size)
    seeds = []
    for row in batches:
        row_classes = cls[row].reshape(-1, k_inst)  # (P, K)
        assert (row_classes == row_classes[:, :1]).all(), "each block of K images is one class"
        seed = int(row_classes[0, 0])
        seeds.append(seed)
        assert row_classes[1:, 0].tolist() == expected[seed]
    assert sorted(seeds) == list(range(12)), "every class seeds exactly one batch per epoch"
    # Classes are ordered by sorted pid: class 0 is the smallest pid.
    assert sampler.classes.tolist() == sorted(pid_values)


def test_iter_covers_every_class_as_seed_each_epoch() -> None:
    counts = [4] * 10
    pids = make_pids(counts)
    sampler = GraphSampler(pids, batch_size=6, num_instances=2, seed=3)
    sampler.update_graph(torch.rand(10, 10, generator=torch.Generator().manual_seed(0)))
    cls = class_of_index(pids)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        flat = list(iter(sampler))
        assert len(flat) == len(sampler) == 10 * 6
        seeds = [int(cls[flat[b * 6]]) for b in range(10)]
        assert sorted(seeds) == list(range(10))


def test_images_cycle_before_repeating() -> None:
    """Per class, the handed-out stream is a sequence of full permutations of its images."""
    counts = [1, 2, 3, 5, 7, 9, 4, 6, 2, 8]  # includes classes with fewer than K images
    pids = make_pids(counts, seed=5)
    k_inst = 3
    sampler = GraphSampler(pids, batch_size=12, num_instances=k_inst, seed=1)
    cls = class_of_index(pids)
    members = {c: sorted(np.flatnonzero(cls == c).tolist()) for c in range(10)}
    streams: dict[int, list[int]] = {c: [] for c in range(10)}
    gen = torch.Generator().manual_seed(4)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        sampler.update_graph(torch.rand(10, 10, generator=gen))  # a new graph every epoch
        batches = sampler.sample_epoch()
        seeds = cls[batches[:, 0]]
        for row in batches[np.argsort(seeds)]:  # back to hand-out order (seed order)
            for block in row.reshape(-1, k_inst):
                streams[int(cls[block[0]])].extend(block.tolist())
    for c, stream in streams.items():
        n = counts[c]
        assert len(stream) >= n
        full = len(stream) // n * n
        for start in range(0, full, n):
            assert sorted(stream[start : start + n]) == members[c], f"class {c}: repeat before a full cycle"
        assert len(set(stream[full:])) == len(stream) - full  # the open cycle has no repeat yet
        usage = Counter(stream)
        assert max(usage.values()) - min(usage[i] for i in members[c]) <= 1


def test_reproducible_with_seed_and_epoch() -> None:
    pids = make_pids([3, 4, 5, 6, 2, 3])
    dist = torch.rand(6, 6, generator=torch.Generator().manual_seed(0))

    def run(epochs: list[int]) -> list[np.ndarray]:
        sampler = GraphSampler(pids, batch_size=4, num_instances=2, seed=7)
        out = []
        for e in epochs:
            sampler.set_epoch(e)
            sampler.update_graph(dist)
            out.append(sampler.sample_epoch())
        return out

    a, b = run([0, 1]), run([0, 1])
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[0] == a[1]).all()


def test_update_graph_validates() -> None:
    sampler = GraphSampler(make_pids([2] * 5), batch_size=4, num_instances=2)
    with pytest.raises(ValueError, match="shape"):
        sampler.update_graph(torch.rand(4, 4))
    bad = torch.rand(5, 5)
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        sampler.update_graph(bad)
    diag_inf = torch.rand(5, 5)
    diag_inf.fill_diagonal_(float("inf"))  # the diagonal is ignored, so this is fine
    sampler.update_graph(diag_inf)
    with pytest.raises(RuntimeError, match="update_graph"):
        GraphSampler(make_pids([2] * 5), batch_size=4, num_instances=2).sample_epoch()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 7, "num_instances": 2}, "multiple"),
        ({"batch_size": 2, "num_instances": 2}, "at least 2 classes"),
        ({"batch_size": 12, "num_instances": 2}, "k < C"),  # k = 5 neighbours, only 5 classes
        ({"batch_size": 4, "num_instances": 0}, "num_instances"),
    ],
)
def test_constructor_validates(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GraphSampler(make_pids([2] * 5), **kwargs)


def test_pids_validated() -> None:
    with pytest.raises(ValueError, match="pids"):
        GraphSampler([], batch_size=4, num_instances=2)
    with pytest.raises(ValueError, match="integers"):
        GraphSampler([0.5, 1.5, 2.5], batch_size=4, num_instances=2)


def test_fallback_is_pk_before_first_graph() -> None:
    random_identity = pytest.importorskip(
        "reid_core.samplers.random_identity", reason="the PK sampler (another task) is not in the tree yet"
    )
    pids = make_pids([4] * 8, seed=2)
    gs = GraphSampler(pids, batch_size=8, num_instances=2, seed=11)
    pk = random_identity.RandomIdentitySampler(pids, 8, 2, seed=11)
    gs.set_epoch(3)
    pk.set_epoch(3)
    assert len(gs) == len(pk)
    assert list(iter(gs)) == list(iter(pk))
    cls = class_of_index(pids)
    flat = list(iter(gs))
    for b in range(len(flat) // 8):
        block_classes = Counter(cls[flat[b * 8 : (b + 1) * 8]].tolist())
        assert len(block_classes) == 4 and set(block_classes.values()) == {2}
    gs.update_graph(torch.rand(8, 8))
    assert len(gs) == 8 * 8  # graph mode: C batches


# ---------------------------------------------------------------- class distance


class MeanColorModel(nn.Module):
    """A toy re-ID model: feat = per-channel mean of the image (times a learnable scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm1d(3)  # mode-sensitive, to see eval mode is used

    def forward(self, x: Tensor) -> ReIDOutput:
        fmap = x * self.scale  # (B, 3, H, W)
        return ReIDOutput(feat=self.bn(fmap.mean(dim=(2, 3))), feature_map=fmap)


def fake_items(num_classes: int, per_class: int) -> tuple[list[tuple[str, int, int]], dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(0)
    items, images = [], {}
    for c in range(num_classes):
        for i in range(per_class):
            name = f"img_{c}_{i}.jpg"
            images[name] = torch.rand(3, 4, 2, generator=gen)
            items.append((name, 100 - 3 * c, i % 2))  # pids descending in dataset order
    return items, images


def test_pick_class_representatives_one_per_class_seeded() -> None:
    items, _ = fake_items(6, 4)
    pids, index = pick_class_representatives(items, seed=0)
    assert pids.tolist() == sorted({p for _, p, _ in items})
    assert [items[i][1] for i in index] == pids.tolist()
    again = pick_class_representatives(items, seed=0)[1]
    assert (again == index).all()
    draws = {tuple(pick_class_representatives(items, seed=s)[1]) for s in range(10)}
    assert len(draws) > 1, "the representative must be random, not always the first image"


def test_build_class_distance_euclidean_and_callable() -> None:
    items, images = fake_items(7, 3)
    model = MeanColorModel()
    model.bn.running_mean.fill_(0.2)  # eval-mode BN is then a known affine map
    model.train()
    _, index = pick_class_representatives(items, seed=5)
    reps = torch.stack([images[items[i][0]] for i in index])  # (C, 3, 4, 2)
    with torch.no_grad():
        feat = (reps.mean(dim=(2, 3)) - 0.2) / torch.sqrt(torch.tensor(1.0 + 1e-5))  # eval BN
    expected = torch.tensor([[float(torch.linalg.vector_norm(feat[i] - feat[j])) for j in range(7)] for i in range(7)])
    dist = build_class_distance(model, items, transform=lambda t: t, loader=images.__getitem__, seed=5, batch_size=3)
    assert dist.shape == (7, 7)
    off = ~torch.eye(7, dtype=torch.bool)
    torch.testing.assert_close(dist[off], expected[off], atol=1e-5, rtol=1e-5)
    # The diagonal (ignored by the sampler) carries the rounding noise of |x|^2 + |y|^2 - 2xy.
    assert dist.diagonal().abs().max() < 1e-3
    assert model.training, "train mode must be restored"

    def dot_score(p: Tensor, g: Tensor) -> Tensor:
        return p.flatten(1) @ g.flatten(1).T  # (P, G) scores on the feature maps

    dist2 = build_class_distance(
        model, items, lambda t: t, matcher=dot_score, loader=images.__getitem__, seed=5, batch_size=2, chunk_size=3
    )
    flat = reps.flatten(1)
    expected2 = torch.tensor([[-float(flat[i] @ flat[j]) for j in range(7)] for i in range(7)])
    torch.testing.assert_close(dist2, expected2, atol=1e-5, rtol=1e-5)


def test_build_class_distance_with_qaconv_feeds_the_sampler() -> None:
    from reid_core.models.qaconv import QAConv

    items, images = fake_items(6, 2)
    model = MeanColorModel()
    matcher = QAConv(num_features=3, height=4, width=2)
    matcher.train()
    dist = build_class_distance(model, items, lambda t: t, matcher=matcher, loader=images.__getitem__, seed=1)
    _, index = pick_class_representatives(items, seed=1)
    reps = torch.stack([images[items[i][0]] for i in index])
    with torch.no_grad():
        expected = -matcher.eval()(reps, reps)
    torch.testing.assert_close(dist, expected)
    sampler = GraphSampler([p for _, p, _ in items], batch_size=4, num_instances=2)
    sampler.update_graph(dist)
    assert sampler.neighbors is not None and sampler.neighbors.shape == (6, 1)


def test_build_class_distance_validates() -> None:
    items, images = fake_items(3, 2)
    with pytest.raises(ValueError, match="matcher"):
        build_class_distance(MeanColorModel(), items, lambda t: t, matcher="cosine", loader=images.__getitem__)
    with pytest.raises(ValueError, match="dataset_items"):
        build_class_distance(MeanColorModel(), [], lambda t: t, loader=images.__getitem__)
    with pytest.raises(TypeError, match="transform"):
        build_class_distance(MeanColorModel(), items, lambda t: t.numpy(), loader=images.__getitem__)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_class_distance_and_graph_on_cuda_match_cpu() -> None:
    from reid_core.models.qaconv import QAConv

    items, images = fake_items(9, 2)
    model, matcher = MeanColorModel(), QAConv(num_features=3, height=4, width=2)
    cpu = build_class_distance(model, items, lambda t: t, matcher=matcher, loader=images.__getitem__, seed=2)
    gpu = build_class_distance(
        model.cuda(), items, lambda t: t, matcher=matcher.cuda(), loader=images.__getitem__, seed=2
    )
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=2e-2, atol=2e-2)  # fp16 autocast on CUDA
    sampler = GraphSampler([p for _, p, _ in items], batch_size=6, num_instances=2)
    dist = torch.rand(9, 9, device="cuda")
    sampler.update_graph(dist)
    assert sampler.neighbors.tolist() == brute_force_neighbors(dist.cpu().numpy(), 2)
