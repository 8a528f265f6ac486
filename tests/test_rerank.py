"""Tests for k-reciprocal re-ranking (Zhong et al., CVPR 2017).

The reference below is written from the paper's steps (Zhong et al. 2017, ``zhong2017reranking``) with the common
python implementation's conventions, one image at a time with dense matrices and plain
Python sets, and the Jaccard distance in the paper's form 1 - sum(min) / sum(max).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_core.evaluation.distance import pairwise_distance
from reid_core.evaluation.rerank.from_features import FeatureDistances, feature_neighbors
from reid_core.evaluation.rerank.k_reciprocal import RerankedTopK, re_ranking, re_ranking_from_features
from reid_core.evaluation.rerank.neighbors import smallest_k_stable
from reid_core.evaluation.rerank.sparse import k_reciprocal_expansion

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ----------------------------------------------------------------------------- reference
def reference_original_distance(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> np.ndarray:
    """Stacked matrix A, squared in float32, column i divided by its max, transposed: (N, N)."""
    stacked = np.block([[q_q, q_g], [q_g.T, g_g]])
    squared = (stacked * stacked).astype(np.float32)
    return (squared / squared.max(axis=0)).T


def reference_reciprocal_set(rank: np.ndarray, i: int, k: int) -> list[int]:
    """R(i, k): members g of i's top-(k+1) list whose own top-(k+1) list holds i."""
    return [int(g) for g in rank[i, : k + 1] if i in rank[g, : k + 1]]


def reference_expanded_sets(rank: np.ndarray, k1: int) -> list[set[int]]:
    """R*(p) for every p: R(p, k1) plus each R(c, round(k1/2)) sharing > 2/3 of it."""
    half = int(np.around(k1 / 2.0))
    sets = []
    for p in range(rank.shape[0]):
        base = reference_reciprocal_set(rank, p, k1)
        expanded = set(base)
        for c in base:
            cand = reference_reciprocal_set(rank, c, half)
            if len(set(cand) & set(base)) > 2.0 / 3.0 * len(cand):
                expanded |= set(cand)
        sets.append(expanded)
    return sets


def reference_re_ranking(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int, lambda_value: float
) -> np.ndarray:
    """Slow, dense k-reciprocal re-ranking: (Q, G) float32."""
    num_query, total = q_g.shape[0], q_g.shape[0] + q_g.shape[1]
    dist = reference_original_distance(q_g, q_q, g_g)  # (N, N)
    rank = np.argsort(dist, axis=1, kind="stable")  # (N, N)
    encoding = np.zeros((total, total), dtype=np.float32)
    for p, members in enumerate(reference_expanded_sets(rank, k1)):
        idx = np.array(sorted(members), dtype=np.int64)
        weight = np.exp(-dist[p, idx])
        encoding[p, idx] = weight / weight.sum()
    if k2 > 1:
        encoding = np.stack([encoding[rank[p, :k2]].mean(axis=0) for p in range(total)])
    vq, vg = encoding[:num_query, None, :], encoding[None, num_query:, :]  # (Q, 1, N), (1, G, N)
    jaccard = 1.0 - np.minimum(vq, vg).sum(-1) / np.maximum(vq, vg).sum(-1)  # (Q, G)
    return ((1 - lambda_value) * jaccard + lambda_value * dist[:num_query, num_query:]).astype(np.float32)


# ----------------------------------------------------------------------------- data
def clustered_features(
    num_query: int, num_gallery: int, dim: int, seed: int, num_ids: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters (one per identity) with continuous coordinates: no tied distances."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim)) * 2.0
    ids = rng.integers(0, num_ids, size=num_query + num_gallery)
    feats = centres[ids] + rng.normal(size=(num_query + num_gallery, dim))
    return feats[:num_query], feats[num_query:]


def distance_blocks(qf: np.ndarray, gf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Euclidean (q_g, q_q, g_g) in float64, computed directly from differences."""

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    return dist(qf, gf), dist(qf, qf), dist(gf, gf)


# ----------------------------------------------------------------------------- tests
def test_hand_worked_expanded_set() -> None:
    """k1 = 6 (half = 3): R(0, 6) = {0, 1, 2, 3}; R(1, 3) = {1, 2, 3, 4} shares 3 > 8/3 with it, so 4 joins."""
    rank = np.array(
        [
            [0, 1, 2, 3, 5, 6, 7],
            [1, 2, 3, 4, 0, 5, 6],
            [2, 1, 3, 4, 0, 5, 6],
            [3, 1, 2, 4, 0, 5, 6],
            [4, 1, 2, 3, 5, 6, 7],
            [5, 6, 7, 8, 4, 3, 2],
            [6, 5, 7, 8, 4, 3, 2],
            [7, 5, 6, 8, 4, 3, 2],
            [8, 5, 6, 7, 4, 3, 2],
        ]
    )
    assert reference_reciprocal_set(rank, 0, 6) == [0, 1, 2, 3]
    assert reference_reciprocal_set(rank, 1, 3) == [1, 2, 3, 4]
    expected = reference_expanded_sets(rank, 6)
    assert expected[0] == {0, 1, 2, 3, 4}
    pattern = k_reciprocal_expansion(torch.from_numpy(rank), 6, chunk_size=4)
    for p in range(rank.shape[0]):
        got = sorted(pattern.col[pattern.crow[p] : pattern.crow[p + 1]].tolist())
        assert got == sorted(expected[p]), p


@pytest.mark.parametrize(
    "num_query,num_gallery,k1,k2,lambda_value",
    [
        (6, 30, 3, 1, 0.0),
        (6, 30, 3, 3, 0.3),
        (17, 90, 20, 6, 0.3),
        (17, 90, 20, 1, 0.3),
        (25, 140, 6, 6, 0.0),
        (25, 140, 20, 6, 0.7),
    ],
)
def test_matches_reference(num_query: int, num_gallery: int, k1: int, k2: int, lambda_value: float) -> None:
    qf, gf = clustered_features(num_query, num_gallery, dim=6, seed=num_query + k1 + k2)
    q_g, q_q, g_g = distance_blocks(qf, gf)
    expected = reference_re_ranking(q_g, q_q, g_g, k1, k2, lambda_value)
    got = re_ranking(q_g, q_q, g_g, k1, k2, lambda_value, chunk_size=7, progress=False)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (num_query, num_gallery)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_matches_reference_with_tied_distances() -> None:
    """Integer distances tie a lot; the stable order (smaller index first) must be kept."""
    rng = np.random.default_rng(3)
    pts = rng.integers(0, 6, size=(60, 2)).astype(np.float64)
    full = np.abs(pts[:, None, :] - pts[None, :, :]).sum(-1)  # (60, 60) city-block, many ties
    q_g, q_q, g_g = full[:10, 10:], full[:10, :10], full[10:, 10:]
    expected = reference_re_ranking(q_g, q_q, g_g, 8, 4, 0.3)
    got = re_ranking(q_g, q_q, g_g, 8, 4, 0.3, chunk_size=16, progress=False)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_lambda_one_is_the_normalised_squared_distance() -> None:
    """With lambda = 1 only d~(p, g) = d(p, g)^2 / max over column p of the stacked matrix remains."""
    qf, gf = clustered_features(5, 20, dim=3, seed=1)
    q_g, q_q, g_g = distance_blocks(qf, gf)
    column_max = np.maximum((q_q**2).max(axis=0), (q_g**2).max(axis=1))  # (Q,) max of column p
    got = re_ranking(q_g, q_q, g_g, k1=4, k2=2, lambda_value=1.0, progress=False)
    np.testing.assert_allclose(got, q_g**2 / column_max[:, None], rtol=1e-6)


def test_separated_clusters_have_jaccard_distance_one() -> None:
    """Encodings of two far-apart clusters share no support: d_J = 1 across; every query shares some within."""
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(size=(12, 2)), rng.normal(size=(12, 2)) + 100.0])
    order = rng.permutation(24)
    pts, cluster = pts[order], (order >= 12)
    q, g = pts[:4], pts[4:]
    q_g, q_q, g_g = distance_blocks(q, g)
    got = re_ranking(q_g, q_q, g_g, k1=5, k2=3, lambda_value=0.0, progress=False)
    across = cluster[:4, None] != cluster[None, 4:]
    np.testing.assert_array_equal(got[across], 1.0)
    assert (np.where(across, 2.0, got).min(axis=1) < 1.0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_numpy_and_torch_inputs_agree(device: str) -> None:
    qf, gf = clustered_features(12, 70, dim=5, seed=7)
    blocks = distance_blocks(qf, gf)
    from_numpy = re_ranking(*blocks, progress=False)
    tensors = [torch.from_numpy(b).float().to(device) for b in blocks]
    from_torch = re_ranking(*tensors, chunk_size=33, progress=False)
    assert isinstance(from_torch, torch.Tensor) and from_torch.device.type == device
    assert from_torch.dtype == torch.float32
    np.testing.assert_allclose(from_torch.cpu().numpy(), from_numpy, atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "metric,chunk_size", [("euclidean", 29), ("euclidean", 500), ("cosine", 32), ("sqeuclidean", 40)]
)
def test_from_features_matches_dense(device: str, metric: str, chunk_size: int) -> None:
    qf, gf = clustered_features(23, 120, dim=16, seed=11)
    q = torch.from_numpy(qf).to(device)
    g = torch.from_numpy(gf).to(device)
    dense = re_ranking(
        pairwise_distance(q, g, metric),
        pairwise_distance(q, metric=metric),
        pairwise_distance(g, metric=metric),
        k1=20,
        k2=6,
        lambda_value=0.3,
        progress=False,
    )
    sparse = re_ranking_from_features(q, g, 20, 6, 0.3, metric=metric, chunk_size=chunk_size, progress=False)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=0)
    top = re_ranking_from_features(q, g, 20, 6, 0.3, metric=metric, chunk_size=chunk_size, topk=10, progress=False)
    assert isinstance(top, RerankedTopK) and tuple(top.indices.shape) == (23, 10)
    torch.testing.assert_close(top.distances, dense.gather(1, top.indices), atol=1e-5, rtol=0)
    torch.testing.assert_close(top.distances, dense.topk(10, dim=1, largest=False).values, atol=1e-5, rtol=0)


def test_from_features_numpy_in_numpy_out_and_float32() -> None:
    qf, gf = clustered_features(9, 60, dim=8, seed=5)
    qf32, gf32 = qf.astype(np.float32), gf.astype(np.float32)
    got = re_ranking_from_features(qf32, gf32, k1=6, k2=3, chunk_size=16, progress=False)
    assert isinstance(got, np.ndarray) and got.shape == (9, 60)
    expected = reference_re_ranking(*distance_blocks(qf, gf), 6, 3, 0.3)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)  # float32 features: looser
    top = re_ranking_from_features(qf32, gf32, k1=6, k2=3, topk=5, progress=False)
    assert isinstance(top.indices, np.ndarray) and top.indices.shape == (9, 5)


def test_smallest_k_stable_breaks_ties_by_index() -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.randint(0, 4, (50, 40), generator=gen).float()  # ties everywhere, also at the k-th place
    divisor = torch.rand(50, generator=gen) + 0.5
    for k in (1, 5, 13, 40):
        expected = torch.argsort(values, dim=1, stable=True)[:, :k]
        assert torch.equal(smallest_k_stable(values, k), expected)
        expected = torch.argsort(values / divisor[:, None], dim=1, stable=True)[:, :k]
        assert torch.equal(smallest_k_stable(values, k, divisor), expected)


@pytest.mark.parametrize("integer_features", [False, True])
def test_feature_neighbors_match_a_full_sort(integer_features: bool) -> None:
    """Rank lists from symmetric blocks equal a stable sort of the whole normalised matrix.

    Small integer features make every distance exact, so ties are real and the rows whose
    K-th neighbour ties with a value beyond the candidates take the full-sort path.
    """
    if integer_features:
        feats = torch.randint(0, 3, (100, 3), generator=torch.Generator().manual_seed(0)).float()
    else:
        qf, gf = clustered_features(10, 90, dim=4, seed=2)
        feats = torch.from_numpy(np.concatenate([qf, gf]))
    lists = feature_neighbors(FeatureDistances(feats, "euclidean"), 9, chunk_size=17)
    full = pairwise_distance(feats) ** 2  # (N, N)
    scale = full.max(dim=0).values
    expected = torch.argsort((full / scale).T.float(), dim=1, stable=True)[:, :9]
    assert torch.equal(lists.rank, expected)
    torch.testing.assert_close(lists.scale, scale.float(), rtol=1e-6, atol=0)


def test_memory_error_names_the_need_and_the_way_out() -> None:
    qf, gf = clustered_features(5, 30, dim=4, seed=0)
    with pytest.raises(MemoryError, match=r"GiB.*topk="):
        re_ranking_from_features(qf, gf, k1=4, max_memory=1 << 20, progress=False)
    with pytest.raises(MemoryError, match="re_ranking_from_features"):
        re_ranking(*distance_blocks(qf, gf), k1=4, max_memory=1 << 20, progress=False)


def test_bad_inputs_raise_clear_errors() -> None:
    qf, gf = clustered_features(5, 30, dim=4, seed=0)
    q_g, q_q, g_g = distance_blocks(qf, gf)
    with pytest.raises(ValueError, match="g_g_dist"):
        re_ranking(q_g, q_q, g_g[:-1, :-1], progress=False)
    with pytest.raises(TypeError, match="all be numpy"):
        re_ranking(torch.from_numpy(q_g), q_q, g_g, progress=False)
    with pytest.raises(ValueError, match="k1"):
        re_ranking(q_g, q_q, g_g, k1=40, progress=False)
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking(q_g, q_q, g_g, lambda_value=1.5, progress=False)
    bad = g_g.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        re_ranking(q_g, q_q, bad, progress=False)
    with pytest.raises(ValueError, match="same D"):
        re_ranking_from_features(qf, gf[:, :2], progress=False)
    with pytest.raises(ValueError, match="metric"):
        re_ranking_from_features(qf, gf, k1=4, metric="manhattan", progress=False)
    with pytest.raises(ValueError, match="topk"):
        re_ranking_from_features(qf, gf, k1=4, topk=31, progress=False)
