"""Evaluation: distances, CMC/mAP with the Market-1501 rule, k-reciprocal re-ranking, protocol checks,
same-person thresholds.

Chapters: 01 (the protocol, worked by hand), 03 (re-ranking), ``book/evaluation_at_scale.md``
(MSMT17-sized test sets).
"""

from reid_core.evaluation.distance import (
    available_memory_bytes, check_memory, compute_distance_matrix, make_distance_fn, pairwise_distance, set_cpu_matmul,
)
from reid_core.evaluation.rank import RankResult, evaluate_features, evaluate_rank, evaluate_rank_detailed
from reid_core.evaluation.rerank import RerankedTopK, re_ranking, re_ranking_from_features
from reid_core.evaluation.protocol import ProtocolError, ProtocolReport, check_protocol
from reid_core.evaluation.calibration import Calibration, calibrate_threshold, plot_calibration

__all__ = [
    "Calibration", "ProtocolError", "ProtocolReport", "calibrate_threshold", "check_protocol", "plot_calibration",
    "RankResult", "RerankedTopK", "available_memory_bytes", "check_memory", "compute_distance_matrix",
    "evaluate_features", "evaluate_rank", "evaluate_rank_detailed", "make_distance_fn", "pairwise_distance",
    "re_ranking", "re_ranking_from_features", "set_cpu_matmul",
]
