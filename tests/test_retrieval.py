"""reid_core.evaluation.retrieval: faiss top-k search against torch brute force, approximate indexes'
recall, and top-k evaluation against evaluate_rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_core.evaluation.distance import pairwise_distance
from reid_core.evaluation.rank import evaluate_rank
from reid_core.evaluation.retrieval import build_index, evaluate_topk, recall_at_k, search

pytest.importorskip("faiss")


def clustered_features(
    num: int, dim: int = 16, num_clusters: int = 20, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters (easy data for approximate search) and each point's cluster."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_clusters, dim, generator=gen) * 4
    labels = torch.randint(0, num_clusters, (num,), generator=gen)
    return centres[labels] + torch.randn(num, dim, generator=gen), labels


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_flat_search_equals_brute_force(metric: str) -> None:
    gen = torch.Generator().manual_seed(1)
    gallery, queries = torch.randn(400, 12, generator=gen), torch.randn(30, 12, generator=gen)
    dist, idx = search(build_index(gallery, "flat", metric), queries, k=15)
    ref_dist, ref_idx = torch.topk(
        pairwise_distance(queries.double(), gallery.double(), metric), 15, dim=1, largest=False
    )
    assert dist.dtype == torch.float32 and idx.dtype == torch.int64
    torch.testing.assert_close(idx, ref_idx)
    torch.testing.assert_close(dist.double(), ref_dist, atol=1e-4, rtol=1e-4)  # not squared


def test_numpy_features_are_accepted() -> None:
    gallery, _ = clustered_features(200)
    dist_t, idx_t = search(build_index(gallery), gallery[:10], k=5)
    dist_n, idx_n = search(build_index(gallery.numpy()), gallery[:10].numpy(), k=5)
    torch.testing.assert_close(idx_t, idx_n)
    assert torch.all(idx_t[:, 0] == torch.arange(10))  # each point is its own nearest neighbour
    torch.testing.assert_close(dist_t, dist_n)


@pytest.mark.parametrize("kind,params", [("ivf", dict(nlist=20, nprobe=4)), ("hnsw", dict(hnsw_m=16))])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_approximate_indexes_recall_easy_data(kind: str, params: dict, metric: str) -> None:
    gallery, _ = clustered_features(3000, seed=2)
    queries, _ = clustered_features(100, seed=2)
    _, exact = search(build_index(gallery, "flat", metric), queries, k=10)
    _, approx = search(build_index(gallery, kind, metric, **params), queries, k=10)
    assert recall_at_k(approx, exact, 1) >= 0.95
    assert recall_at_k(approx, exact, 10) >= 0.9


def test_recall_at_k_by_hand() -> None:
    approx = torch.tensor([[1, 2, 3], [4, 5, -1]])
    exact = torch.tensor([[3, 2, 1], [4, 7, 8]])
    # k=1: query 0 finds 1, needs 3 -> miss; query 1 finds 4 -> hit.  (0 + 1) / 2.
    assert recall_at_k(approx, exact, 1) == pytest.approx(0.5)
    # k=3: query 0 has all 3; query 1 has {4} of {4, 7, 8} (-1 is a miss).  (3 + 1) / 6.
    assert recall_at_k(approx, exact, 3) == pytest.approx(4 / 6)


def random_ids(rng: np.random.Generator, num_q: int, num_g: int) -> tuple[np.ndarray, ...]:
    g_pids = rng.integers(-1, 8, num_g)  # -1 junk, 0 distractor
    q_pids = rng.integers(1, 10, num_q)  # 8, 9: no match in the gallery
    return q_pids, g_pids, rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)


@pytest.mark.parametrize("seed", range(3))
def test_topk_with_k_equal_gallery_matches_evaluate_rank(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_q, num_g = 25, 70
    q_pids, g_pids, q_camids, g_camids = random_ids(rng, num_q, num_g)
    dist = rng.integers(0, 6, (num_q, num_g)).astype(np.float64)  # many ties
    cmc_ref, map_ref = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank=num_g)
    # Hand the full ranking over in a shuffled column order: evaluate_topk must restore the
    # (distance, index) order itself.
    perm = np.stack([rng.permutation(num_g) for _ in range(num_q)])  # (Q, G)
    cmc, mAP = evaluate_topk(
        np.take_along_axis(dist, perm, 1), perm, q_pids, g_pids, q_camids, g_camids, max_rank=num_g
    )
    np.testing.assert_allclose(cmc, cmc_ref, atol=1e-12)
    assert mAP == pytest.approx(map_ref, abs=1e-12)


def test_topk_cmc_matches_evaluate_rank_up_to_k() -> None:
    rng = np.random.default_rng(7)
    gallery, g_labels = clustered_features(600, seed=3)
    queries, q_labels = clustered_features(40, seed=4)
    g_pids, q_pids = g_labels.numpy() + 1, q_labels.numpy() + 1
    g_camids, q_camids = rng.integers(0, 4, 600), rng.integers(0, 4, 40)
    k = 30
    dist, idx = search(build_index(gallery), queries, k=k)
    # Items the Market rule drops from each list; CMC is exact up to k minus the most dropped.
    dropped = (g_pids[idx.numpy()] == q_pids[:, None]) & (g_camids[idx.numpy()] == q_camids[:, None])
    max_rank = k - int(dropped.sum(1).max())
    assert max_rank >= 10
    cmc_ref, _ = evaluate_rank(
        pairwise_distance(queries, gallery), q_pids, g_pids, q_camids, g_camids, max_rank=max_rank
    )
    cmc, _ = evaluate_topk(dist, idx, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    np.testing.assert_allclose(cmc, cmc_ref, atol=1e-12)


def test_map_at_k_by_hand() -> None:
    # One query (pid 1, camera 0); gallery pids [1, 2, 1, 3, 1, 1], cameras all 1 except g5
    # (camera 0: same id and camera, dropped) -> 3 valid matches: g0, g2, g4.
    g_pids, g_camids = np.array([1, 2, 1, 3, 1, 1]), np.array([1, 1, 1, 1, 1, 0])
    idx = np.array([[0, 5, 1, 2]])  # top-4: g0 (+), g5 (dropped), g1 (-), g2 (+)
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    # Filtered list [+, -, +]: precisions 1/1 and 2/3; AP@4 = (1 + 2/3) / min(3, 4) = 5/9.
    cmc, mAP = evaluate_topk(dist, idx, [1], g_pids, [0], g_camids, max_rank=3)
    assert mAP == pytest.approx(5 / 9)
    np.testing.assert_allclose(cmc, [1.0, 1.0, 1.0])
    # With k = 2 the list is [g0, g5] -> [+]: AP@2 = 1 / min(3, 2) = 0.5.
    _, map_k2 = evaluate_topk(dist[:, :2], idx[:, :2], [1], g_pids, [0], g_camids, max_rank=2)
    assert map_k2 == pytest.approx(0.5)
    # The list [g5, g1] -> [-] has no match and only 1 valid item: CMC@2 is unknown.
    with pytest.warns(UserWarning, match="fewer than"):
        cmc, _ = evaluate_topk(dist[:, :2], np.array([[5, 1]]), [1], g_pids, [0], g_camids, max_rank=2)
    np.testing.assert_allclose(cmc, [0.0, 0.0])


def test_unfilled_slots_warn_and_are_infinite() -> None:
    gallery, _ = clustered_features(60, num_clusters=6, seed=5)
    index = build_index(gallery, "ivf", nlist=30, nprobe=1, train_size=60)
    with pytest.warns(UserWarning, match="not filled"):
        dist, idx = search(index, gallery[:5], k=20)
    assert torch.all(torch.isinf(dist[idx < 0]))
    assert bool((idx < 0).any())


def test_errors_name_the_problem() -> None:
    gallery, _ = clustered_features(50)
    with pytest.raises(ValueError, match="kind"):
        build_index(gallery, "lsh")
    with pytest.raises(ValueError, match="nlist"):
        build_index(gallery, "hnsw", nlist=4)
    with pytest.raises(ValueError, match="k must be"):
        search(build_index(gallery), gallery[:2], k=51)
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_topk(np.zeros((1, 3)), np.zeros((1, 3), int), [1], np.ones(50, int), [0], np.ones(50, int), max_rank=4)
