r"""When are two crops the same person? A distance threshold at a chosen false-positive rate.

Retrieval metrics rank a gallery; a deployment often has to *decide*: same person or not. With
a distance :math:`d` between two embeddings, the decision "same iff :math:`d < t`" has

.. math::
    \mathrm{FPR}(t) = \frac{\#\{\text{negative pairs with } d < t\}}{\#\text{negative pairs}}, \qquad
    \mathrm{TPR}(t) = \frac{\#\{\text{positive pairs with } d < t\}}{\#\text{positive pairs}},

over pairs of images of different (negative) or the same (positive) identity. For a target
rate :math:`\alpha` the threshold is the largest :math:`t` with :math:`\mathrm{FPR}(t) \le \alpha`:
with the negative distances sorted, :math:`n_{(1)} \le n_{(2)} \le \dots`, it is
:math:`t_\alpha = n_{(k+1)}` with :math:`k = \lfloor \alpha N_{neg} \rfloor` (the strict ``<``
keeps exactly :math:`k` false positives, fewer where distances tie). A threshold guessed by hand
(0.7 in a well-known thread about AlignedReID's code) gave about half false positives; a
calibrated one states its rate.

**Which pairs.** All pairs of distinct test images with an identity label (pid > 0; junk and
distractors have no identity), by default only pairs from two different cameras, as the re-ID
rule compares. The test identities are never seen in training, so the rates are those of new
people.

**How sure.** Pairs are not independent: all pairs of one person share that person's
appearance. The interval therefore comes from a bootstrap over *identities* (a cluster
bootstrap): each replicate draws :math:`I` identities with replacement, with multiplicities
:math:`m_a`; a negative pair of identities :math:`(a, b)` then weighs :math:`m_a m_b`, a
positive pair of identity :math:`a` weighs :math:`m_a`, and the threshold and TPR are
recomputed with these weights. The percentile interval of the replicates is reported.

Only the smallest negatives can decide a low-FPR threshold, so each replicate reads a short
prefix of the sorted negatives (it falls back to all of them when a replicate needs more), and
the replicate's total negative weight :math:`\tfrac12 m^\top C m` comes from the
identity-by-identity pair counts :math:`C`.

Chapters: ``notebooks/06_your_own_images.py`` (``reid calibrate``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from reid_core.evaluation.distance import METRICS, Metric, pairwise_distance

__all__ = [
    "Calibration",
    "PairDistances",
    "ThresholdEstimate",
    "calibrate_threshold",
    "pair_distances",
    "plot_calibration",
    "replicate_thresholds",
    "same_person_threshold",
    "threshold_at_fpr",
]

_ROW_BLOCK = 512  # query rows per block while listing pairs


@dataclass
class PairDistances:
    """Distances of every positive and negative pair of a labelled image set.

    Attributes:
        positive: (P,) float64 distances of same-identity pairs.
        positive_identity: (P,) int64 identity index (into ``identities``) of each positive pair.
        negative: (N,) float64 distances of different-identity pairs, sorted ascending.
        negative_identities: (N, 2) int64 identity indices of each negative pair (same order).
        identities: (I,) the pid of each identity index.
        pair_counts: (I, I) int64 negative pairs between identities a != b (symmetric, zero diagonal).
        num_images: images used.
        cross_camera: whether only pairs from two different cameras were kept.
        metric: the distance.
    """

    positive: np.ndarray
    positive_identity: np.ndarray
    negative: np.ndarray
    negative_identities: np.ndarray
    identities: np.ndarray
    pair_counts: np.ndarray
    num_images: int
    cross_camera: bool
    metric: str


@dataclass
class ThresholdEstimate:
    """The threshold for one target false-positive rate.

    Attributes:
        target_fpr: the rate asked for.
        threshold: same person iff distance < threshold (``inf``: every pair is "same").
        interval: (low, high) bootstrap percentile interval of the threshold.
        tpr: true-positive rate at the threshold.
        tpr_interval: its bootstrap interval.
        false_positives: negative pairs below the threshold.
        observed_fpr: ``false_positives / num_negative_pairs``.
        resolvable: at least one negative pair may fall below it (``target_fpr * N_neg >= 1``);
            otherwise the set is too small to tell this rate from zero.
    """

    target_fpr: float
    threshold: float
    interval: tuple[float, float]
    tpr: float
    tpr_interval: tuple[float, float]
    false_positives: int
    observed_fpr: float
    resolvable: bool


@dataclass
class Calibration:
    """Thresholds at several false-positive rates, with what they were measured on.

    Attributes:
        metric: the distance the thresholds apply to.
        cross_camera: pairs from two different cameras only.
        thresholds: one :class:`ThresholdEstimate` per target rate.
        num_images, num_identities: the labelled images and identities used.
        num_positive_pairs, num_negative_pairs: pair counts.
        num_bootstrap, confidence, seed: the bootstrap.
        roc_fpr, roc_tpr: (K,) the ROC curve on a log-spaced grid of rates (for plots).
        source: free text saying which data (e.g. "synthreid test set").
        pairs: the pair distances (kept for plots; not saved).
    """

    metric: str
    cross_camera: bool
    thresholds: list[ThresholdEstimate]
    num_images: int
    num_identities: int
    num_positive_pairs: int
    num_negative_pairs: int
    num_bootstrap: int
    confidence: float
    seed: int
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    source: str = ""
    pairs: PairDistances | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what a model card stores); the pair distances are left out."""
        return {
            "rule": "same person iff distance < threshold",
            "metric": self.metric,
            "cross_camera": self.cross_camera,
            "thresholds": [
                {
                    "target_fpr": t.target_fpr,
                    "threshold": t.threshold,
                    "interval": list(t.interval),
                    "tpr": t.tpr,
                    "tpr_interval": list(t.tpr_interval),
                    "false_positives": t.false_positives,
                    "observed_fpr": t.observed_fpr,
                    "resolvable": t.resolvable,
                }
                for t in self.thresholds
            ],
            "num_images": self.num_images,
            "num_identities": self.num_identities,
            "num_positive_pairs": self.num_positive_pairs,
            "num_negative_pairs": self.num_negative_pairs,
            "num_bootstrap": self.num_bootstrap,
            "confidence": self.confidence,
            "seed": self.seed,
            "roc_fpr": [float(v) for v in self.roc_fpr],
            "roc_tpr": [float(v) for v in self.roc_tpr],
            "source": self.source,
        }

    def format(self) -> str:
        """A table of the thresholds."""
        pct = f"{self.confidence:.0%}"
        lines = [
            f"calibration on {self.source or 'the given images'}: {self.num_images} images, {self.num_identities} "
            f"identities, {self.num_positive_pairs} positive / {self.num_negative_pairs} negative pairs "
            f"({'cross-camera' if self.cross_camera else 'all'} pairs, metric {self.metric})",
            f"  rule: same person iff distance < threshold; {pct} intervals from {self.num_bootstrap} bootstrap "
            "replicates over identities",
            f"  {'target FPR':>10}  {'threshold':>9}  {pct + ' interval':>20}  {'TPR':>6}  {pct + ' interval':>16}  "
            "false pos.",
        ]
        for t in self.thresholds:
            note = "" if t.resolvable else "  (too few negative pairs to resolve this rate)"
            lines.append(
                f"  {t.target_fpr:>10.0e}  {t.threshold:>9.4f}  [{t.interval[0]:>8.4f}, {t.interval[1]:>8.4f}]  "
                f"{t.tpr:>6.3f}  [{t.tpr_interval[0]:.3f}, {t.tpr_interval[1]:.3f}]  {t.false_positives:>10d}{note}"
            )
        return "\n".join(lines)


def pair_distances(
    features: Tensor | np.ndarray,
    pids: Sequence[int] | np.ndarray,
    camids: Sequence[int] | np.ndarray,
    metric: Metric = "euclidean",
    cross_camera: bool = True,
) -> PairDistances:
    """List the distance of every pair of distinct labelled images.

    Images with pid <= 0 (junk, distractors) are left out: they have no identity.

    Args:
        features: (N, D) embeddings.
        pids: (N,) identities.
        camids: (N,) cameras.
        metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
        cross_camera: keep only pairs from two different cameras.

    Returns:
        :class:`PairDistances`.

    Raises:
        ValueError: mismatched lengths, an unknown metric, or no positive or no negative pair.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    feats = torch.as_tensor(features).float()
    pid_arr, cam_arr = np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64)
    if feats.dim() != 2 or not (len(feats) == len(pid_arr) == len(cam_arr)):
        raise ValueError(
            f"features (N, D), pids (N,), camids (N,) expected; got {tuple(feats.shape)}, "
            f"{pid_arr.shape}, {cam_arr.shape}"
        )
    labelled = pid_arr > 0
    feats = feats[torch.as_tensor(labelled)]
    pid_arr, cam_arr = pid_arr[labelled], cam_arr[labelled]
    identities, ident = np.unique(pid_arr, return_inverse=True)  # (I,), (N,)
    n = len(pid_arr)
    ident_t, cam_t = torch.as_tensor(ident), torch.as_tensor(cam_arr)
    pos_d, pos_id, neg_d, neg_a, neg_b = [], [], [], [], []
    for start in range(0, n, _ROW_BLOCK):
        end = min(start + _ROW_BLOCK, n)
        dist = pairwise_distance(feats[start:end], feats, metric=metric).double()  # (B, N)
        rows = torch.arange(start, end).unsqueeze(1)  # (B, 1)
        upper = torch.arange(n).unsqueeze(0) > rows  # (B, N): each unordered pair once
        if cross_camera:
            upper &= cam_t[start:end].unsqueeze(1) != cam_t.unsqueeze(0)
        same = ident_t[start:end].unsqueeze(1) == ident_t.unsqueeze(0)  # (B, N)
        pos = upper & same
        neg = upper & ~same
        r, c = pos.nonzero(as_tuple=True)
        pos_d.append(dist[r, c].numpy())
        pos_id.append(ident[(r + start).numpy()])
        r, c = neg.nonzero(as_tuple=True)
        neg_d.append(dist[r, c].numpy())
        neg_a.append(ident[(r + start).numpy()])
        neg_b.append(ident[c.numpy()])
    positive, negative = np.concatenate(pos_d), np.concatenate(neg_d)
    if positive.size == 0 or negative.size == 0:
        raise ValueError(
            f"need positive and negative pairs, got {positive.size} positive and {negative.size} negative "
            f"({n} labelled images, {len(identities)} identities"
            + (", cross-camera pairs only)" if cross_camera else ")")
        )
    order = np.argsort(negative, kind="stable")
    negative_ids = np.stack([np.concatenate(neg_a), np.concatenate(neg_b)], axis=1)[order]  # (N, 2)
    return PairDistances(
        positive=positive,
        positive_identity=np.concatenate(pos_id),
        negative=negative[order],
        negative_identities=negative_ids,
        identities=identities,
        pair_counts=_negative_pair_counts(ident, cam_arr, len(identities), cross_camera),
        num_images=n,
        cross_camera=cross_camera,
        metric=metric,
    )


def _negative_pair_counts(ident: np.ndarray, cams: np.ndarray, num_ids: int, cross_camera: bool) -> np.ndarray:
    r"""(I, I) negative pairs between identities: :math:`C_{ab} = s_a s_b - \sum_c H_{ac} H_{bc}` across cameras."""
    _, cam_index = np.unique(cams, return_inverse=True)
    hist = np.zeros((num_ids, cam_index.max() + 1), dtype=np.int64)  # (I, cameras)
    np.add.at(hist, (ident, cam_index), 1)
    sizes = hist.sum(1)  # (I,)
    counts = np.outer(sizes, sizes)  # (I, I)
    if cross_camera:
        counts -= hist @ hist.T
    np.fill_diagonal(counts, 0)
    return counts


def threshold_at_fpr(
    sorted_negative: np.ndarray, fpr: float, weights: np.ndarray | None = None, total_weight: float | None = None
) -> float:
    """The largest t with (weighted) FPR(d < t) <= ``fpr``.

    Args:
        sorted_negative: (N,) negative distances, ascending.
        fpr: target rate in (0, 1).
        weights: (N,) pair weights (bootstrap), default 1.
        total_weight: the weight of *all* negative pairs, when ``sorted_negative`` is a prefix.

    Returns:
        The threshold, or ``inf`` when the pairs given never exceed the allowed weight (then,
        for a prefix, the caller must use more pairs).
    """
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
    # Allowed false-positive weight; the factor keeps e.g. 0.29 * 100 = 28.999... from losing a pair.
    if weights is None:
        total = float(len(sorted_negative) if total_weight is None else total_weight)
        k = math.floor(fpr * total * (1 + 1e-12))
        return float(sorted_negative[k]) if k < len(sorted_negative) else math.inf
    cumulative = np.cumsum(weights)  # (N,)
    total = float(cumulative[-1]) if total_weight is None else float(total_weight)
    j = int(np.searchsorted(cumulative, fpr * total * (1 + 1e-12), side="right"))  # first pair pushing FPR above fpr
    return float(sorted_negative[j]) if j < len(sorted_negative) else math.inf


def _tpr(positive: np.ndarray, threshold: float, weights: np.ndarray | None = None) -> float:
    hit = positive < threshold
    if weights is None:
        return float(hit.mean())
    total = float(weights.sum())
    return float((weights * hit).sum() / total) if total > 0 else math.nan


def calibrate_threshold(
    features: Tensor | np.ndarray,
    pids: Sequence[int] | np.ndarray,
    camids: Sequence[int] | np.ndarray,
    fprs: Sequence[float] = (1e-2, 1e-3),
    metric: Metric = "euclidean",
    cross_camera: bool = True,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    source: str = "",
    progress: bool = True,
) -> Calibration:
    """Same-person thresholds at the given false-positive rates, with identity-bootstrap intervals.

    See the module docstring for the definitions.

    Args:
        features: (N, D) embeddings of labelled test images (identities unseen in training).
        pids, camids: (N,) their identities and cameras.
        fprs: target false-positive rates, each in (0, 1).
        metric: the distance (the model card's).
        cross_camera: only pairs from two different cameras.
        num_bootstrap: bootstrap replicates (>= 1).
        confidence: interval coverage in (0, 1).
        seed: bootstrap seed.
        source: what the images are, for the summary.
        progress: tqdm bar over the replicates.

    Returns:
        A :class:`Calibration` (``pairs`` keeps the pair distances for :func:`plot_calibration`).
    """
    if not fprs:
        raise ValueError("fprs must name at least one false-positive rate")
    for rate in fprs:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"every target false-positive rate must lie in (0, 1), got {rate}")
    if num_bootstrap < 1:
        raise ValueError(f"num_bootstrap must be >= 1, got {num_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    pairs = pair_distances(features, pids, camids, metric, cross_camera)
    neg, pos = pairs.negative, pairs.positive
    num_neg = len(neg)
    points = [threshold_at_fpr(neg, rate) for rate in fprs]

    replicates = _bootstrap(pairs, list(fprs), num_bootstrap, seed, progress)  # (B, R, 2)
    low, high = 50 * (1 - confidence), 50 * (1 + confidence)
    estimates = []
    for r, (rate, t) in enumerate(zip(fprs, points)):
        t_lo, t_hi = np.nanpercentile(replicates[:, r, 0], [low, high])
        p_lo, p_hi = np.nanpercentile(replicates[:, r, 1], [low, high])
        false_pos = int(np.searchsorted(neg, t, side="left"))
        estimates.append(
            ThresholdEstimate(
                target_fpr=float(rate),
                threshold=t,
                interval=(float(t_lo), float(t_hi)),
                tpr=_tpr(pos, t),
                tpr_interval=(float(p_lo), float(p_hi)),
                false_positives=false_pos,
                observed_fpr=false_pos / num_neg,
                resolvable=rate * num_neg >= 1,
            )
        )
    roc_fpr = np.unique(np.concatenate([np.geomspace(1.0 / num_neg, 1.0, 200), list(fprs)]))
    roc_fpr = roc_fpr[roc_fpr < 1.0]
    sorted_pos = np.sort(pos)
    roc_t = np.array([threshold_at_fpr(neg, rate) for rate in roc_fpr])
    roc_tpr = np.searchsorted(sorted_pos, roc_t, side="left") / len(pos)
    return Calibration(
        metric=metric,
        cross_camera=cross_camera,
        thresholds=estimates,
        num_images=pairs.num_images,
        num_identities=len(pairs.identities),
        num_positive_pairs=len(pos),
        num_negative_pairs=num_neg,
        num_bootstrap=num_bootstrap,
        confidence=confidence,
        seed=seed,
        roc_fpr=roc_fpr,
        roc_tpr=roc_tpr,
        source=source,
        pairs=pairs,
    )


def replicate_thresholds(
    pairs: PairDistances, multiplicity: np.ndarray, fprs: Sequence[float], prefix: int | None = None
) -> np.ndarray:
    """Threshold and TPR of one bootstrap replicate with identity multiplicities ``m``.

    A negative pair of identities (a, b) weighs :math:`m_a m_b`, a positive pair of identity a
    weighs :math:`m_a`; the total negative weight is :math:`\tfrac12 m^\top C m`.

    Args:
        pairs: from :func:`pair_distances`.
        multiplicity: (I,) how many times each identity was drawn.
        fprs: target rates.
        prefix: read only the first ``prefix`` sorted negatives, falling back to all when the
            replicate's threshold lies beyond them (the result is the same; only the speed differs).

    Returns:
        (R, 2) threshold and TPR per rate (NaN when the replicate has no negative weight).
    """
    m = np.asarray(multiplicity, dtype=np.float64)
    total = 0.5 * float(m @ pairs.pair_counts @ m)  # weight of all negative pairs
    n = len(pairs.negative) if prefix is None else min(prefix, len(pairs.negative))
    head_w = m[pairs.negative_identities[:n, 0]] * m[pairs.negative_identities[:n, 1]]  # (n,)
    pos_w = m[pairs.positive_identity]  # (P,)
    out = np.full((len(fprs), 2), np.nan)
    if total <= 0:
        return out
    for r, rate in enumerate(fprs):
        t = threshold_at_fpr(pairs.negative[:n], rate, head_w, total)
        if math.isinf(t) and n < len(pairs.negative):  # this replicate needs more than the prefix
            all_w = m[pairs.negative_identities[:, 0]] * m[pairs.negative_identities[:, 1]]
            t = threshold_at_fpr(pairs.negative, rate, all_w, total)
        out[r] = (t, _tpr(pairs.positive, t, pos_w))
    return out


def _bootstrap(pairs: PairDistances, fprs: list[float], num_bootstrap: int, seed: int, progress: bool) -> np.ndarray:
    """(B, R, 2): threshold and TPR of each replicate and target rate."""
    rng = np.random.default_rng(seed)
    num_ids = len(pairs.identities)
    # Long enough for nearly every replicate (20x the expected number of pairs below the threshold).
    prefix = max(4096, math.ceil(20 * max(fprs) * len(pairs.negative)))
    out = np.empty((num_bootstrap, len(fprs), 2))
    for b in tqdm(range(num_bootstrap), desc="bootstrap", disable=not progress, mininterval=2.0):
        multiplicity = rng.multinomial(num_ids, np.full(num_ids, 1.0 / num_ids))  # (I,)
        out[b] = replicate_thresholds(pairs, multiplicity, fprs, prefix)
    return out


def same_person_threshold(calibration: dict[str, Any], fpr: float | None = None) -> tuple[float, float]:
    """Read ``(target_fpr, threshold)`` from a stored calibration (a model card's ``calibration``).

    Args:
        calibration: :meth:`Calibration.to_dict` output.
        fpr: the target rate to use; ``None`` takes the largest stored one.

    Raises:
        ValueError: ``fpr`` was not calibrated (the message lists the stored rates).
    """
    stored = {float(t["target_fpr"]): float(t["threshold"]) for t in calibration["thresholds"]}
    if fpr is None:
        fpr = max(stored)
    for rate, threshold in stored.items():
        if math.isclose(rate, fpr, rel_tol=1e-9):
            return rate, threshold
    raise ValueError(
        f"no threshold calibrated for FPR {fpr}; stored rates: {sorted(stored)} "
        "(run `reid calibrate --fpr ...` to add it)"
    )


def plot_calibration(calibration: Calibration, path: str | os.PathLike[str]) -> Path:
    """Save a two-panel PNG: the ROC with log-scaled FPR, and the distance histograms with the thresholds.

    Each threshold is drawn with its bootstrap interval (a shaded band in the histogram panel,
    a TPR error bar in the ROC panel).

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    roc, hist = fig.subplots(1, 2)
    roc.plot(calibration.roc_fpr, calibration.roc_tpr, color="black", lw=1.5)
    roc.set_xscale("log")
    roc.set_xlabel("false-positive rate (negative pairs with d < t)")
    roc.set_ylabel("true-positive rate")
    roc.set_title(
        f"ROC, {calibration.num_negative_pairs:,} negative / {calibration.num_positive_pairs:,} positive pairs"
    )
    roc.grid(True, which="both", alpha=0.3)
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    for i, t in enumerate(calibration.thresholds):
        color = colors[i % len(colors)]
        err = [[t.tpr - t.tpr_interval[0]], [t.tpr_interval[1] - t.tpr]]
        roc.errorbar(
            [t.target_fpr],
            [t.tpr],
            yerr=err,
            fmt="o",
            color=color,
            capsize=3,
            label=f"FPR {t.target_fpr:.0e}: t = {t.threshold:.3f}, TPR {t.tpr:.2f}",
        )
    roc.legend(loc="lower right", fontsize=8)
    if calibration.pairs is not None:
        pairs = calibration.pairs
        bins = np.linspace(0.0, max(float(pairs.positive.max()), float(pairs.negative[-1])), 60)
        hist.hist(pairs.negative, bins=bins, density=True, alpha=0.5, color="tab:gray", label="different person")
        hist.hist(pairs.positive, bins=bins, density=True, alpha=0.5, color="tab:orange", label="same person")
    for i, t in enumerate(calibration.thresholds):
        color = colors[i % len(colors)]
        hist.axvspan(t.interval[0], t.interval[1], color=color, alpha=0.15)
        label = f"t at FPR {t.target_fpr:.0e} ({calibration.confidence:.0%} CI)"
        hist.axvline(t.threshold, color=color, lw=1.5, label=label)
    hist.set_xlabel(f"{calibration.metric} distance")
    hist.set_ylabel("density")
    hist.set_title("pair distances")
    hist.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
