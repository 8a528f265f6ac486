r"""The strong baseline's loss: label-smoothed ID loss on the logits + batch-hard triplet on f_t.

.. math::
    L = w_{id}\, \mathrm{CE}_{\epsilon}(z, y) + w_{tri}\, L_{BH}(f_t, y)

with :math:`\mathrm{CE}_{\epsilon}` cross-entropy against the smoothed target
:math:`(1-\epsilon)\,\mathbb 1_y + \epsilon / C` (Szegedy et al. 2016; :math:`\epsilon = 0.1`)
and :math:`L_{BH}` the batch-hard triplet loss with margin 0.3 on the feature before BNNeck
(Luo et al. 2019, Hermans et al. 2017). Called by the trainer as ``criterion(output, labels)``.
Chapter: ``notebooks/01_reid_basics.py``.
"""

from __future__ import annotations

from torch import Tensor, nn

from reid_core.losses.cross_entropy import LabelSmoothingCrossEntropy
from reid_core.losses.triplet import TripletLoss
from reid_core.models.outputs import ReIDOutput

__all__ = ["BaselineLoss"]


class BaselineLoss(nn.Module):
    """ID + triplet loss of the strong baseline, returning the weighted terms.

    Args:
        id_weight: weight of the (label-smoothed) cross-entropy; 0 disables it.
        triplet_weight: weight of the batch-hard triplet loss; 0 disables it.
        margin: triplet margin.
        label_smoothing: epsilon of the smoothed target (0 = plain cross-entropy).
    """

    def __init__(
        self, id_weight: float = 1.0, triplet_weight: float = 1.0, margin: float = 0.3, label_smoothing: float = 0.1
    ) -> None:
        super().__init__()
        if id_weight <= 0 and triplet_weight <= 0:
            raise ValueError("BaselineLoss needs id_weight > 0 or triplet_weight > 0")
        self.id_weight, self.triplet_weight = id_weight, triplet_weight
        self.id_loss = LabelSmoothingCrossEntropy(label_smoothing)
        self.triplet = TripletLoss(margin=margin)

    def forward(self, output: ReIDOutput, labels: Tensor) -> dict[str, Tensor]:
        """Args: output with ``logits`` (B, C) and ``global_feat`` (or ``feat``) (B, D); labels (B,)."""
        terms: dict[str, Tensor] = {}
        if self.id_weight > 0:
            if not isinstance(output.logits, Tensor):
                raise ValueError("BaselineLoss needs output.logits as one (B, C) tensor")
            terms["id"] = self.id_weight * self.id_loss(output.logits.float(), labels)
        if self.triplet_weight > 0:
            emb = output.global_feat if output.global_feat is not None else output.feat
            terms["triplet"] = self.triplet_weight * self.triplet(emb.float(), labels)
        return terms
