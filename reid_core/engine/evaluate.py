"""Evaluate a model on query/gallery loaders: features -> distances -> (re-ranking) -> CMC/mAP."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reid_core.engine.distributed import extract_features_distributed
from reid_core.engine.features import Features, extract_features
from reid_core.evaluation.distance import compute_distance_matrix
from reid_core.evaluation.protocol import ProtocolError, ProtocolReport, check_protocol

__all__ = ["EvalResult", "evaluate_reid", "evaluate_distance", "metrics_from_cmc"]


def metrics_from_cmc(cmc: Any, mAP: float) -> dict[str, float]:
    """Rank-1/5/10 and mAP as percentages from an ``evaluate_rank`` result."""

    def at(k: int) -> float:
        return float(cmc[k - 1]) * 100 if len(cmc) >= k else float("nan")

    return {"rank1": at(1), "rank5": at(5), "rank10": at(10), "mAP": float(mAP) * 100}


@dataclass
class EvalResult:
    """CMC/mAP of one evaluation, with what produced them (for figures).

    Attributes:
        cmc: (max_rank,) CMC curve in [0, 1].
        mAP: mean average precision in [0, 1].
        metrics: rank1/rank5/rank10/mAP as percentages.
        distmat: (Q, G) distances used for ranking.
        query, gallery: the extracted features (``None`` when given a distance directly).
    """

    cmc: np.ndarray
    mAP: float
    metrics: dict[str, float]
    distmat: Tensor
    query: Features | None = None
    gallery: Features | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        m = self.metrics
        return f"R1 {m['rank1']:.1f}  R5 {m['rank5']:.1f}  R10 {m['rank10']:.1f}  mAP {m['mAP']:.1f}"


def evaluate_distance(
    distmat: Tensor | np.ndarray,
    query: Features,
    gallery: Features,
    rerank: bool = False,
    q_q_dist: Tensor | None = None,
    g_g_dist: Tensor | None = None,
    max_rank: int = 50,
    *,
    query_paths: Sequence[str] | None = None,
    gallery_paths: Sequence[str] | None = None,
    allow_protocol_errors: bool = False,
) -> EvalResult:
    """CMC/mAP of a precomputed (Q, G) distance; with ``rerank`` also needs the q-q and g-g blocks.

    The protocol checks (:func:`reid_core.evaluation.protocol.check_protocol`) run first, on the
    labels and, given ``query_paths`` / ``gallery_paths``, on the files; their report is in
    ``result.extra["protocol"]``. A severe finding raises :class:`ProtocolError` unless
    ``allow_protocol_errors``; a warning is issued as a Python warning.
    """
    from reid_core.evaluation.rank import evaluate_rank

    distmat = torch.as_tensor(distmat)
    if rerank:
        from reid_core.evaluation.rerank.k_reciprocal import re_ranking

        if q_q_dist is None or g_g_dist is None:
            raise ValueError("rerank=True needs q_q_dist and g_g_dist")
        distmat = torch.as_tensor(re_ranking(distmat, q_q_dist, g_g_dist))
    report = check_protocol(
        query.pids,
        gallery.pids,
        query.camids,
        gallery.camids,
        q_paths=query_paths,
        g_paths=gallery_paths,
        distmat=distmat,
    )
    _raise_or_warn(report, allow_protocol_errors)
    max_rank = min(max_rank, distmat.shape[1])
    cmc, mAP = evaluate_rank(distmat, query.pids, gallery.pids, query.camids, gallery.camids, max_rank=max_rank)
    return EvalResult(
        np.asarray(cmc), float(mAP), metrics_from_cmc(cmc, mAP), distmat, query, gallery, extra={"protocol": report}
    )


def _raise_or_warn(report: ProtocolReport, allow_errors: bool) -> None:
    if report.severe and not allow_errors:
        raise ProtocolError(report)
    for finding in report.findings:
        if finding.severity != "info":
            warnings.warn(f"protocol check {finding.check}: {finding.message}", stacklevel=3)


def evaluate_reid(
    model: nn.Module,
    query_loader: torch.utils.data.DataLoader,
    gallery_loader: torch.utils.data.DataLoader,
    metric: str = "euclidean",
    flip: bool = True,
    normalize: bool = False,
    rerank: bool = False,
    field: str = "feat",
    distance_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
    max_rank: int = 50,
    progress: bool = True,
    split_across_processes: bool = False,
    precision: str = "auto",
    allow_protocol_errors: bool = False,
) -> EvalResult:
    """Extract query and gallery features and evaluate with the Market-1501 protocol.

    Args:
        model: returns a ``ReIDOutput``.
        query_loader, gallery_loader: test loaders (dataset order).
        metric: distance for ``feat``-like fields (see ``compute_distance_matrix``).
        flip: flip-averaged features.
        normalize: L2-normalise features first.
        rerank: apply k-reciprocal re-ranking (Zhong et al. 2017).
        field: output field to extract (``"feat"``, ``"local"``, ``"feature_map"``).
        distance_fn: ``distance_fn(a, b) -> (len(a), len(b))`` for fields that need a special
            distance (aligned local distance, QAConv); default: ``compute_distance_matrix``.
        device: where the model runs.
        max_rank: CMC length.
        split_across_processes: under ``torchrun``, each process extracts its share of the
            query and gallery and receives all of them
            (:func:`~reid_core.engine.distributed.extract_features_distributed`); every process
            must call it, and every process computes the same distances and metrics.
        precision: autocast of the feature extraction (see :func:`extract_features`).
        allow_protocol_errors: evaluate despite severe protocol findings (see :func:`evaluate_distance`;
            the loaders' image paths are checked too when their datasets list ``items``).
    """
    extract = extract_features_distributed if split_across_processes else extract_features
    options = dict(device=device, field=field, flip=flip, normalize=normalize, progress=progress, precision=precision)
    query = extract(model, query_loader, desc="query", **options)
    gallery = extract(model, gallery_loader, desc="gallery", **options)
    dist = distance_fn or (lambda a, b: compute_distance_matrix(a, b, metric=metric))  # type: ignore[arg-type]
    qg = dist(query.features, gallery.features)
    qq = dist(query.features, query.features) if rerank else None
    gg = dist(gallery.features, gallery.features) if rerank else None
    return evaluate_distance(
        qg,
        query,
        gallery,
        rerank=rerank,
        q_q_dist=qq,
        g_g_dist=gg,
        max_rank=max_rank,
        query_paths=_paths(query_loader),
        gallery_paths=_paths(gallery_loader),
        allow_protocol_errors=allow_protocol_errors,
    )


def _paths(loader: torch.utils.data.DataLoader) -> list[str] | None:
    """The image paths of a loader over an :class:`~reid_core.data.ImageDataset`, else ``None``."""
    items = getattr(loader.dataset, "items", None)
    return [path for path, _, _ in items] if items is not None else None
