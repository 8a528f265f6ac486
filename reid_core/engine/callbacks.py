"""Trainer callbacks that are not tied to one paper's sampler.

Chapter: 05 (QAConv keeps its backbone's BatchNorm frozen).
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["FreezeBackboneBN"]


class FreezeBackboneBN:
    """Trainer callback: keep ``model.backbone`` in eval mode while training (QAConv 2.1).

    The paper's code calls ``model.eval()`` on the ImageNet-pretrained backbone during
    training so that its BN running statistics stay fixed "for better generalisation"; the
    BN layers of the QAConv head train normally. The trainer calls ``model.train()`` before
    ``on_epoch_start``, so this hook runs there.
    """

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        backbone = getattr(trainer.model, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise ValueError("FreezeBackboneBN needs a model with a .backbone module")
        backbone.eval()
