r"""Protocol checks: mistakes in an evaluation set-up that make re-ID numbers wrong, found and measured.

The CMC/mAP code (:mod:`reid_core.evaluation.rank`) applies the Market-1501 rule, but it
cannot know whether the sets it is given make sense. On one's own data the usual mistakes are
(fast-reid issue 173, and the questions that keep coming back on re-ID trackers):

* **junk labels**: a query labelled junk (pid -1) or a label below -1 (severe); a query with pid 0
  (a warning: a distractor in Market-1501's convention, which "matches" every gallery distractor,
  but an ordinary identity in MSMT17's);
* **query in the gallery**: the same file, or a copy with the same bytes, on both sides; a copy
  that the rule does not remove (another camera or identity label) is a free rank-1 hit;
* **train/test overlap**: identities, or image files, shared by the training and test sets;
* **queries without a valid match**: every re-ID code skips them, so the metric is computed on
  fewer queries than the user thinks;
* **same-camera matches**: true matches from the query's own camera, which the rule removes
  (if the camera ids are wrong, the rule removes the wrong images or none).

:func:`check_protocol` counts each finding, names a few example files, and, given the
distance matrix, shows the metrics as run next to a *counterfactual*: the metrics without the
mistake (duplicates or overlapping identities removed), or, for the last two, the metrics
with the skipped queries counted as misses and with the same-camera matches left in. Severe
findings stop ``reid evaluate`` and the chapters' evaluations unless the caller allows them.

Chapters: ``notebooks/06_your_own_images.py``; every evaluation through
:func:`reid_core.engine.evaluate.evaluate_distance`.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
from torch import Tensor

from reid_core.evaluation.rank import evaluate_rank_detailed

__all__ = [
    "CHECKS",
    "ProtocolError",
    "ProtocolFinding",
    "ProtocolReport",
    "check_protocol",
    "file_digest",
]

ArrayLike = Union[np.ndarray, Tensor, Sequence[int]]
Severity = Literal["severe", "warning", "info"]
CHECKS = ("junk_labels", "query_in_gallery", "train_test_overlap", "queries_without_match", "same_camera_matches")


class ProtocolError(ValueError):
    """An evaluation set-up has severe protocol mistakes; ``report`` holds the findings."""

    def __init__(self, report: ProtocolReport) -> None:
        super().__init__(report.format() + "\n(pass allow_protocol_errors=True / --allow-protocol-errors to go on)")
        self.report = report


@dataclass
class ProtocolFinding:
    """One mistake found in an evaluation set-up.

    Attributes:
        check: the check that found it (one of :data:`CHECKS`).
        severity: ``"severe"`` (stops an evaluation unless allowed), ``"warning"`` or ``"info"``.
        count: how many items (images, queries or pairs, as ``message`` says) are concerned.
        message: what was found, in one sentence.
        examples: a few of the files (or identities) concerned.
        metrics_as_run: rank-1 / mAP (/ mINP) in percent as the evaluation computes them, or
            ``None`` without a distance matrix.
        counterfactual: what ``counterfactual_metrics`` are (e.g. "without the gallery copies").
        counterfactual_metrics: the metrics in that case, or ``None`` (no distances, or no
            query left).
    """

    check: str
    severity: Severity
    count: int
    message: str
    examples: list[str] = field(default_factory=list)
    metrics_as_run: dict[str, float] | None = None
    counterfactual: str = ""
    counterfactual_metrics: dict[str, float] | None = None


@dataclass
class ProtocolReport:
    """All findings of :func:`check_protocol`.

    Attributes:
        findings: in the order of :data:`CHECKS`.
        checks_run: the checks that ran.
        checks_not_run: check name -> why it could not run (e.g. no training identities given).
    """

    findings: list[ProtocolFinding]
    checks_run: list[str]
    checks_not_run: dict[str, str]

    @property
    def severe(self) -> list[ProtocolFinding]:
        """The findings that stop an evaluation."""
        return [f for f in self.findings if f.severity == "severe"]

    def by_check(self, check: str) -> list[ProtocolFinding]:
        """The findings of one check."""
        return [f for f in self.findings if f.check == check]

    def raise_if_severe(self) -> None:
        """Raise :class:`ProtocolError` if any finding is severe."""
        if self.severe:
            raise ProtocolError(self)

    def format(self) -> str:
        """A readable summary, one block per finding."""
        lines = [
            f"protocol checks: {len(self.checks_run)} run, {len(self.findings)} finding(s), {len(self.severe)} severe"
        ]
        for f in self.findings:
            lines.append(f"  [{f.severity}] {f.check}: {f.message}")
            if f.examples:
                lines.append(f"      e.g. {'; '.join(f.examples)}")
            if f.metrics_as_run is not None:
                cf = _format_metrics(f.counterfactual_metrics) if f.counterfactual_metrics else "not computable"
                lines.append(f"      as run: {_format_metrics(f.metrics_as_run)} | {f.counterfactual}: {cf}")
        for check, reason in self.checks_not_run.items():
            lines.append(f"  [not run] {check}: {reason}")
        if not self.findings:
            lines.append("  no finding")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "findings": [vars(f).copy() for f in self.findings],
            "checks_run": list(self.checks_run),
            "checks_not_run": dict(self.checks_not_run),
        }


def _format_metrics(metrics: dict[str, float]) -> str:
    parts = [f"R1 {metrics['rank1']:.1f}", f"mAP {metrics['mAP']:.1f}"]
    if "mINP" in metrics:
        parts.append(f"mINP {metrics['mINP']:.1f}")
    parts.append(f"({int(metrics['queries'])} queries)")
    return " ".join(parts)


@functools.lru_cache(maxsize=1_000_000)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (cached by path, size and modification time).

    Raises:
        FileNotFoundError: naming the file.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"protocol check: image file '{path}' does not exist") from err
    return _cached_digest(os.fspath(path), stat.st_size, stat.st_mtime_ns)


def _ids(values: ArrayLike, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got {array.dtype}")
    return array.astype(np.int64)


def _check_paths(paths: Sequence[str] | None, n: int, name: str) -> list[str] | None:
    if paths is None:
        return None
    paths = [os.fspath(p) for p in paths]
    if len(paths) != n:
        raise ValueError(f"{name} has {len(paths)} paths for {n} items")
    return paths


class _Metrics:
    """Rank-1 / mAP / mINP (percent) of sub-problems of one distance matrix."""

    def __init__(
        self, distmat: Any, q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray, g_cams: np.ndarray
    ) -> None:
        self.distmat = torch.as_tensor(distmat) if not isinstance(distmat, (np.ndarray, Tensor)) else distmat
        self.q_pids, self.g_pids, self.q_cams, self.g_cams = q_pids, g_pids, q_cams, g_cams

    def __call__(
        self, q_keep: np.ndarray | None = None, g_keep: np.ndarray | None = None, q_cams: np.ndarray | None = None
    ) -> dict[str, float] | None:
        """Metrics on the kept queries / gallery items (bool masks), optionally other query cameras."""
        qi = np.flatnonzero(q_keep) if q_keep is not None else np.arange(len(self.q_pids))
        gi = np.flatnonzero(g_keep) if g_keep is not None else np.arange(len(self.g_pids))
        if qi.size == 0 or gi.size == 0:
            return None
        dist = self.distmat
        if isinstance(dist, Tensor):
            index_q = torch.as_tensor(qi, device=dist.device)
            index_g = torch.as_tensor(gi, device=dist.device)
            sub = dist.index_select(0, index_q).index_select(1, index_g)  # (Q', G')
        else:
            sub = dist[np.ix_(qi, gi)]  # (Q', G')
        cams = self.q_cams if q_cams is None else q_cams
        if not _has_valid_match(self.q_pids[qi], self.g_pids[gi], cams[qi], self.g_cams[gi]).any():
            return None  # no query left with a valid match: no metric
        result = evaluate_rank_detailed(
            sub, self.q_pids[qi], self.g_pids[gi], cams[qi], self.g_cams[gi], max_rank=1, progress=False
        )
        return _metrics_of(result)


def _metrics_of(result: Any) -> dict[str, float]:
    """Percentages (rank-1, mAP, mINP) and the query count of a RankResult."""
    return {
        "rank1": float(result.cmc[0]) * 100,
        "mAP": float(result.mAP) * 100,
        "mINP": float(result.mINP) * 100,
        "queries": float(result.num_valid_queries),
    }


def _pair_keys(pids: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """One int64 key per (pid, camera) pair."""
    return (pids.astype(np.int64) << 32) + (cams.astype(np.int64) & 0xFFFFFFFF)


def _count_in(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """For each key, how many times it occurs in ``table``."""
    values, counts = np.unique(table, return_counts=True)
    if values.size == 0:
        return np.zeros(len(keys), dtype=np.int64)
    pos = np.clip(np.searchsorted(values, keys), 0, values.size - 1)
    return np.where(values[pos] == keys, counts[pos], 0)


def _examples(names: Iterable[str], limit: int) -> list[str]:
    out = []
    for name in names:
        if len(out) == limit:
            break
        out.append(name)
    return out


@dataclass
class _Context:
    """The checked set-up and the findings collected so far."""

    qp: np.ndarray
    gp: np.ndarray
    qc: np.ndarray
    gc: np.ndarray
    q_paths: list[str] | None
    g_paths: list[str] | None
    metrics: _Metrics | None
    as_run: dict[str, float] | None
    compare_bytes: bool
    max_examples: int
    findings: list[ProtocolFinding] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)

    def q_name(self, i: int) -> str:
        return self.q_paths[i] if self.q_paths else f"query #{i} (pid {self.qp[i]}, cam {self.qc[i]})"

    def g_name(self, j: int) -> str:
        return self.g_paths[j] if self.g_paths else f"gallery #{j} (pid {self.gp[j]}, cam {self.gc[j]})"

    def add(
        self,
        check: str,
        severity: Severity,
        count: int,
        message: str,
        examples: Iterable[str],
        counterfactual: str = "",
        compute: Callable[[], dict[str, float] | None] | None = None,
    ) -> None:
        """Record a finding; ``compute`` gives its counterfactual metrics (run only with distances)."""
        measured = self.metrics is not None and compute is not None
        self.findings.append(
            ProtocolFinding(
                check,
                severity,
                int(count),
                message,
                _examples(examples, self.max_examples),
                self.as_run if measured else None,
                counterfactual if compute is not None else "",
                compute() if measured else None,  # type: ignore[misc]
            )
        )


def check_protocol(
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    *,
    q_paths: Sequence[str] | None = None,
    g_paths: Sequence[str] | None = None,
    train_paths: Sequence[str] | None = None,
    train_identities: Iterable[int] | None = None,
    distmat: Any = None,
    compare_bytes: bool = True,
    max_examples: int = 3,
) -> ProtocolReport:
    """Look for the mistakes listed in the module docstring.

    Args:
        q_pids, g_pids: (Q,), (G,) identities as the evaluation uses them (-1 junk, 0 distractor).
        q_camids, g_camids: (Q,), (G,) cameras.
        q_paths, g_paths: the image files, for the file checks (query in gallery, train/test
            images); without them those checks do not run (the report says so).
        train_paths: the training image files (image-level train/test overlap).
        train_identities: the *original* identity labels of the training set. Dataset readers
            relabel training pids to 0..C-1, so their pids cannot be compared with test pids;
            give the labels read from the file names instead. Without them the identity-level
            overlap check does not run (the report says so).
        distmat: (Q, G) distances (numpy or torch): with it every finding carries the metrics as
            run and its counterfactual metrics.
        compare_bytes: also compare file contents (SHA-256), not only paths.
        max_examples: example files named per finding.

    Returns:
        A :class:`ProtocolReport`.

    Raises:
        ValueError: inputs of mismatched lengths or non-integer labels.
        FileNotFoundError: a path that does not exist (file checks only).
    """
    qp, gp = _ids(q_pids, "q_pids"), _ids(g_pids, "g_pids")
    qc, gc = _ids(q_camids, "q_camids"), _ids(g_camids, "g_camids")
    if len(qp) != len(qc) or len(gp) != len(gc):
        raise ValueError(f"q_pids/q_camids have {len(qp)}/{len(qc)} items, g_pids/g_camids {len(gp)}/{len(gc)}")
    if distmat is not None and tuple(distmat.shape) != (len(qp), len(gp)):
        raise ValueError(f"distmat has shape {tuple(distmat.shape)}, expected ({len(qp)}, {len(gp)})")
    metrics = _Metrics(distmat, qp, gp, qc, gc) if distmat is not None else None
    ctx = _Context(
        qp,
        gp,
        qc,
        gc,
        _check_paths(q_paths, len(qp), "q_paths"),
        _check_paths(g_paths, len(gp), "g_paths"),
        metrics,
        metrics() if metrics is not None else None,
        compare_bytes,
        max_examples,
    )
    _check_junk_labels(ctx)
    _check_query_in_gallery(ctx)
    _check_train_test_overlap(ctx, train_paths, train_identities)
    _check_queries_without_match(ctx)
    _check_same_camera_matches(ctx)
    checks_run = [c for c in CHECKS if c not in ctx.not_run]
    return ProtocolReport(findings=ctx.findings, checks_run=checks_run, checks_not_run=ctx.not_run)


def _check_junk_labels(ctx: _Context) -> None:
    """Junk queries and labels below -1 (severe); queries with pid 0 (warning); junk gallery images (info).

    pid 0 marks distractors in Market-1501 and DukeMTMC-reID, where such a query "matches" every
    gallery distractor; in MSMT17 and CUHK03 it is an ordinary identity. The check cannot tell which
    convention the labels follow, so pid-0 queries are a warning, not a reason to stop.
    """
    qp, gp = ctx.qp, ctx.gp
    bad_query = (qp == -1) | (qp < -1)
    bad_gallery = gp < -1
    if bad_query.any() or bad_gallery.any():
        counts = {
            "junk (pid -1)": int((qp == -1).sum()),
            "with a label below -1": int((qp < -1).sum() + bad_gallery.sum()),
        }
        described = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        names = [ctx.q_name(i) for i in np.flatnonzero(bad_query)]
        names += [ctx.g_name(j) for j in np.flatnonzero(bad_gallery)]
        ctx.add(
            "junk_labels",
            "severe",
            int(bad_query.sum() + bad_gallery.sum()),
            f"labels that cannot be evaluated: {described}",
            names,
            "without those images",
            lambda: ctx.metrics(q_keep=~bad_query, g_keep=~bad_gallery),
        )
    zero_query = qp == 0
    if zero_query.any():
        ctx.add(
            "junk_labels",
            "warning",
            int(zero_query.sum()),
            f"{int(zero_query.sum())} queries have pid 0: a distractor label in Market-1501 and DukeMTMC-reID (such a "
            "query matches every gallery distractor), an ordinary identity in MSMT17 and CUHK03",
            (ctx.q_name(i) for i in np.flatnonzero(zero_query)),
            "without those queries",
            lambda: ctx.metrics(q_keep=~zero_query, g_keep=np.ones_like(gp, dtype=bool)),
        )
    junk_gallery = np.flatnonzero(gp == -1)
    if junk_gallery.size:
        ctx.add(
            "junk_labels",
            "info",
            junk_gallery.size,
            f"{junk_gallery.size} gallery images are junk (pid -1); the rule ignores them",
            (ctx.g_name(j) for j in junk_gallery),
        )


def _check_query_in_gallery(ctx: _Context) -> None:
    """The same image file (path or bytes) as a query and in the gallery."""
    if ctx.q_paths is None or ctx.g_paths is None:
        ctx.not_run["query_in_gallery"] = "no query/gallery file paths given"
        return
    pairs = _same_files(ctx.q_paths, ctx.g_paths, ctx.compare_bytes)
    if not pairs:
        return
    q_idx = np.array([q for q, _ in pairs])
    g_idx = np.array([g for _, g in pairs])
    removed_by_rule = ((ctx.gp[g_idx] == ctx.qp[q_idx]) & (ctx.gc[g_idx] == ctx.qc[q_idx])) | (ctx.gp[g_idx] == -1)
    effective = int((~removed_by_rule).sum())
    copies = np.zeros(len(ctx.gp), dtype=bool)
    copies[g_idx] = True
    how = "same path or same bytes" if ctx.compare_bytes else "same path"
    effect = (
        f"{effective} of them are not removed by the same-camera rule (free hits)"
        if effective
        else "the same-camera rule removes each from its own query's list (no free hit)"
    )
    ctx.add(
        "query_in_gallery",
        "severe" if effective else "warning",
        len(pairs),
        f"{len(pairs)} (query, gallery) pairs are the same image ({how}); {effect}",
        (f"{ctx.q_paths[q]} = {ctx.g_paths[g]}" for q, g in pairs),
        "without those gallery copies",
        lambda: ctx.metrics(g_keep=~copies),
    )


def _check_train_test_overlap(
    ctx: _Context, train_paths: Sequence[str] | None, train_identities: Iterable[int] | None
) -> None:
    """Identities (given original training labels) and image files shared by training and test."""
    reasons = []
    if train_identities is None:
        reasons.append("no original training identities given (readers relabel them 0..C-1)")
    else:
        train_ids = {int(i) for i in train_identities} - {0, -1}
        test_ids = set(np.unique(ctx.qp).tolist()) | set(np.unique(ctx.gp).tolist())
        shared = np.array(sorted(train_ids & test_ids), dtype=np.int64)
        if shared.size:
            q_shared, g_shared = np.isin(ctx.qp, shared), np.isin(ctx.gp, shared)
            ctx.add(
                "train_test_overlap",
                "severe",
                shared.size,
                f"{shared.size} identities are in both the training and the test set "
                f"({int(q_shared.sum())} queries, {int(g_shared.sum())} gallery images)",
                (f"pid {p}" for p in shared),
                "without those identities",
                lambda: ctx.metrics(q_keep=~q_shared, g_keep=~g_shared),
            )
    if train_paths is None or ctx.q_paths is None or ctx.g_paths is None:
        reasons.append("no training and test file paths given for the image-level check")
    else:
        train_list = [os.fspath(p) for p in train_paths]
        q_pairs = _same_files(ctx.q_paths, train_list, ctx.compare_bytes)
        g_pairs = _same_files(ctx.g_paths, train_list, ctx.compare_bytes)
        if q_pairs or g_pairs:
            q_leak = np.zeros(len(ctx.qp), dtype=bool)
            g_leak = np.zeros(len(ctx.gp), dtype=bool)
            q_leak[[i for i, _ in q_pairs]] = True
            g_leak[[j for j, _ in g_pairs]] = True
            examples = [f"{ctx.q_paths[i]} = {train_list[t]}" for i, t in q_pairs]
            examples += [f"{ctx.g_paths[j]} = {train_list[t]}" for j, t in g_pairs]
            ctx.add(
                "train_test_overlap",
                "severe",
                int(q_leak.sum() + g_leak.sum()),
                f"{int(q_leak.sum())} query and {int(g_leak.sum())} gallery images are also training images",
                examples,
                "without those test images",
                lambda: ctx.metrics(q_keep=~q_leak, g_keep=~g_leak),
            )
    if len(reasons) == 2:
        ctx.not_run["train_test_overlap"] = "; ".join(reasons)
    elif reasons:
        ctx.not_run["train_test_overlap (in part)"] = reasons[0]


def _check_queries_without_match(ctx: _Context) -> None:
    """Queries with no gallery image of their identity from another camera (the metrics skip them)."""
    valid = _has_valid_match(ctx.qp, ctx.gp, ctx.qc, ctx.gc)
    missing = np.flatnonzero(~valid)
    if not missing.size:
        return
    num_q = len(ctx.qp)

    def as_misses() -> dict[str, float] | None:
        # A skipped query counted as a miss adds 0 to every sum and 1 to the denominator.
        if ctx.as_run is None:
            return None
        scale = ctx.as_run["queries"] / num_q
        return {**{k: v * scale for k, v in ctx.as_run.items() if k != "queries"}, "queries": float(num_q)}

    ctx.add(
        "queries_without_match",
        "severe" if missing.size == num_q else "warning",
        missing.size,
        f"{missing.size} of {num_q} queries have no valid match (no gallery image of their identity from "
        "another camera); the metrics skip them",
        (ctx.q_name(i) for i in missing),
        "counting them as misses",
        as_misses,
    )


def _check_same_camera_matches(ctx: _Context) -> None:
    """True matches seen by the query's own camera, which the rule removes (counterfactual: kept)."""
    per_query = _count_in(_pair_keys(ctx.qp, ctx.qc), _pair_keys(ctx.gp, ctx.gc)) * (ctx.qp > 0)  # (Q,)
    n_pairs = int(per_query.sum())
    if not n_pairs:
        return
    # A camera no gallery image has: the rule then removes nothing.
    elsewhere = np.full_like(ctx.qc, int(ctx.gc.min()) - 1)
    ctx.add(
        "same_camera_matches",
        "info",
        n_pairs,
        f"{n_pairs} true matches are seen by the query's own camera ({int((per_query > 0).sum())} queries); "
        "the rule removes them",
        (ctx.q_name(i) for i in np.flatnonzero(per_query)),
        "if they were left in",
        lambda: ctx.metrics(q_cams=elsewhere),
    )


def _has_valid_match(qp: np.ndarray, gp: np.ndarray, qc: np.ndarray, gc: np.ndarray) -> np.ndarray:
    """(Q,) bool: some gallery image has the query's pid, is not junk, and comes from another camera."""
    usable = gp != -1
    same_pid = _count_in(qp, gp[usable])
    same_pid_cam = _count_in(_pair_keys(qp, qc), _pair_keys(gp[usable], gc[usable]))
    return (same_pid - same_pid_cam) > 0


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError as err:
        raise FileNotFoundError(f"protocol check: image file '{path}' does not exist") from err


def _same_files(a: Sequence[str], b: Sequence[str], compare_bytes: bool) -> list[tuple[int, int]]:
    """All (i, j) with ``a[i]`` and ``b[j]`` the same file (resolved path) or, optionally, the same bytes.

    Only files whose size occurs on both sides are hashed, so disjoint sets cost one ``stat`` per file.
    """
    by_path: dict[str, list[int]] = {}
    for j, path in enumerate(b):
        by_path.setdefault(str(Path(path).resolve()), []).append(j)
    pairs = {(i, j) for i, path in enumerate(a) for j in by_path.get(str(Path(path).resolve()), [])}
    if compare_bytes:
        sizes_a = [_size(p) for p in a]
        sizes_b = [_size(p) for p in b]
        common = set(sizes_a) & set(sizes_b)
        by_digest: dict[str, list[int]] = {}
        for j, path in enumerate(b):
            if sizes_b[j] in common:
                by_digest.setdefault(file_digest(path), []).append(j)
        for i, path in enumerate(a):
            if sizes_a[i] in common:
                pairs.update((i, j) for j in by_digest.get(file_digest(path), []))
    return sorted(pairs)
