"""Losses and margin heads, each called as ``loss(embeddings, labels)`` or ``head(embeddings, labels)``.

Chapters: 01 (baseline loss), 02 (contrastive, triplet, margin heads), 03 (AlignedReID's
losses, mutual learning), 05 (QAConv's matching losses).
"""

from reid_core.losses.adacos import AdaCos, adacos_fixed_scale
from reid_core.losses.aligned_triplet import AlignedReIDLoss, AlignedTripletLoss
from reid_core.losses.arcface import ArcFace
from reid_core.losses.baseline_loss import BaselineLoss
from reid_core.losses.contrastive import ContrastiveLoss
from reid_core.losses.cosface import CosFace
from reid_core.losses.cross_entropy import LabelSmoothingCrossEntropy
from reid_core.losses.l2_softmax import L2Softmax, l2_softmax_scale_lower_bound
from reid_core.losses.margin_head import MarginHead
from reid_core.losses.mutual import (
    MutualLearningLoss, MutualPair, classification_mutual_loss, metric_mutual_loss,
)
from reid_core.losses.qaconv_losses import PairwiseMatchingLoss, ScoreTripletLoss
from reid_core.losses.sphereface import SphereFace, sphereface_psi
from reid_core.losses.triplet import TripletLoss, hard_example_mining

__all__ = [
    "AdaCos", "AlignedReIDLoss", "AlignedTripletLoss", "ArcFace", "BaselineLoss", "ContrastiveLoss", "CosFace",
    "L2Softmax", "LabelSmoothingCrossEntropy", "MarginHead", "MutualLearningLoss", "MutualPair",
    "PairwiseMatchingLoss", "ScoreTripletLoss", "SphereFace", "TripletLoss", "adacos_fixed_scale",
    "classification_mutual_loss", "hard_example_mining", "l2_softmax_scale_lower_bound", "metric_mutual_loss",
    "sphereface_psi",
]
