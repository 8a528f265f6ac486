"""The one output type every model in :mod:`reid_core.models` returns.

A model returns the same dataclass in train and eval mode (no ``forward`` whose return
changes with ``self.training``); fields a model has no use for stay ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["ReIDOutput"]


@dataclass
class ReIDOutput:
    """What a re-ID model computes for a batch of B images.

    Attributes:
        feat: (B, D) the retrieval feature used at test time.
        logits: (B, C) identity logits, a list of (B, C) for multi-part models, or ``None``.
        global_feat: (B, D') the feature the metric loss sees (e.g. before BNNeck), or ``None``.
        local: (B, S, d) stripe features for local alignment (AlignedReID), or ``None``.
        feature_map: (B, C', H, W) a spatial map (QAConv, activation figures), or ``None``.
        parts: list of (B, d) part features (EnsembleNet), or ``None``.
    """

    feat: Tensor
    logits: Tensor | list[Tensor] | None = None
    global_feat: Tensor | None = None
    local: Tensor | None = None
    feature_map: Tensor | None = None
    parts: list[Tensor] | None = None
