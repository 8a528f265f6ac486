r"""One criterion for the eight losses of the metric-learning chapter, so only the loss changes.

The chapter trains the same embedding network with each of

* ``softmax``: a plain linear classifier :math:`z = Wx + b` and cross-entropy;
* ``contrastive``: Hadsell et al.'s pair loss on every pair of the batch;
* ``triplet``: Hermans et al.'s batch-hard triplet loss;
* ``l2_softmax``, ``sphereface``, ``cosface``, ``arcface``, ``adacos``: the margin heads of
  :mod:`reid_core.losses` followed by cross-entropy.

The pair losses see the L2-normalised embedding :math:`\hat x = x / \lVert x\rVert` (as
FaceNet, Schroff et al. 2015), so every loss works on the unit sphere and the margins are in
the same units for every run (a chord length in [0, 2]).

The criterion follows the trainer's API, ``criterion(output, labels) -> {name: loss}``, and
holds the head, so the trainer optimises the class weights together with the network.

Chapter: ``notebooks/02_metric_learning.py``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.losses.adacos import AdaCos
from reid_core.losses.arcface import ArcFace
from reid_core.losses.contrastive import ContrastiveLoss
from reid_core.losses.cosface import CosFace
from reid_core.losses.l2_softmax import L2Softmax
from reid_core.losses.margin_head import safe_normalize
from reid_core.losses.sphereface import SphereFace
from reid_core.losses.triplet import TripletLoss
from reid_core.models.outputs import ReIDOutput

__all__ = [
    "METRIC_LOSSES",
    "HEAD_LOSSES",
    "PAIR_LOSSES",
    "LOSS_TITLES",
    "DEFAULT_HPARAMS",
    "MetricCriterion",
    "build_metric_criterion",
    "sphereface_gamma_for",
]

HEAD_LOSSES = ("softmax", "l2_softmax", "sphereface", "cosface", "arcface", "adacos")
PAIR_LOSSES = ("contrastive", "triplet")
METRIC_LOSSES = ("softmax", "contrastive", "triplet", "l2_softmax", "sphereface", "cosface", "arcface", "adacos")

# how figures, tables and results JSON name each loss
LOSS_TITLES = {
    "softmax": "softmax",
    "contrastive": "contrastive (siamese)",
    "triplet": "triplet (batch-hard)",
    "l2_softmax": "L2-softmax",
    "sphereface": "SphereFace",
    "cosface": "CosFace",
    "arcface": "ArcFace",
    "adacos": "AdaCos",
}

_HEADS: dict[str, type[nn.Module]] = {
    "l2_softmax": L2Softmax,
    "sphereface": SphereFace,
    "cosface": CosFace,
    "arcface": ArcFace,
    "adacos": AdaCos,
}

# Defaults for few classes (tens to hundreds). The margin heads' scale is the common code
# default s = 30 (ronghuaiyang/arcface-pytorch, 4uiiurz1/pytorch-adacos) rather than the
# papers' s = 64, chosen for face training sets of 10k (CASIA-WebFace) to 85k (MS1MV2,
# ArcFace's main model) identities.
DEFAULT_HPARAMS: dict[str, dict[str, Any]] = {
    "softmax": {},
    "contrastive": {"margin": 1.0},
    "triplet": {"margin": 0.3},
    "l2_softmax": {"scale": 16.0},
    "sphereface": {"m": 4},
    "cosface": {"s": 30.0, "m": 0.35},
    "arcface": {"s": 30.0, "m": 0.5},
    "adacos": {"dynamic": True},
}


def sphereface_gamma_for(iterations: int, base: float = 1000.0, lambda_min: float = 5.0, power: float = 1.0) -> float:
    r"""The annealing rate :math:`\gamma` with which SphereFace's :math:`\lambda` reaches its floor at ``iterations``.

    Solves :math:`base\,(1 + \gamma\,it)^{-power} = \lambda_{min}` for :math:`\gamma`:
    :math:`\gamma = ((base / \lambda_{min})^{1/power} - 1) / it`. The Caffe schedule
    (:math:`\gamma = 0.12`) reaches :math:`\lambda_{min} = 5` after ~1,660 iterations, far more
    than a toy run has; scaling :math:`\gamma` keeps the *shape* of the schedule.

    Args:
        iterations: the iteration at which lambda should reach ``lambda_min`` (>= 1).
        base, lambda_min, power: the schedule's other constants (Liu et al. 2017 prototxt).

    Returns:
        gamma (> 0).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not 0 < lambda_min < base or power <= 0:
        raise ValueError(f"need 0 < lambda_min < base and power > 0, got {lambda_min}, {base}, {power}")
    return ((base / lambda_min) ** (1.0 / power) - 1.0) / iterations


class MetricCriterion(nn.Module):
    """``criterion(output, labels) -> {name: loss}`` for a classification head or a pair loss.

    Args:
        name: the loss name (the key of the returned dict, logged by the trainer).
        head: a classification head (``nn.Linear`` or a margin head) followed by
            cross-entropy; ``None`` for pair losses.
        pair_loss: ``loss(embeddings, labels) -> scalar`` (contrastive, triplet); ``None``
            for heads.
        normalize_pairs: L2-normalise the embedding before the pair loss.

    Attributes:
        head: the head (its ``weight`` is the (C, D) class-weight matrix), or ``None``.
    """

    def __init__(
        self, name: str, head: nn.Module | None = None, pair_loss: nn.Module | None = None, normalize_pairs: bool = True
    ) -> None:
        super().__init__()
        if (head is None) == (pair_loss is None):
            raise ValueError("MetricCriterion needs exactly one of head and pair_loss")
        self.name, self.head, self.pair_loss, self.normalize_pairs = name, head, pair_loss, normalize_pairs

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, C) logits of the head (with the margin when ``labels`` is given)."""
        if self.head is None:
            raise ValueError(f"loss {self.name!r} has no classification head")
        if isinstance(self.head, nn.Linear):
            if embeddings.dim() != 2 or embeddings.shape[1] != self.head.in_features:
                raise ValueError(
                    f"loss {self.name!r}: embeddings must be (B, {self.head.in_features}) (the head's "
                    f"embedding_dim), got {tuple(embeddings.shape)}"
                )
            return self.head(embeddings)  # (B, C)
        return self.head(embeddings, labels)  # (B, C)

    def forward(self, output: ReIDOutput | Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Args: output (a ``ReIDOutput`` whose ``feat`` is (B, D), or the (B, D) tensor), labels (B,)."""
        emb = output if isinstance(output, Tensor) else output.feat  # (B, D)
        emb = emb.float()  # the losses' math runs in float32 even under autocast
        if self.head is not None:
            return {self.name: F.cross_entropy(self.logits(emb, labels), labels)}
        assert self.pair_loss is not None  # __init__ guarantees exactly one of head / pair_loss
        x = safe_normalize(emb) if self.normalize_pairs else emb  # (B, D)
        return {self.name: self.pair_loss(x, labels)}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, normalize_pairs={self.normalize_pairs}"


def build_metric_criterion(loss: str, embedding_dim: int, num_classes: int, **hparams: Any) -> MetricCriterion:
    """Build the criterion of one of :data:`METRIC_LOSSES`.

    Args:
        loss: the loss name.
        embedding_dim: D.
        num_classes: C, the number of training classes (unused by the pair losses).
        **hparams: overrides of :data:`DEFAULT_HPARAMS` ``[loss]``, passed to the loss or head
            constructor (``margin``, ``s``, ``m``, ``scale``, ``gamma``, ``track_history``...).

    Returns:
        The :class:`MetricCriterion`.

    Example:
        >>> crit = build_metric_criterion("arcface", 3, 10, m=0.3)
        >>> crit(torch.randn(8, 3), torch.arange(8) % 10)  # {"arcface": tensor(...)}
    """
    if loss not in METRIC_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid: {list(METRIC_LOSSES)}")
    kwargs = {**DEFAULT_HPARAMS[loss], **hparams}
    if loss == "softmax":
        bias = kwargs.pop("bias", True)
        if kwargs:
            raise ValueError(f"softmax takes only 'bias', got {sorted(kwargs)}")
        return MetricCriterion(loss, head=nn.Linear(embedding_dim, num_classes, bias=bias))
    if loss == "contrastive":
        normalize = kwargs.pop("normalize", True)
        return MetricCriterion(loss, pair_loss=ContrastiveLoss(**kwargs), normalize_pairs=normalize)
    if loss == "triplet":
        normalize = kwargs.pop("normalize", True)
        return MetricCriterion(loss, pair_loss=TripletLoss(**kwargs), normalize_pairs=normalize)
    return MetricCriterion(loss, head=_HEADS[loss](embedding_dim, num_classes, **kwargs))
