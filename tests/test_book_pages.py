"""The worked examples and statistics typed into the stand-alone book pages are checked here.

``book/evaluation_at_scale.md`` works k-reciprocal re-ranking out by hand on six points on a
line (and shows that adding a second query changes the first one's result);
``book/datasets.md`` contrasts our AP with the MATLAB (trapezoid) AP on one query and gives the
``synth`` preset's statistics. If the library or the preset changes, these tests say which
sentence of which page went stale.
"""

from __future__ import annotations

import numpy as np
import pytest

from reid_core.data.synthreid import SYNTHREID_PRESETS
from reid_core.data.synthreid.config import SynthReIDConfig
from reid_core.data.synthreid.plan import plan_synthreid
from reid_core.evaluation import evaluate_rank
from reid_core.evaluation.rerank import re_ranking

# book/evaluation_at_scale.md, "A worked example": q, a1, a2 (one person), b1, b2, b3 (another)
POINTS = {"q": 0.0, "a1": 1.0, "a2": 2.2, "b1": -1.8, "b2": -2.4, "b3": -3.1}
GALLERY = ["a1", "a2", "b1", "b2", "b3"]


def k_reciprocal_sets(points: dict[str, float], k: int) -> dict[str, set[str]]:
    """Plain k-reciprocal sets on a line: N(p) is p and its k nearest, R(p) the mutual part."""
    names = list(points)
    x = np.array([points[n] for n in names])
    dist = np.abs(x[:, None] - x[None, :])  # (N, N)
    near = {n: {names[j] for j in np.argsort(dist[i], kind="stable")[: k + 1]} for i, n in enumerate(names)}
    return {p: {g for g in near[p] if p in near[g]} for p in names}


def final_distances(points: dict[str, float], k: int = 2, lam: float = 0.3) -> dict[str, float]:
    """(1 - lambda) * Jaccard distance of the plain sets + lambda * |q - g|, for q's gallery."""
    sets = k_reciprocal_sets(points, k)
    out = {}
    for g in GALLERY:
        jaccard = 1 - len(sets["q"] & sets[g]) / len(sets["q"] | sets[g])
        out[g] = (1 - lam) * jaccard + lam * abs(points["q"] - points[g])
    return out


def test_worked_example_sets_and_distances() -> None:
    sets = k_reciprocal_sets(POINTS, k=2)
    assert sets["q"] == {"q", "a1"}
    assert sets["a1"] == {"a1", "q", "a2"}
    assert sets["a2"] == {"a2", "a1"}
    assert sets["b1"] == sets["b2"] == sets["b3"] == {"b1", "b2", "b3"}
    d = final_distances(POINTS)
    assert d == pytest.approx({"a1": 0.7 / 3 + 0.3, "a2": 1.4 / 3 + 0.66, "b1": 1.24, "b2": 1.42, "b3": 1.63})
    assert sorted(GALLERY, key=d.get) == ["a1", "a2", "b1", "b2", "b3"]
    assert sorted(GALLERY, key=lambda g: abs(POINTS[g])) == ["a1", "b1", "a2", "b2", "b3"]  # before


def test_worked_example_is_transductive() -> None:
    d = final_distances({**POINTS, "q2": 1.7})  # a second query, nothing else changed
    assert d["a2"] == pytest.approx(0.7 + 0.3 * 2.2)
    assert d["b1"] < d["a2"]


def _line_distances(a: list[float], b: list[float]) -> np.ndarray:
    return np.abs(np.array(a)[:, None] - np.array(b)[None, :]).astype(np.float32)  # (len(a), len(b))


@pytest.mark.parametrize(
    ("queries", "order"),
    [([0.0], ["a1", "a2", "b1", "b2", "b3"]), ([0.0, 1.7], ["a1", "b1", "a2", "b2", "b3"])],
)
def test_re_ranking_agrees_with_the_worked_example(queries: list[float], order: list[str]) -> None:
    gallery = [POINTS[g] for g in GALLERY]
    dist = re_ranking(
        _line_distances(queries, gallery),
        _line_distances(queries, queries),
        _line_distances(gallery, gallery),
        k1=2,
        k2=1,
        lambda_value=0.3,
    )  # (Q, 5)
    assert [GALLERY[j] for j in np.argsort(dist[0], kind="stable")] == order


def matlab_ap(match_ranks: list[int]) -> float:
    """AP of the official Market-1501 MATLAB code (trapezoids), from the 1-based match ranks."""
    n, ap, old_recall, old_precision, found = len(match_ranks), 0.0, 0.0, 1.0, 0
    for position in range(1, max(match_ranks) + 1):
        found += position in match_ranks
        recall, precision = found / n, found / position
        ap += (recall - old_recall) * (old_precision + precision) / 2
        old_recall, old_precision = recall, precision
    return ap


def test_ap_example_of_the_protocol_page() -> None:
    # one query, true matches at ranks 1 and 3 (gallery sorted by distance; camera 1 vs query's 0)
    _, mean_ap = evaluate_rank(
        np.array([[0.1, 0.2, 0.3, 0.4]]), np.array([1]), np.array([1, 2, 1, 2]), np.array([0]), np.array([1, 1, 1, 1])
    )
    assert mean_ap == pytest.approx((1 + 2 / 3) / 2)
    assert matlab_ap([1, 3]) == pytest.approx((1 + (1 / 2 + 2 / 3) / 2) / 2)
    assert matlab_ap([1, 2, 3]) == pytest.approx(1.0)  # equal when the matches come first
    assert matlab_ap([2, 5]) < (1 / 2 + 2 / 5) / 2


def test_synth_preset_statistics_of_the_protocol_page() -> None:
    plan = plan_synthreid(SynthReIDConfig(**SYNTHREID_PRESETS["synth"]))
    split = {s: [im for im in plan.images if im.split == s] for s in ("train", "query", "gallery")}
    assert len(split["train"]) == 3000 and len({im.pid for im in split["train"]}) == 250
    assert len(split["query"]) == 834 and len({im.pid for im in split["query"]}) == 250
    gallery = [im for im in split["gallery"] if im.pid != -1]  # junk is dropped by the reader
    assert len(gallery) == 2666 and sum(im.pid == 0 for im in gallery) == 500
    assert len(split["gallery"]) - len(gallery) == 250
    assert len({im.camera for im in plan.images}) == 6
    per_camera = {(im.pid, im.camera) for im in split["query"]}
    assert len(per_camera) == len(split["query"])  # at most one query per (identity, camera)
