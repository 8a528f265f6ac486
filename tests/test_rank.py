"""evaluate_rank (CMC + mAP, Market-1501 rule and CUHK03 single-gallery-shot) against
brute-force per-query loops written from the protocol (Zheng et al. 2015, Zhong et al. 2017; the book page ``book/datasets.md``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from reid_core.evaluation import distance, rank
from reid_core.evaluation.distance import compute_distance_matrix
from reid_core.evaluation.rank import evaluate_features, evaluate_rank, evaluate_rank_detailed


def brute_force_market(dist, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Per query: stable argsort, drop junk and same-id same-camera, first match, AP.

    Returns (cmc, mAP, ap per query with NaN for skipped queries).
    """
    first_ranks, aps = [], []
    for q in range(dist.shape[0]):
        order = np.argsort(dist[q], kind="stable")  # ties: lower gallery index first
        pids, cams = g_pids[order], g_camids[order]
        keep = (pids != -1) & ~((pids == q_pids[q]) & (cams == q_camids[q]))
        match = pids[keep] == q_pids[q]
        if not match.any():
            aps.append(np.nan)
            continue
        hits = np.cumsum(match)
        positions = np.arange(1, match.size + 1)
        aps.append(float(np.mean(hits[match] / positions[match])))  # mean precision at each match
        first_ranks.append(int(np.argmax(match)) + 1)
    first_ranks = np.array(first_ranks)
    cmc = np.array([np.mean(first_ranks <= k) for k in range(1, max_rank + 1)])
    return cmc, float(np.nanmean(aps)), np.array(aps)


def random_problem(rng, num_q, num_g, num_ids=6, num_cams=3, integer_distances=True):
    """Random ids with distractors (0) and junk (-1); integer distances give many ties."""
    g_pids = rng.integers(-1, num_ids, num_g)  # -1 junk, 0 distractor, 1.. identities
    q_pids = rng.integers(1, num_ids + 2, num_q)  # some ids absent from the gallery
    q_camids, g_camids = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    if integer_distances:
        dist = rng.integers(0, 5, (num_q, num_g)).astype(np.float64)
    else:
        dist = rng.random((num_q, num_g))
    return dist, q_pids, g_pids, q_camids, g_camids


@pytest.mark.parametrize("integer_distances", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(seed: int, integer_distances: bool) -> None:
    rng = np.random.default_rng(seed)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 30, 80, integer_distances=integer_distances)
    cmc_ref, map_ref, ap_ref = brute_force_market(dist, q_pids, g_pids, q_camids, g_camids, 20)
    assert np.isnan(ap_ref).any(), "the random problem should contain queries with no valid match"

    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20, chunk_size=7)
    np.testing.assert_allclose(result.cmc, cmc_ref, atol=1e-12)
    assert result.mAP == pytest.approx(map_ref, abs=1e-12)
    np.testing.assert_array_equal(result.valid_query, ~np.isnan(ap_ref))
    np.testing.assert_allclose(result.average_precision, ap_ref, atol=1e-12)  # NaN where skipped
    assert result.num_valid_queries == int((~np.isnan(ap_ref)).sum())

    cmc, mAP = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    np.testing.assert_allclose(cmc, cmc_ref, atol=1e-12)
    assert mAP == pytest.approx(map_ref, abs=1e-12)


def test_hand_worked_example() -> None:
    # Query 0: pid 1, camera 0.  Query 1: pid 2, camera 1.
    # Gallery  g0      g1      g2      g3          g4         g5
    #   pid    1       2       1       0 (distr.)  -1 (junk)  2
    #   cam    0       0       1       1           2          2
    g_pids = np.array([1, 2, 1, 0, -1, 2])
    g_camids = np.array([0, 0, 1, 1, 2, 2])
    q_pids, q_camids = np.array([1, 2]), np.array([0, 1])
    dist = np.array(
        [
            [0.1, 0.2, 0.5, 0.3, 0.05, 0.4],
            [0.3, 0.1, 0.2, 0.2, 0.9, 0.2],
        ]
    )
    # q0 sorted: g4 (junk, dropped), g0 (same id + camera, dropped), g1 -, g3 - (distractor),
    #    g5 -, g2 +  -> filtered list [-, -, -, +]: first match at rank 4, AP = 1/4.
    # q1 sorted (ties at 0.2 broken by gallery index: g2, g3, g5): g1 +, g2 -, g3 -, g5 +,
    #    g0 -, g4 (junk, dropped) -> [+, -, -, +, -]: first match at rank 1,
    #    AP = (1/1 + 2/4) / 2 = 0.75.
    # CMC@1..5 = [1/2, 1/2, 1/2, 2/2, 2/2]; mAP = (0.25 + 0.75) / 2 = 0.5.
    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=5)
    np.testing.assert_allclose(result.cmc, [0.5, 0.5, 0.5, 1.0, 1.0])
    assert result.mAP == pytest.approx(0.5)
    np.testing.assert_allclose(result.average_precision, [0.25, 0.75])
    np.testing.assert_allclose(result.first_match_rank, [4.0, 1.0])


def test_numpy_and_torch_inputs_agree() -> None:
    rng = np.random.default_rng(5)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 25, 60, integer_distances=False)
    dist32 = dist.astype(np.float32)
    from_numpy = evaluate_rank_detailed(dist32, q_pids, g_pids, q_camids, g_camids, max_rank=10)
    from_torch = evaluate_rank_detailed(
        torch.from_numpy(dist32), torch.from_numpy(q_pids), torch.from_numpy(g_pids),
        torch.from_numpy(q_camids).int(), torch.from_numpy(g_camids).short(), max_rank=10,
    )
    np.testing.assert_array_equal(from_numpy.cmc, from_torch.cmc)
    np.testing.assert_array_equal(from_numpy.average_precision, from_torch.average_precision)
    # float32 and float64 inputs order continuous random values the same way.
    from_double = evaluate_rank_detailed(dist32.astype(np.float64), q_pids, g_pids, q_camids, g_camids, max_rank=10)
    np.testing.assert_allclose(from_double.average_precision, from_numpy.average_precision, atol=1e-12)


def test_ties_between_float64_values_that_round_to_the_same_float32() -> None:
    # 1 + 1e-12 and 1 are one float32 value; the float64 order must still decide.
    g_pids, g_camids = np.array([1, 2, 1]), np.array([1, 1, 1])
    dist = np.array([[1.0 + 2e-12, 1.0 + 1e-12, 1.0]])
    # Sorted: g2 (+), g1 (-), g0 (+) -> AP = (1 + 2/3) / 2.
    result = evaluate_rank_detailed(dist, np.array([1]), g_pids, np.array([0]), g_camids, max_rank=3)
    assert result.average_precision[0] == pytest.approx((1 + 2 / 3) / 2)
    dist = np.array([[1.0 + 1e-12, 1.0 + 2e-12, 1.0 + 1e-12]])  # g0 and g2 tie: index order
    # Sorted: g0 (+), g2 (+), g1 (-) -> AP = 1.
    result = evaluate_rank_detailed(dist, np.array([1]), g_pids, np.array([0]), g_camids, max_rank=3)
    assert result.average_precision[0] == pytest.approx(1.0)


def test_infinite_and_negative_distances() -> None:
    rng = np.random.default_rng(11)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 20, 50)
    dist = dist - 2.0  # negative values (e.g. negated similarities)
    dist[rng.random(dist.shape) < 0.2] = np.inf
    dist[rng.random(dist.shape) < 0.1] = -np.inf
    cmc_ref, map_ref, ap_ref = brute_force_market(dist, q_pids, g_pids, q_camids, g_camids, 10)
    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=10)
    np.testing.assert_allclose(result.cmc, cmc_ref, atol=1e-12)
    np.testing.assert_allclose(result.average_precision, ap_ref, atol=1e-12)


def test_chunked_callable_equals_full_matrix() -> None:
    rng = np.random.default_rng(3)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 23, 70)
    full = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=15)
    block_rows: list[int] = []

    def dist_fn(start: int, end: int) -> np.ndarray:
        block_rows.append(end - start)
        return dist[start:end]

    for chunk_size in (1, 4, 23, 100):
        block_rows.clear()
        chunked = evaluate_rank_detailed(dist_fn, q_pids, g_pids, q_camids, g_camids, max_rank=15, chunk_size=chunk_size)
        assert max(block_rows) <= chunk_size
        np.testing.assert_array_equal(chunked.cmc, full.cmc)
        np.testing.assert_array_equal(chunked.average_precision, full.average_precision)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_evaluate_features_equals_matrix(metric: str) -> None:
    gen = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(40, 8, generator=gen), torch.randn(90, 8, generator=gen)
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(1, 8, 40), rng.integers(0, 8, 90)
    q_camids, g_camids = rng.integers(0, 3, 40), rng.integers(0, 3, 90)
    full = evaluate_rank(compute_distance_matrix(qf, gf, metric), q_pids, g_pids, q_camids, g_camids, max_rank=10)
    chunked = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric=metric, max_rank=10, chunk_size=9)
    np.testing.assert_allclose(chunked[0], full[0])
    assert chunked[1] == pytest.approx(full[1], abs=1e-12)


def test_max_rank_beyond_gallery_stays_flat() -> None:
    dist = np.array([[0.1, 0.2, 0.3]])
    cmc, mAP = evaluate_rank(dist, [1], [2, 3, 1], [0], [1, 1, 1], max_rank=6)
    np.testing.assert_allclose(cmc, [0, 0, 1, 1, 1, 1])  # the match is third
    assert mAP == pytest.approx(1 / 3)


def test_errors_name_the_problem() -> None:
    dist = np.zeros((2, 3))
    ids = dict(q_pids=[1, 2], g_pids=[1, 2, 3], q_camids=[0, 0], g_camids=[1, 1, 1])
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_rank(dist, [5, 6], [1, 2, 3], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="distmat must have shape"):
        evaluate_rank(np.zeros((3, 3)), **ids)
    with pytest.raises(ValueError, match="g_camids"):
        evaluate_rank(dist, [1, 2], [1, 2, 3], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="q_pids must hold integers"):
        evaluate_rank(dist, [1.0, 2.0], [1, 2, 3], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.array([[0.1, np.nan, 0.2], [0.1, 0.2, 0.3]]), **ids)
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(dist, **ids, max_rank=0)
    with pytest.raises(ValueError, match="shape"):
        evaluate_rank(lambda s, e: np.zeros((e - s, 4)), **ids)


def test_memory_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distance, "available_memory_bytes", lambda device="cpu": 10_000)
    monkeypatch.setattr(rank, "available_memory_bytes", lambda device="cpu": 10_000)
    dist = np.zeros((100, 200))
    ids = dict(q_pids=np.ones(100, int), g_pids=np.ones(200, int), q_camids=np.zeros(100, int), g_camids=np.ones(200, int))
    with pytest.raises(MemoryError, match="chunk_size"):
        evaluate_rank(dist, **ids, chunk_size=100)
    # Automatic chunking falls back to small chunks and still works.
    cmc, mAP = evaluate_rank(dist, **ids)
    assert cmc[0] == 1.0 and mAP == 1.0


# --- CUHK03 single-gallery-shot -------------------------------------------------------------


def expected_single_gallery_shot(dist, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Exact expectation over every way of drawing one cross-camera image per identity."""
    cmc_sum, ap_sum, valid = np.zeros(max_rank), 0.0, 0
    for q in range(dist.shape[0]):
        cand = np.flatnonzero((g_camids != q_camids[q]) & (g_pids != -1))
        groups = [cand[g_pids[cand] == pid] for pid in np.unique(g_pids[cand])]
        if not np.any(g_pids[cand] == q_pids[q]):
            continue
        valid += 1
        draws = list(itertools.product(*groups))
        for chosen in draws:
            chosen = np.array(sorted(chosen))  # gallery index order, for the stable tie rule
            order = chosen[np.argsort(dist[q, chosen], kind="stable")]
            position = int(np.flatnonzero(g_pids[order] == q_pids[q])[0]) + 1
            cmc_sum += (position <= np.arange(1, max_rank + 1)) / len(draws)
            ap_sum += 1.0 / position / len(draws)
    return cmc_sum / valid, ap_sum / valid, valid


def test_single_gallery_shot_without_choice_is_exact() -> None:
    # One gallery image per identity, all in camera 1: the draw has no choice.
    rng = np.random.default_rng(2)
    g_pids = np.arange(1, 13)
    g_camids = np.ones(12, dtype=int)
    q_pids, q_camids = rng.integers(1, 15, 10), np.where(rng.random(10) < 0.3, 1, 0)
    dist = rng.integers(0, 4, (10, 12)).astype(float)
    cmc_ref, map_ref, _ = expected_single_gallery_shot(dist, q_pids, g_pids, q_camids, g_camids, 8)
    cmc, mAP = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank=8, cuhk03_single_gallery_shot=True, num_repeats=3)
    np.testing.assert_allclose(cmc, cmc_ref, atol=1e-12)
    assert mAP == pytest.approx(map_ref, abs=1e-12)


def test_single_gallery_shot_converges_to_exact_expectation() -> None:
    rng = np.random.default_rng(4)
    num_q, num_g = 6, 14
    g_pids = rng.integers(1, 5, num_g)  # 4 identities, several images each
    g_camids = rng.integers(0, 3, num_g)
    q_pids, q_camids = rng.integers(1, 5, num_q), rng.integers(0, 3, num_q)
    dist = rng.integers(0, 6, (num_q, num_g)).astype(float)
    cmc_ref, map_ref, num_valid = expected_single_gallery_shot(dist, q_pids, g_pids, q_camids, g_camids, 4)
    assert 0.0 < cmc_ref[0] < 1.0 and num_valid >= 4  # the draw matters on this problem
    cmc, mAP = evaluate_rank(
        dist, q_pids, g_pids, q_camids, g_camids, max_rank=4, cuhk03_single_gallery_shot=True, num_repeats=1000, seed=1
    )
    # 1000 repeats x >= 4 valid queries: standard error <= 0.008; allow 5 of them.
    np.testing.assert_allclose(cmc, cmc_ref, atol=0.04)
    assert mAP == pytest.approx(map_ref, abs=0.04)


def test_single_gallery_shot_is_seeded_and_chunk_independent() -> None:
    rng = np.random.default_rng(6)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 21, 61, integer_distances=False)  # odd sizes
    kwargs = dict(max_rank=10, cuhk03_single_gallery_shot=True, num_repeats=5)
    a = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, seed=3, chunk_size=20, **kwargs)
    b = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, seed=3, chunk_size=3, **kwargs)
    c = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, seed=4, **kwargs)
    np.testing.assert_array_equal(a.average_precision, b.average_precision)
    np.testing.assert_array_equal(a.cmc, b.cmc)
    assert not np.array_equal(a.average_precision, c.average_precision)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(8)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 40, 120)
    cpu = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    gpu = evaluate_rank_detailed(torch.from_numpy(dist).cuda(), q_pids, g_pids, q_camids, g_camids, max_rank=20)
    np.testing.assert_allclose(gpu.cmc, cpu.cmc, atol=1e-12)
    np.testing.assert_allclose(gpu.average_precision, cpu.average_precision, atol=1e-12)
    kwargs = dict(max_rank=20, cuhk03_single_gallery_shot=True, num_repeats=4, seed=2)
    sgs_cpu = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, **kwargs)
    sgs_gpu = evaluate_rank_detailed(torch.from_numpy(dist).cuda(), q_pids, g_pids, q_camids, g_camids, **kwargs)
    np.testing.assert_allclose(sgs_gpu.average_precision, sgs_cpu.average_precision, atol=1e-12)


def test_short_list_split_into_slices_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force the per-chunk list of close items to be processed a few items at a time.
    monkeypatch.setattr(rank, "_REDUCED_CAP", 7)
    rng = np.random.default_rng(9)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 30, 80)
    cmc_ref, map_ref, ap_ref = brute_force_market(dist, q_pids, g_pids, q_camids, g_camids, 20)
    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    np.testing.assert_allclose(result.cmc, cmc_ref, atol=1e-12)
    np.testing.assert_allclose(result.average_precision, ap_ref, atol=1e-12)
