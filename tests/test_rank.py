"""evaluate_rank (CMC, mAP, mINP, MAP@R, Market-1501 rule and CUHK03 single-gallery-shot)
against brute-force per-query loops written from the protocol and the metrics' definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from reid_core.evaluation import distance, rank, rank_counts
from reid_core.evaluation.distance import compute_distance_matrix
from reid_core.evaluation.rank import evaluate_features, evaluate_rank, evaluate_rank_detailed


def metrics_of_list(match: np.ndarray) -> dict[str, float]:
    """AP, INP, MAP@R, R-precision and first-match rank of one filtered list (bool, True = match),
    computed position by position from the definitions."""
    positions = np.arange(1, match.size + 1)
    hits = np.cumsum(match)
    n = int(match.sum())
    precision_at_match = hits[match] / positions[match]
    top = match[:n]  # the first R = n items
    return {
        "ap": float(np.mean(precision_at_match)),  # mean precision at each match
        "inp": n / float(positions[match][-1]),  # |matches| / rank of the hardest match
        "r_precision": float(top.sum()) / n,
        "map_at_r": float(np.sum(hits[:n][top] / positions[:n][top])) / n,
        "first_rank": float(np.argmax(match)) + 1,
    }


def brute_force_market(dist, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Per query: stable argsort, drop junk and same-id same-camera, then every metric.

    Returns (cmc, {metric: (Q,) per-query values, NaN for a query without a valid match}).
    """
    per_query: dict[str, list[float]] = {k: [] for k in ("ap", "inp", "r_precision", "map_at_r", "first_rank")}
    for q in range(dist.shape[0]):
        order = np.argsort(dist[q], kind="stable")  # ties: lower gallery index first
        pids, cams = g_pids[order], g_camids[order]
        keep = (pids != -1) & ~((pids == q_pids[q]) & (cams == q_camids[q]))
        match = pids[keep] == q_pids[q]
        values = metrics_of_list(match) if match.any() else dict.fromkeys(per_query, np.nan)
        for k, v in values.items():
            per_query[k].append(v)
    arrays = {k: np.array(v) for k, v in per_query.items()}
    first = arrays["first_rank"][~np.isnan(arrays["first_rank"])]
    cmc = np.array([np.mean(first <= k) for k in range(1, max_rank + 1)])
    return cmc, arrays


def assert_equals_brute_force(result, dist, q_pids, g_pids, q_camids, g_camids, max_rank) -> None:
    """Every field of a RankResult against the brute-force loop."""
    cmc_ref, ref = brute_force_market(dist, q_pids, g_pids, q_camids, g_camids, max_rank)
    valid = ~np.isnan(ref["ap"])
    np.testing.assert_allclose(result.cmc, cmc_ref, atol=1e-12)
    np.testing.assert_array_equal(result.valid_query, valid)
    np.testing.assert_allclose(result.average_precision, ref["ap"], atol=1e-12)  # NaN where skipped
    np.testing.assert_allclose(result.inverse_negative_penalty, ref["inp"], atol=1e-12)
    np.testing.assert_allclose(result.first_match_rank, ref["first_rank"], atol=1e-12)
    assert result.mAP == pytest.approx(np.mean(ref["ap"][valid]), abs=1e-12)
    assert result.mINP == pytest.approx(np.mean(ref["inp"][valid]), abs=1e-12)
    assert result.map_at_r == pytest.approx(np.mean(ref["map_at_r"][valid]), abs=1e-12)
    assert result.r_precision == pytest.approx(np.mean(ref["r_precision"][valid]), abs=1e-12)
    assert result.num_valid_queries == int(valid.sum())
    assert result.num_queries_without_match == int((~valid).sum())


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
    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20, chunk_size=7)
    assert result.num_queries_without_match > 0, "the random problem should contain queries with no valid match"
    assert_equals_brute_force(result, dist, q_pids, g_pids, q_camids, g_camids, 20)

    cmc, mAP = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    np.testing.assert_array_equal(cmc, result.cmc)
    assert mAP == result.mAP


def clustered_problem(noise: float, seed: int = 0, num_q: int = 120, num_g: int = 900, num_ids: int = 40):
    """Gaussian identity clusters seen by 4 cameras, with distractors (pid 0) and junk (pid -1);
    float32 Euclidean distances. Larger noise, weaker model."""
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(1, num_ids + 1, num_g)
    g_pids[rng.random(num_g) < 0.15] = 0
    g_pids[rng.random(num_g) < 0.05] = -1
    q_pids = rng.integers(1, num_ids + 3, num_q)  # ids num_ids + 1, + 2 have no gallery image
    q_camids, g_camids = rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)
    centres = rng.normal(size=(num_ids + 3, 32))
    qf = centres[q_pids] + rng.normal(scale=noise, size=(num_q, 32))
    gf = np.where((g_pids > 0)[:, None], centres[np.maximum(g_pids, 0)], 0.0) + rng.normal(
        scale=noise, size=(num_g, 32)
    )
    gf[g_pids <= 0] = rng.normal(scale=np.sqrt(1 + noise**2), size=(int((g_pids <= 0).sum()), 32))
    dist = compute_distance_matrix(torch.from_numpy(qf).float(), torch.from_numpy(gf).float()).numpy()
    return dist, q_pids, g_pids, q_camids, g_camids


def test_matches_brute_force_from_strong_to_near_random_models() -> None:
    maps = []
    for noise in (0.2, 0.8, 1.4, 2.5, 8.0):
        dist, q_pids, g_pids, q_camids, g_camids = clustered_problem(noise)
        result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=30, chunk_size=50)
        assert_equals_brute_force(result, dist, q_pids, g_pids, q_camids, g_camids, 30)
        maps.append(result.mAP)
    assert maps[0] > 0.95 and maps[-1] < 0.15, maps  # the sweep covers strong to near-random models


@pytest.mark.parametrize("cells", [1, 3, 20000])
def test_grid_resolution_changes_nothing(monkeypatch: pytest.MonkeyPatch, cells: int) -> None:
    # One cell per row makes nearly every item ambiguous (settled by the exact search); very
    # many cells settle nearly every item by its cell alone. Both must give the same answer.
    monkeypatch.setattr(rank_counts, "_MIN_CELLS", cells)
    monkeypatch.setattr(rank_counts, "_MAX_CELLS", cells)
    for integer_distances in (True, False):
        dist, q_pids, g_pids, q_camids, g_camids = random_problem(
            np.random.default_rng(7), 25, 90, integer_distances=integer_distances
        )
        result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20)
        assert_equals_brute_force(result, dist, q_pids, g_pids, q_camids, g_camids, 20)
    dist, q_pids, g_pids, q_camids, g_camids = clustered_problem(1.4)
    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    assert_equals_brute_force(result, dist, q_pids, g_pids, q_camids, g_camids, 20)


def test_one_far_match_and_slices_of_a_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    # A match 1e6 times farther than the rest stretches a row's grid over one cell; small CPU
    # slices split every chunk into several grid passes sharing one workspace.
    monkeypatch.setattr(rank, "_CPU_SLICE_ELEMENTS", 3 * 900)
    dist, q_pids, g_pids, q_camids, g_camids = clustered_problem(1.0)
    dist = dist.copy()
    for q in range(0, dist.shape[0], 3):
        matches = np.flatnonzero((g_pids == q_pids[q]) & (g_camids != q_camids[q]))
        if matches.size:
            dist[q, matches[-1]] = 1e6
    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20, chunk_size=40)
    assert_equals_brute_force(result, dist, q_pids, g_pids, q_camids, g_camids, 20)


def test_queries_with_fewer_same_id_images_than_others_in_their_block() -> None:
    # Same-id images are read from the pid-sorted gallery in slots as wide as the block's
    # largest identity; the unused slots of pid 2 (one image) lie on pid 3's images, and those
    # of pid 3 (the last identity) past the gallery's end. Neither may remove a negative.
    g_pids = np.array([1, 1, 1, 1, 2, 0, 3, 0, 3])
    g_camids = np.array([0, 1, 1, 1, 1, 0, 1, 1, 0])
    q_pids, q_camids = np.array([1, 2, 3, 4]), np.array([0, 0, 0, 0])
    dist = np.random.default_rng(0).random((4, 9)).astype(np.float32)
    dist[1] = [0.9, 0.9, 0.9, 0.9, 0.5, 0.9, 0.1, 0.9, 0.2]  # pid 3's images come before pid 2's match
    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=5)
    assert result.first_match_rank[1] == 3
    assert_equals_brute_force(result, dist, q_pids, g_pids, q_camids, g_camids, 5)


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
    # INP = n / rank of the last match: q0 1/4, q1 2/4; mINP = 0.375.
    np.testing.assert_allclose(result.inverse_negative_penalty, [0.25, 0.5])
    assert result.mINP == pytest.approx(0.375)
    # R = n. q0: R = 1, the first item is a negative: R-precision 0, MAP@R 0. q1: R = 2, top 2
    # = [+, -]: R-precision 1/2, MAP@R = (1/1) / 2. Means: 0.25 and 0.25.
    assert result.r_precision == pytest.approx(0.25)
    assert result.map_at_r == pytest.approx(0.25)
    assert result.num_queries_without_match == 0

    # A third query, of an identity absent from the gallery, is skipped and counted.
    result = evaluate_rank_detailed(
        np.vstack([dist, dist[:1]]), np.array([1, 2, 3]), g_pids, np.array([0, 1, 0]), g_camids, max_rank=5
    )
    assert result.num_queries_without_match == 1 and result.num_valid_queries == 2
    assert np.isnan(result.inverse_negative_penalty[2]) and np.isnan(result.average_precision[2])
    assert result.mINP == pytest.approx(0.375)


def test_numpy_and_torch_inputs_agree() -> None:
    rng = np.random.default_rng(5)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 25, 60, integer_distances=False)
    dist32 = dist.astype(np.float32)
    from_numpy = evaluate_rank_detailed(dist32, q_pids, g_pids, q_camids, g_camids, max_rank=10)
    from_torch = evaluate_rank_detailed(
        torch.from_numpy(dist32),
        torch.from_numpy(q_pids),
        torch.from_numpy(g_pids),
        torch.from_numpy(q_camids).int(),
        torch.from_numpy(g_camids).short(),
        max_rank=10,
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
    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=10)
    assert_equals_brute_force(result, dist, q_pids, g_pids, q_camids, g_camids, 10)


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
        chunked = evaluate_rank_detailed(
            dist_fn, q_pids, g_pids, q_camids, g_camids, max_rank=15, chunk_size=chunk_size
        )
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
    ids = dict(
        q_pids=np.ones(100, int), g_pids=np.ones(200, int), q_camids=np.zeros(100, int), g_camids=np.ones(200, int)
    )
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
    cmc, mAP = evaluate_rank(
        dist, q_pids, g_pids, q_camids, g_camids, max_rank=8, cuhk03_single_gallery_shot=True, num_repeats=3
    )
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


def brute_force_single_gallery_shot(dist, q_pids, g_pids, q_camids, g_camids, max_rank, num_repeats, seed):
    """Every repeat drawn as documented (the top 30 bits of default_rng([seed, r])'s raw
    stream, one per (query, gallery) pair in row order; per identity the cross-camera item with
    the smallest (key, index)), then ranked by a stable sort. Returns (cmc, {metric: (Q,)})."""
    num_q, num_g = dist.shape
    names = ("ap", "inp", "r_precision", "map_at_r", "first_rank")
    sums = {k: np.zeros(num_q) for k in names}
    valid = np.zeros(num_q, bool)
    cmc_sum = np.zeros(max_rank)
    for r in range(num_repeats):
        keys = np.random.default_rng([seed, r]).bit_generator.random_raw((num_q, num_g)) >> np.uint64(34)
        for q in range(num_q):
            cand = np.flatnonzero((g_camids != q_camids[q]) & (g_pids != -1))
            chosen = [min(cand[g_pids[cand] == pid], key=lambda j: (keys[q, j], j)) for pid in np.unique(g_pids[cand])]
            chosen = np.array(sorted(chosen))
            match = g_pids[chosen[np.argsort(dist[q, chosen], kind="stable")]] == q_pids[q]
            if not match.any():
                continue
            valid[q] = True
            for k, v in metrics_of_list(match).items():
                sums[k][q] += v
            cmc_sum += metrics_of_list(match)["first_rank"] <= np.arange(1, max_rank + 1)
    per_query = {k: np.where(valid, v / num_repeats, np.nan) for k, v in sums.items()}
    return cmc_sum / (valid.sum() * num_repeats), per_query


def test_single_gallery_shot_equals_the_documented_draw() -> None:
    rng = np.random.default_rng(12)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 17, 45, integer_distances=True)  # ties
    kwargs = {"max_rank": 10, "cuhk03_single_gallery_shot": True, "num_repeats": 4, "seed": 5}
    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, chunk_size=6, **kwargs)
    cmc_ref, ref = brute_force_single_gallery_shot(dist, q_pids, g_pids, q_camids, g_camids, 10, 4, 5)
    np.testing.assert_allclose(result.cmc, cmc_ref, atol=1e-12)
    np.testing.assert_array_equal(result.valid_query, ~np.isnan(ref["ap"]))
    np.testing.assert_allclose(result.average_precision, ref["ap"], atol=1e-12)
    np.testing.assert_allclose(result.inverse_negative_penalty, ref["inp"], atol=1e-12)
    np.testing.assert_allclose(result.first_match_rank, ref["first_rank"], atol=1e-12)
    valid = result.valid_query
    assert result.map_at_r == pytest.approx(np.mean(ref["map_at_r"][valid]), abs=1e-12)
    assert result.r_precision == pytest.approx(np.mean(ref["r_precision"][valid]), abs=1e-12)
    # One true match per sampled list: INP = AP, and MAP@R = R-precision = [rank 1].
    np.testing.assert_allclose(result.inverse_negative_penalty, result.average_precision)
    assert result.map_at_r == pytest.approx(result.cmc[0]) and result.r_precision == pytest.approx(result.cmc[0])


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


def test_ambiguous_items_split_into_pieces_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force the per-slice list of ambiguous items to be settled a few items at a time.
    monkeypatch.setattr(rank_counts, "_EXACT_CAP", 7)
    rng = np.random.default_rng(9)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 30, 80)
    result = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    assert_equals_brute_force(result, dist, q_pids, g_pids, q_camids, g_camids, 20)
