"""chance_cmc: worked by hand, and against random rankings scored by evaluate_rank."""

from __future__ import annotations

import numpy as np
import pytest

from reid_core.evaluation import chance_cmc, evaluate_rank


def test_hand_worked_example():
    # one query (pid 1, cam 0); gallery: pid 1 cam 0 (removed), pid 1 cam 1, pid 2, pid 3, junk
    cmc = chance_cmc([1], [1, 1, 2, 3, -1], [0], [0, 1, 1, 1, 1], max_rank=3)
    # N = 3 valid images, n = 1 match: P(top-k holds it) = k / 3
    assert cmc == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_matches_random_rankings():
    rng = np.random.default_rng(0)
    q_pids, q_cams = rng.integers(1, 6, 12), rng.integers(0, 3, 12)
    g_pids, g_cams = rng.integers(0, 6, 40), rng.integers(0, 3, 40)
    expected = chance_cmc(q_pids, g_pids, q_cams, g_cams, max_rank=5)
    cmcs = [evaluate_rank(rng.random((12, 40)), q_pids, g_pids, q_cams, g_cams, max_rank=5)[0] for _ in range(3000)]
    assert np.mean(cmcs, axis=0) == pytest.approx(expected, abs=0.01)


def test_no_match_is_an_error():
    with pytest.raises(ValueError, match="no query has a match"):
        chance_cmc([1], [2, 3], [0], [1, 1])
