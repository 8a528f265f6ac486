"""reid_core.book.evidence: intervals over seeds worked by hand, paired differences, verdicts."""

from __future__ import annotations

import math

import pytest

from reid_core.book.evidence import Claim, claims_markdown, mean_interval, paired_difference, verdict

T_975_DF2 = 4.302652729911275  # Student's t quantile 0.975 with 2 degrees of freedom (tables)


def test_mean_interval_worked_by_hand() -> None:
    # mean 32, sample std 2, half width t * 2 / sqrt(3)
    got = mean_interval([30.0, 32.0, 34.0])
    half = T_975_DF2 * 2.0 / math.sqrt(3.0)
    assert got.n == 3 and got.mean == pytest.approx(32.0)
    assert got.low == pytest.approx(32.0 - half) and got.high == pytest.approx(32.0 + half)


def test_one_seed_has_no_interval_and_no_verdict() -> None:
    got = mean_interval([5.0])
    assert got.mean == 5.0 and math.isnan(got.low) and math.isnan(got.high)
    assert verdict(got) == "not shown"


def test_paired_difference_is_tighter_than_separate_intervals() -> None:
    a, b = [30.0, 40.0, 50.0], [32.0, 43.0, 52.5]  # d = 2, 3, 2.5: mean 2.5, sample std 0.5
    d = paired_difference(b, a)
    half = T_975_DF2 * 0.5 / math.sqrt(3.0)
    assert d.mean == pytest.approx(2.5) and d.low == pytest.approx(2.5 - half) and d.high == pytest.approx(2.5 + half)
    assert verdict(d) == "shown"
    assert verdict(d, expected_sign=-1) == "reversed"
    separate = mean_interval(b).low - mean_interval(a).high
    assert separate < 0 < d.low  # the unpaired intervals overlap; the paired one excludes 0


def test_an_interval_containing_zero_is_not_shown() -> None:
    d = paired_difference([31.0, 35.0, 36.0], [30.0, 32.0, 34.0])  # d = 1, 3, 2: half width 2.48 > mean 2
    assert d.low < 0 < d.high and verdict(d) == "not shown"


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        mean_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        mean_interval([])
    with pytest.raises(ValueError, match="expected_sign"):
        verdict(mean_interval([1.0, 2.0]), expected_sign=0)


def test_claims_table() -> None:
    claim = Claim(
        "01_reid_basics",
        "BNNeck raises rank-1",
        "+1.0 (Luo et al., Table 3)",
        "rank-1",
        paired_difference([32.0, 43.0, 52.5], [30.0, 40.0, 50.0]),
    )
    lines = claims_markdown([claim], with_chapter=True).splitlines()
    assert lines[0].startswith("| chapter | claim | paper |") and len(lines) == 3
    assert lines[2].startswith(
        "| 01_reid_basics | BNNeck raises rank-1 | +1.0 (Luo et al., Table 3) | rank-1 | +2.5 [+1.3, +3.7] | 3 |"
    )
    assert lines[2].endswith("| shown |")


def test_claim_round_trips_through_json_and_files(tmp_path):
    from reid_core.book import Claim, load_claims, write_claims

    one = Claim.from_seeds("02_x", "margins help", "+1 (Tab. 1)", "mAP", [5.0, 6.0, 7.0], [4.0, 4.0, 4.0])
    lone = Claim.from_seeds("03_y", "one seed", "-", "rank-1", [5.0], [4.0])
    write_claims(tmp_path, "02_x", [one])
    write_claims(tmp_path, "03_y", [lone])
    assert load_claims(tmp_path) == [one, lone] or [c.to_json() for c in load_claims(tmp_path)] == [
        one.to_json(),
        lone.to_json(),
    ]
    assert load_claims(tmp_path)[1].verdict == "not shown"  # one seed: no interval
    (tmp_path / "claims" / "bad.json").write_text('[{"claim": 1}]')
    import pytest

    with pytest.raises(ValueError, match="bad.json"):
        load_claims(tmp_path)


def test_arms_markdown_and_sentence():
    from reid_core.book import Claim, arms_markdown, claim_sentence

    table = arms_markdown({"a": [{"rank1": 10.0, "mAP": 5.0}, {"rank1": 12.0, "mAP": 7.0}]}, seeds=[0, 1])
    # mean 11, sd sqrt(2), t(0.975,1) = 12.706 -> half width 12.706 * sqrt(2) / sqrt(2) = 12.7
    assert "| a | 11.0 [-1.7, 23.7] | 6.0 [-6.7, 18.7] | 10.0, 12.0 | 5.0, 7.0 |" in table
    claim = Claim.from_seeds("01", "B beats A", "-", "rank-1", [2.0, 3.0, 4.0], [1.0, 1.0, 1.0])
    assert claim_sentence(claim) == "*B beats A* (rank-1): +2.0 [-0.5, +4.5] points over 3 paired seeds: **not shown**."
