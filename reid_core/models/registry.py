"""The model registry: one name per architecture, built with :func:`build_model`.

Every model returns a :class:`~reid_core.models.outputs.ReIDOutput` in train and eval mode;
``tests/test_model_registry.py`` runs forward, backward and the feature shapes for every entry,
so a new model is tested without new test code (the timm way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from reid_core.models.alignedreid import AlignedReID
from reid_core.models.baseline import BaselineNet
from reid_core.models.ensemblenet import EnsembleNet
from reid_core.models.qaconv import QAConvNet

__all__ = ["MODELS", "build_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "baseline": BaselineNet,  # Luo et al. 2019, chapter 01
    "alignedreid": AlignedReID,  # Zhang et al. 2017, chapter 03
    "ensemblenet": EnsembleNet,  # Wang et al. 2019, chapter 04
    "qaconv": QAConvNet,  # Liao & Shao 2020/2022, chapter 05
}


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build ``MODELS[name](num_classes, **kwargs)``; an unknown name lists the valid ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    return MODELS[name](num_classes, **kwargs)
