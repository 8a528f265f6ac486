"""Evaluation: distances, CMC/mAP/mINP/MAP@R with the Market-1501 rule, k-reciprocal re-ranking,
protocol checks, same-person thresholds.

Chapters: 01 (the protocol, worked by hand), 03 (re-ranking), ``book/evaluation_at_scale.md``
(MSMT17-sized test sets).
"""

from reid_core.evaluation.calibration import (
    Calibration,
    PairDistances,
    ThresholdEstimate,
    calibrate_threshold,
    pair_distances,
    plot_calibration,
    replicate_thresholds,
    same_person_threshold,
    threshold_at_fpr,
)
from reid_core.evaluation.chance import chance_cmc
from reid_core.evaluation.distance import (
    METRICS,
    available_memory_bytes,
    check_memory,
    compute_distance_matrix,
    gallery_matmul,
    make_distance_fn,
    matmul_uses_onednn,
    pairwise_distance,
    set_cpu_matmul,
)
from reid_core.evaluation.per_query_metrics import QueryMetrics, query_metrics
from reid_core.evaluation.protocol import (
    CHECKS,
    ProtocolError,
    ProtocolFinding,
    ProtocolReport,
    check_protocol,
    file_digest,
)
from reid_core.evaluation.rank import (
    DistanceSource,
    RankResult,
    evaluate_features,
    evaluate_rank,
    evaluate_rank_detailed,
)
from reid_core.evaluation.rank_counts import GalleryGroups, GridWorkspace, grid_working_bytes, match_ranks
from reid_core.evaluation.rerank import (
    MemoryEstimate,
    RerankedTopK,
    re_ranking,
    re_ranking_from_features,
    rerank_memory_estimate,
)
from reid_core.evaluation.retrieval import INDEX_KINDS, GalleryIndex, build_index, evaluate_topk, recall_at_k, search

__all__ = [
    "CHECKS",
    "Calibration",
    "DistanceSource",
    "GalleryGroups",
    "GalleryIndex",
    "GridWorkspace",
    "INDEX_KINDS",
    "METRICS",
    "MemoryEstimate",
    "PairDistances",
    "ProtocolError",
    "ProtocolFinding",
    "ProtocolReport",
    "QueryMetrics",
    "RankResult",
    "RerankedTopK",
    "ThresholdEstimate",
    "available_memory_bytes",
    "build_index",
    "calibrate_threshold",
    "chance_cmc",
    "check_memory",
    "check_protocol",
    "compute_distance_matrix",
    "evaluate_features",
    "evaluate_rank",
    "evaluate_rank_detailed",
    "evaluate_topk",
    "file_digest",
    "gallery_matmul",
    "grid_working_bytes",
    "make_distance_fn",
    "match_ranks",
    "matmul_uses_onednn",
    "pair_distances",
    "pairwise_distance",
    "plot_calibration",
    "query_metrics",
    "re_ranking",
    "re_ranking_from_features",
    "recall_at_k",
    "replicate_thresholds",
    "rerank_memory_estimate",
    "same_person_threshold",
    "search",
    "set_cpu_matmul",
    "threshold_at_fpr",
]
