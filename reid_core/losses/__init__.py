"""Losses and margin heads, each called as ``loss(embeddings, labels)`` or ``head(embeddings, labels)``.

Batch scope under ``torchrun`` (N processes, B samples each): the triplet, contrastive and QAConv
score losses and AdaCos's dynamic scale take ``batch_scope="global"`` (default: they see the N x B
samples of the step, gathered with gradient, as one process holding the whole batch would) or
``"local"`` (this process's B). Cross-entropy and the margin heads are per sample and need no
batch; AlignedReID's losses and the mutual-learning losses compare samples of the local batch.

Chapters: 01 (baseline loss), 02 (contrastive, triplet, margin heads), 03 (AlignedReID's
losses, mutual learning), 05 (QAConv's matching losses).
"""

from reid_core.losses.adacos import AdaCos, adacos_fixed_scale
from reid_core.losses.aligned_triplet import MINING, AlignedReIDLoss, AlignedTripletLoss
from reid_core.losses.arcface import ArcFace
from reid_core.losses.baseline_loss import BaselineLoss
from reid_core.losses.contrastive import ContrastiveLoss
from reid_core.losses.cosface import CosFace
from reid_core.losses.cross_entropy import LabelSmoothingCrossEntropy
from reid_core.losses.l2_softmax import L2Softmax, l2_softmax_scale_lower_bound
from reid_core.losses.margin_head import MarginHead, check_scale, safe_normalize, safe_sqrt
from reid_core.losses.metric_criterion import (
    DEFAULT_HPARAMS,
    HEAD_LOSSES,
    LOSS_TITLES,
    METRIC_LOSSES,
    PAIR_LOSSES,
    MetricCriterion,
    build_metric_criterion,
    sphereface_gamma_for,
)
from reid_core.losses.mutual import (
    MutualLearningLoss,
    MutualOutput,
    MutualPair,
    classification_mutual_loss,
    metric_mutual_loss,
)
from reid_core.losses.qaconv_criterion import QAConvCriterion, score_statistics
from reid_core.losses.qaconv_losses import PairwiseMatchingLoss, ScoreTripletLoss, hardest_scores, matching_accuracy
from reid_core.losses.sphereface import SphereFace, chebyshev_cos_multiple, sphereface_psi
from reid_core.losses.triplet import TripletLoss, hard_example_mining

__all__ = [
    "AdaCos",
    "AlignedReIDLoss",
    "AlignedTripletLoss",
    "ArcFace",
    "BaselineLoss",
    "ContrastiveLoss",
    "CosFace",
    "DEFAULT_HPARAMS",
    "HEAD_LOSSES",
    "L2Softmax",
    "LOSS_TITLES",
    "LabelSmoothingCrossEntropy",
    "METRIC_LOSSES",
    "MINING",
    "MarginHead",
    "MetricCriterion",
    "MutualLearningLoss",
    "MutualOutput",
    "MutualPair",
    "PAIR_LOSSES",
    "PairwiseMatchingLoss",
    "QAConvCriterion",
    "ScoreTripletLoss",
    "SphereFace",
    "TripletLoss",
    "adacos_fixed_scale",
    "build_metric_criterion",
    "chebyshev_cos_multiple",
    "check_scale",
    "classification_mutual_loss",
    "hard_example_mining",
    "hardest_scores",
    "l2_softmax_scale_lower_bound",
    "matching_accuracy",
    "metric_mutual_loss",
    "safe_normalize",
    "safe_sqrt",
    "score_statistics",
    "sphereface_gamma_for",
    "sphereface_psi",
]
