"""Models: a ResNet backbone factory and one module per work, all returning ``ReIDOutput``."""

from reid_core.models.alignedreid import POOL_TYPES, AlignedReID
from reid_core.models.backbone import BACKBONES, STAGES, ResNetBackbone, StemMaxPool, build_backbone
from reid_core.models.baseline import NECKS, POOLINGS, BaselineNet, GeneralizedMeanPooling, build_global_pooling
from reid_core.models.color_histogram import color_histogram_features, hsv_bins
from reid_core.models.concat_ensemble import ConcatEnsemble
from reid_core.models.digits_net import DigitsConvNet
from reid_core.models.embedding_net import EmbeddingNet
from reid_core.models.ensemblenet import (
    MAX_BRANCHES,
    BranchActivation,
    EnsembleNet,
    PartHead,
    ensemble_loss,
    part_activation_maps,
    part_row_ranges,
)
from reid_core.models.normalized_local import NormalizedLocal
from reid_core.models.outputs import ReIDOutput
from reid_core.models.parameters import TRAINING_ONLY_MODULES, count_parameters
from reid_core.models.qaconv import QAConv, QAConvNet, feature_map_size
from reid_core.models.registry import MODELS, build_model

__all__ = [
    "AlignedReID",
    "BACKBONES",
    "BaselineNet",
    "BranchActivation",
    "ConcatEnsemble",
    "DigitsConvNet",
    "EmbeddingNet",
    "EnsembleNet",
    "GeneralizedMeanPooling",
    "MAX_BRANCHES",
    "MODELS",
    "NECKS",
    "NormalizedLocal",
    "POOLINGS",
    "POOL_TYPES",
    "PartHead",
    "QAConv",
    "QAConvNet",
    "ReIDOutput",
    "ResNetBackbone",
    "STAGES",
    "StemMaxPool",
    "TRAINING_ONLY_MODULES",
    "build_backbone",
    "build_global_pooling",
    "build_model",
    "color_histogram_features",
    "count_parameters",
    "ensemble_loss",
    "feature_map_size",
    "hsv_bins",
    "part_activation_maps",
    "part_row_ranges",
]
