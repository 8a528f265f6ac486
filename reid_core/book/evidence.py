r"""Claims measured over seeds: means with 95% intervals, paired differences, and a verdict.

A chapter runs each method with the same seeds (paired: seed :math:`s` of method A and seed
:math:`s` of method B share their data order and initialisation where the methods allow it).
With :math:`n` seeds and per-seed values :math:`x_1..x_n`, the mean and its 95% interval are

.. math::
    \bar x = \frac1n \sum_s x_s, \qquad
    \bar x \pm t_{0.975,\,n-1}\,\frac{s_x}{\sqrt n}, \qquad
    s_x^2 = \frac{1}{n-1}\sum_s (x_s - \bar x)^2,

Student's t interval for a mean. A claim "B beats A" is judged on the paired differences
:math:`d_s = b_s - a_s`, whose interval is much tighter than two separate intervals when the
seeds move both methods together. The verdict reads the interval of :math:`\bar d` against
the direction the paper claims:

* **shown**: the whole interval lies on the claimed side of 0;
* **reversed**: the whole interval lies on the other side;
* **not shown**: the interval contains 0 (the data cannot tell; a finding, not a failure).

With fewer than two seeds there is no interval, and the verdict is "not shown".

Chapters: all (each ends with its paper's claims), and the book's results page.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from reid_core.files import atomic_write_text

__all__ = [
    "CLAIMS_FOLDER",
    "Interval",
    "Claim",
    "mean_interval",
    "paired_difference",
    "verdict",
    "claims_markdown",
    "claim_sentence",
    "arms_markdown",
    "write_claims",
    "load_claims",
]

CLAIMS_FOLDER = "claims"
"""``results_dir/claims/<notebook>.json``: each chapter's measured claims, gathered by the results page."""

VERDICTS = ("shown", "not shown", "reversed")


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its two-sided confidence interval.

    Attributes:
        mean: the mean over seeds.
        low, high: the interval's ends (NaN with fewer than two seeds).
        n: the number of seeds.
    """

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.mean:.1f} (n={self.n})"
        return f"{self.mean:.1f} [{self.low:.1f}, {self.high:.1f}]"


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of per-seed values with Student's t interval.

    Args:
        values: one value per seed (e.g. rank-1 in percent).
        confidence: the interval's coverage, in (0, 1).

    Raises:
        ValueError: no values, a NaN among them, or a confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence (one value per seed), got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError(f"values hold NaN: {x.tolist()}")
    n = x.size
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(b: Sequence[float], a: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and interval of :math:`d_s = b_s - a_s` over paired seeds (``b`` minus ``a``).

    Raises:
        ValueError: ``a`` and ``b`` have different lengths (the seeds must be paired).
    """
    b_arr, a_arr = np.asarray(b, dtype=float), np.asarray(a, dtype=float)
    if b_arr.shape != a_arr.shape:
        raise ValueError(f"paired values need the same seeds: got {b_arr.shape[0]} and {a_arr.shape[0]} values")
    return mean_interval(b_arr - a_arr, confidence)


def verdict(difference: Interval, expected_sign: int = 1) -> str:
    """``"shown"``, ``"not shown"`` or ``"reversed"`` from a difference's interval.

    Args:
        difference: the interval of the claimed effect (e.g. from :func:`paired_difference`).
        expected_sign: +1 when the paper claims the difference is positive, -1 when negative.
    """
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign}")
    if math.isnan(difference.low):
        return "not shown"
    low, high = sorted((expected_sign * difference.low, expected_sign * difference.high))
    if low > 0:
        return "shown"
    if high < 0:
        return "reversed"
    return "not shown"


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, measured here.

    Attributes:
        chapter: the notebook stem, e.g. ``"01_reid_basics"``.
        claim: the claim in words, e.g. "BNNeck raises rank-1".
        paper: the paper's own figure for it, as text with its source ("+3.0 R1, Table 2").
        metric: the measured quantity ("rank-1", "mAP").
        difference: the paired difference over seeds.
        expected_sign: the direction the paper claims (+1 or -1).
    """

    chapter: str
    claim: str
    paper: str
    metric: str
    difference: Interval
    expected_sign: int = 1

    @property
    def verdict(self) -> str:
        return verdict(self.difference, self.expected_sign)

    @classmethod
    def from_seeds(
        cls,
        chapter: str,
        claim: str,
        paper: str,
        metric: str,
        method: Sequence[float],
        control: Sequence[float],
        expected_sign: int = 1,
    ) -> Claim:
        """The claim measured as ``method - control`` over paired seeds (same order in both)."""
        return cls(chapter, claim, paper, metric, paired_difference(method, control), expected_sign)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (the interval's ends are ``None`` when there is no interval)."""
        d = self.difference
        ends = (None, None) if math.isnan(d.low) else (d.low, d.high)
        return {
            "chapter": self.chapter,
            "claim": self.claim,
            "paper": self.paper,
            "metric": self.metric,
            "difference": {"mean": d.mean, "low": ends[0], "high": ends[1], "n": d.n},
            "expected_sign": self.expected_sign,
            "verdict": self.verdict,
        }

    @classmethod
    def from_json(cls, record: dict[str, object]) -> Claim:
        """The inverse of :meth:`to_json`."""
        d = record["difference"]
        low = math.nan if d["low"] is None else float(d["low"])
        high = math.nan if d["high"] is None else float(d["high"])
        interval = Interval(float(d["mean"]), low, high, int(d["n"]))
        return cls(
            str(record["chapter"]),
            str(record["claim"]),
            str(record["paper"]),
            str(record["metric"]),
            interval,
            int(record["expected_sign"]),
        )


def claims_markdown(claims: Sequence[Claim], with_chapter: bool = False) -> str:
    """The claims as a markdown table: claim, paper's figure, our difference with its interval, verdict."""
    head = (["chapter"] if with_chapter else []) + [
        "claim",
        "paper",
        "metric",
        "ours: difference [95% CI]",
        "seeds",
        "verdict",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in claims:
        diff = c.difference
        text = f"{diff.mean:+.1f}" if math.isnan(diff.low) else f"{diff.mean:+.1f} [{diff.low:+.1f}, {diff.high:+.1f}]"
        row = ([c.chapter] if with_chapter else []) + [c.claim, c.paper, c.metric, text, str(diff.n), c.verdict]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _signed(interval: Interval) -> str:
    if math.isnan(interval.low):
        return f"{interval.mean:+.1f} (one seed, no interval)"
    return f"{interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}]"


def claim_sentence(claim: Claim, unit: str = "points") -> str:
    """One generated sentence stating a measured claim, for the chapter's prose.

    Example: "*BNNeck raises rank-1*: +3.2 points [+1.1, +5.3] over 3 paired seeds: **shown**."
    """
    return (
        f"*{claim.claim}* ({claim.metric}): {_signed(claim.difference)} {unit} over "
        f"{claim.difference.n} paired seeds: **{claim.verdict}**."
    )


def arms_markdown(
    per_arm: Mapping[str, Sequence[Mapping[str, float]]],
    metrics: Sequence[str] = ("rank1", "mAP"),
    labels: Mapping[str, str] | None = None,
    seeds: Sequence[int] | None = None,
) -> str:
    """A markdown table: per arm, each metric's mean [95% CI] and its per-seed values.

    Args:
        per_arm: arm name -> one metrics dict per seed (the same seeds, in the same order, for every arm).
        metrics: the keys to show (``labels`` names their columns; default the keys).
        labels: column names for the metrics, e.g. ``{"rank1": "R1", "mAP": "mAP"}``.
        seeds: the seeds, for the per-seed column's heading.
    """
    labels = dict(labels or {})
    head = ["arm"] + [f"{labels.get(m, m)} mean [95% CI]" for m in metrics]
    head += [f"{labels.get(m, m)} per seed" + (f" ({', '.join(map(str, seeds))})" if seeds else "") for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, runs in per_arm.items():
        cells = [arm]
        values = {m: [float(run[m]) for run in runs] for m in metrics}
        cells += [str(mean_interval(values[m])) for m in metrics]
        cells += [", ".join(f"{v:.1f}" for v in values[m]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_claims(results_dir: str | os.PathLike[str], notebook: str, claims: Sequence[Claim]) -> Path:
    """Write a chapter's claims atomically to ``results_dir/claims/<notebook>.json`` (the results page reads them)."""
    text = json.dumps([c.to_json() for c in claims], indent=1)
    return atomic_write_text(Path(results_dir) / CLAIMS_FOLDER / f"{notebook}.json", text + "\n")


def load_claims(results_dir: str | os.PathLike[str]) -> list[Claim]:
    """Every chapter's claims from ``results_dir/claims/*.json``, in chapter order.

    Raises:
        ValueError: a file that is not a list of claims (names the file and the missing key).
    """
    claims: list[Claim] = []
    for path in sorted((Path(results_dir) / CLAIMS_FOLDER).glob("*.json")):
        try:
            records = json.loads(path.read_text())
            claims += [Claim.from_json(r) for r in records]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a list of claims as write_claims writes them ({error!r})") from error
    return claims
