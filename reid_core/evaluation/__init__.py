"""Evaluation: distances, CMC/mAP/mINP/MAP@R with the Market-1501 rule, k-reciprocal re-ranking.

Chapters: 01 (the protocol, worked by hand), 03 (re-ranking), ``book/evaluation_at_scale.md``
(MSMT17-sized test sets).
"""

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
from reid_core.evaluation.rank_counts import GalleryGroups, GridWorkspace, grid_working_bytes, match_ranks
from reid_core.evaluation.per_query_metrics import QueryMetrics, query_metrics
from reid_core.evaluation.rank import (
    DistanceSource,
    RankResult,
    evaluate_features,
    evaluate_rank,
    evaluate_rank_detailed,
)
from reid_core.evaluation.retrieval import GalleryIndex, INDEX_KINDS, build_index, evaluate_topk, recall_at_k, search
from reid_core.evaluation.rerank import (
    MemoryEstimate,
    RerankedTopK,
    re_ranking,
    re_ranking_from_features,
    rerank_memory_estimate,
)

__all__ = [
    "GalleryGroups",
    "GridWorkspace",
    "QueryMetrics",
    "grid_working_bytes",
    "match_ranks",
    "query_metrics",
    "DistanceSource",
    "GalleryIndex",
    "INDEX_KINDS",
    "METRICS",
    "MemoryEstimate",
    "RankResult",
    "RerankedTopK",
    "available_memory_bytes",
    "build_index",
    "check_memory",
    "compute_distance_matrix",
    "evaluate_features",
    "evaluate_rank",
    "evaluate_rank_detailed",
    "evaluate_topk",
    "gallery_matmul",
    "make_distance_fn",
    "matmul_uses_onednn",
    "pairwise_distance",
    "re_ranking",
    "re_ranking_from_features",
    "recall_at_k",
    "rerank_memory_estimate",
    "search",
    "set_cpu_matmul",
]
