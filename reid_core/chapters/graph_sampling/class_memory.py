r"""QAConv 1.x's class memory: the baseline whose training time Graph Sampling cuts.

Before Graph Sampling, QAConv learnt by matching every training image against a *memory* of
all C classes: the memory holds the latest feature map of each class, and the loss is a
binary cross-entropy of the image's score against every class in it, with a focal weight
(Liao & Shao, ECCV 2020, :cite:`liao2020qaconv`; QAConv 1.x code ``ClassMemoryLoss``):

.. math::
    \ell(x, y) = \sum_{c \in V} w_c\,\mathrm{BCE}\big(\mathrm{QAConv}(F_x, M_c), [c = y]\big),
    \qquad w_c = \begin{cases} (1 - p_c)^\gamma & c = y \\ p_c^\gamma & c \ne y \end{cases},
    \quad p_c = \sigma(\mathrm{QAConv}(F_x, M_c)),

with :math:`\gamma = 2` and :math:`V` the classes whose memory has been written (a class's
first image has no positive to match). After the loss, :math:`M_y \leftarrow F_x` (detached)
for every image of the batch. Each iteration scores B x C pairs, where in-batch pairwise
learning (QAConv 2.x, with PK or GS batches) scores B x B: the cost that "learning with
classification parameters or class memory" incurs and that the GS paper's training-time
figure (arXiv 2104.01546 v4 abstract: 25.4 h to 2 h on RandPerson) is measured against.

Chapter: ``notebooks/05_graph_sampling.py``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.models.qaconv import QAConv

__all__ = ["ClassMemoryCriterion"]


class ClassMemoryCriterion(nn.Module):
    """The trainer's criterion for QAConv 1.x: focal BCE of each image against a memory of every class.

    Args:
        matcher: the :class:`~reid_core.models.qaconv.QAConv` head.
        num_classes: C, training labels are ``0..C-1``.
        gamma: the focal exponent (2 in QAConv 1.x).
        track: keep :attr:`log` (matching accuracy against the memory, per iteration).

    Attributes:
        memory: (C, d, h, w) the latest feature map of each class (a buffer).
        valid: (C,) whether the class's memory has been written.
        log: per training iteration ``{"accuracy": ...}``, the share of images whose own class
            scores highest among the valid classes.

    Returns (``forward``):
        ``{"class_memory": loss}``, the mean over the batch of the summed focal BCE.
    """

    def __init__(self, matcher: QAConv, num_classes: int, gamma: float = 2.0, track: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.matcher = matcher
        self.gamma = gamma
        self.track = track
        shape = (num_classes, matcher.num_features, matcher.height, matcher.width)
        self.register_buffer("memory", torch.zeros(shape))
        self.register_buffer("valid", torch.zeros(num_classes, dtype=torch.bool))
        self.log: list[dict[str, float]] = []

    def forward(self, output: Any, labels: Tensor) -> dict[str, Tensor]:
        """Args: output with ``feature_map`` (B, d, h, w); labels (B,). Returns: {"class_memory": loss}."""
        fmap = getattr(output, "feature_map", None)
        if fmap is None:
            raise ValueError("output must carry a feature_map (B, d, h, w): use QAConvNet")
        if labels.min() < 0 or labels.max() >= self.memory.shape[0]:
            raise ValueError(f"labels must lie in [0, {self.memory.shape[0]}), got [{labels.min()}, {labels.max()}]")
        classes = self.valid.nonzero().squeeze(1)  # (V,)
        if classes.numel() == 0:  # the very first batch: nothing to match against yet
            loss = fmap.sum() * 0.0
        else:
            scores = self.matcher(fmap, self.memory[classes]).float()  # (B, V)
            target = (labels.unsqueeze(1) == classes.unsqueeze(0)).float()  # (B, V)
            bce = F.binary_cross_entropy_with_logits(scores, target, reduction="none")  # (B, V)
            with torch.no_grad():
                prob = scores.sigmoid()
                weight = torch.where(target > 0, 1.0 - prob, prob).pow(self.gamma)  # focal weight
            loss = (bce * weight).sum(dim=1).mean()
            if self.track and self.training:
                with torch.no_grad():
                    best = classes[scores.argmax(dim=1)]  # (B,)
                    self.log.append({"accuracy": float((best == labels).float().mean())})
        with torch.no_grad():  # the latest map of each class; with K images per class the last wins
            self.memory[labels] = fmap.detach().float()
            self.valid[labels] = True
        return {"class_memory": loss}
