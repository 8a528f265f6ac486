"""Models: a ResNet backbone factory and one module per work, all returning ``ReIDOutput``."""

from reid_core.models.alignedreid import AlignedReID
from reid_core.models.backbone import BACKBONES, ResNetBackbone, build_backbone
from reid_core.models.baseline import BaselineNet, GeneralizedMeanPooling
from reid_core.models.color_histogram import color_histogram_features
from reid_core.models.ensemblenet import EnsembleNet, ensemble_loss, part_activation_maps
from reid_core.models.outputs import ReIDOutput
from reid_core.models.qaconv import QAConv, QAConvNet
from reid_core.models.registry import MODELS, build_model

__all__ = [
    "AlignedReID", "BACKBONES", "BaselineNet", "EnsembleNet", "GeneralizedMeanPooling", "MODELS", "QAConv",
    "QAConvNet", "ReIDOutput", "ResNetBackbone", "build_backbone", "build_model", "color_histogram_features",
    "ensemble_loss", "part_activation_maps",
]
