"""Same-person thresholds: the pairs, the threshold rule and the identity bootstrap against brute force."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from reid_core.evaluation.calibration import (
    calibrate_threshold,
    pair_distances,
    plot_calibration,
    replicate_thresholds,
    same_person_threshold,
    threshold_at_fpr,
)


def clustered(num_ids: int = 12, per_id: int = 5, num_cams: int = 3, seed: int = 0, spread: float = 0.6):
    """Features around one centre per identity; pids 1..num_ids, cameras at random."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, 4))
    pids = np.repeat(np.arange(1, num_ids + 1), per_id)
    feats = centres[pids - 1] + spread * rng.normal(size=(len(pids), 4))
    cams = rng.integers(0, num_cams, len(pids))
    return feats.astype(np.float32), pids, cams


def brute_pairs(feats: np.ndarray, pids: np.ndarray, cams: np.ndarray, cross_camera: bool):
    pos, neg = [], []
    for i, j in itertools.combinations(range(len(pids)), 2):
        if pids[i] <= 0 or pids[j] <= 0 or (cross_camera and cams[i] == cams[j]):
            continue
        d = float(np.linalg.norm(feats[i].astype(np.float64) - feats[j]))
        (pos if pids[i] == pids[j] else neg).append((d, pids[i], pids[j]))
    return pos, neg


@pytest.mark.parametrize("cross_camera", [True, False])
def test_pairs_match_a_double_loop(cross_camera: bool) -> None:
    feats, pids, cams = clustered()
    pids[:3] = [0, -1, 0]  # distractors and junk have no identity
    pairs = pair_distances(feats, pids, cams, "euclidean", cross_camera)
    pos, neg = brute_pairs(feats, pids, cams, cross_camera)
    assert np.allclose(np.sort(pairs.positive), sorted(d for d, _, _ in pos), atol=1e-4)
    assert np.allclose(pairs.negative, sorted(d for d, _, _ in neg), atol=1e-4)
    assert np.all(np.diff(pairs.negative) >= 0)
    # identity-pair counts: the formula against counting the listed pairs
    counts = np.zeros_like(pairs.pair_counts)
    for a, b in pairs.negative_identities:
        counts[a, b] += 1
        counts[b, a] += 1
    assert np.array_equal(counts, pairs.pair_counts)
    assert pairs.num_images == int((pids > 0).sum())


def test_threshold_is_the_largest_with_fpr_at_most_alpha() -> None:
    rng = np.random.default_rng(0)
    neg = np.sort(np.round(rng.random(300), 2))  # ties on purpose
    for alpha in (0.001, 0.01, 0.07, 0.29, 0.5):
        t = threshold_at_fpr(neg, alpha)
        assert np.mean(neg < t) <= alpha + 1e-12
        larger = neg[neg > t]
        if larger.size:  # any larger threshold lets in more than alpha
            assert np.mean(neg < np.nextafter(larger[0], np.inf)) > alpha
    assert threshold_at_fpr(np.arange(100.0), 0.29) == 29.0  # 0.29 * 100 rounds below 29 in floats
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        threshold_at_fpr(neg, 1.0)


def test_weighted_threshold_equals_repeating_pairs() -> None:
    rng = np.random.default_rng(1)
    neg = np.sort(rng.random(50))
    weights = rng.integers(0, 4, 50)
    repeated = np.repeat(neg, weights)
    for alpha in (0.02, 0.1, 0.33):
        assert threshold_at_fpr(neg, alpha, weights.astype(float)) == threshold_at_fpr(repeated, alpha)
        # a prefix with the total weight of all pairs gives the same, or inf when the prefix is too short
        prefix = threshold_at_fpr(neg[:30], alpha, weights[:30].astype(float), float(weights.sum()))
        assert prefix == threshold_at_fpr(neg, alpha, weights.astype(float)) or math.isinf(prefix)


def test_a_bootstrap_replicate_equals_the_duplicated_data_set() -> None:
    """Identity a drawn twice, b not at all: the pairs of the resampled set, brute force."""
    feats, pids, cams = clustered(num_ids=6, per_id=4, seed=3)
    pairs = pair_distances(feats, pids, cams, "euclidean", True)
    multiplicity = np.array([2, 0, 1, 1, 3, 1])
    fprs = [0.05, 0.2]
    got = replicate_thresholds(pairs, multiplicity, fprs, prefix=5)
    # brute force: copies of each identity, pairs between copies of one identity left out
    copies = [(i, c) for i, pid in enumerate(pids) for c in range(multiplicity[pid - 1])]
    pos, neg = [], []
    for (i, ci), (j, cj) in itertools.combinations(copies, 2):
        if cams[i] == cams[j] or (pids[i] == pids[j] and (ci != cj or i == j)):
            continue
        d = float(np.linalg.norm(feats[i].astype(np.float64) - feats[j]))
        (pos if pids[i] == pids[j] else neg).append(d)
    neg, pos = np.sort(neg), np.array(pos)
    for r, alpha in enumerate(fprs):
        t = threshold_at_fpr(neg, alpha)
        assert got[r, 0] == pytest.approx(t, abs=1e-5)
        assert got[r, 1] == pytest.approx(np.mean(pos < t - 1e-6), abs=1e-9)


def test_calibration_is_consistent(tmp_path: Path) -> None:
    feats, pids, cams = clustered(num_ids=30, per_id=6, seed=5)
    cal = calibrate_threshold(feats, pids, cams, fprs=(0.05, 0.01), num_bootstrap=200, seed=0, progress=False)
    pairs = cal.pairs
    for estimate in cal.thresholds:
        observed = np.mean(pairs.negative < estimate.threshold)
        assert observed <= estimate.target_fpr and estimate.observed_fpr == pytest.approx(observed)
        assert estimate.tpr == pytest.approx(np.mean(pairs.positive < estimate.threshold))
        assert estimate.interval[0] <= estimate.threshold <= estimate.interval[1]
        assert 0 <= estimate.tpr_interval[0] <= estimate.tpr_interval[1] <= 1
        assert estimate.resolvable
    assert cal.thresholds[0].threshold >= cal.thresholds[1].threshold  # a lower FPR needs a smaller distance
    assert np.all(np.diff(cal.roc_tpr) >= 0) and np.all(np.diff(cal.roc_fpr) > 0)
    stored = cal.to_dict()
    assert same_person_threshold(stored, 0.01) == (0.01, cal.thresholds[1].threshold)
    assert same_person_threshold(stored) == (0.05, cal.thresholds[0].threshold)
    with pytest.raises(ValueError, match="stored rates"):
        same_person_threshold(stored, 0.2)
    png = plot_calibration(cal, tmp_path / "roc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_interval_narrows_with_more_identities() -> None:
    widths = []
    for num_ids in (10, 80):
        feats, pids, cams = clustered(num_ids=num_ids, per_id=4, seed=7)
        cal = calibrate_threshold(feats, pids, cams, fprs=(0.05,), num_bootstrap=300, seed=1, progress=False)
        widths.append(cal.thresholds[0].interval[1] - cal.thresholds[0].interval[0])
    assert widths[1] < widths[0]


def test_bad_inputs_are_named() -> None:
    feats, pids, cams = clustered(num_ids=3, per_id=2)
    with pytest.raises(ValueError, match="positive and negative pairs"):
        calibrate_threshold(feats, np.arange(1, 7), cams, progress=False)  # every image its own identity
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        calibrate_threshold(feats, pids, cams, fprs=(0.0,), progress=False)
    with pytest.raises(ValueError, match="metric"):
        pair_distances(feats, pids, cams, metric="manhattan")  # type: ignore[arg-type]
