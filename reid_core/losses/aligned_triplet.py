r"""AlignedReID's metric losses: TriHard on the global and on the aligned local distance
(Zhang et al. 2017, arXiv 1711.08184, Sec. 3; margins and mining from the re-production).

For a P x K batch and anchor :math:`a`, TriHard (batch-hard triplet, Hermans et al. 2017) is

.. math::
    L = \frac{1}{PK} \sum_a \big[m + D(a, p^*_a) - D(a, n^*_a)\big]_+,
    \quad p^*_a = \arg\max_{p: y_p = y_a} D(a, p), \quad n^*_a = \arg\min_{n: y_n \ne y_a} D(a, n).

AlignedReID applies it twice:

* :math:`L_G` with :math:`D` the euclidean distance of the global features, margin 0.3;
* :math:`L_L` with :math:`D` the aligned local distance (:mod:`reid_core.alignment`), margin
  0.3. By default (the paper's, flag LHSFGD in the re-production) the hard positive and
  negative are those **mined by the global distance**, so only 2B local distances are
  computed; ``mining="local"`` mines them with the local distance itself (LHSFLD), which
  needs the full B x B local matrix.

``local_distance="row"`` replaces the aligned distance in :math:`L_L` by the row-by-row one
(stripe :math:`i` against stripe :math:`i`, :mod:`reid_core.alignment.unaligned`): the same
local branch and loss with the alignment switched off, the control that tells what the
*alignment* adds to training beyond the local branch itself.

The model's total loss :math:`L = L_G + L_L + L_{ID}` (plus mutual terms,
:mod:`reid_core.losses.mutual`) is assembled by :class:`AlignedReIDLoss` or by the caller.
Distances are computed in float32 with autocast off (AMP would otherwise run them in float16).

Batch scope: these losses mine within the batch they are given, so under ``torchrun`` each
process mines within its own share of the step (the local batch); no feature is gathered.

Chapter: ``notebooks/03_alignedreid.py``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.alignment import paired_aligned_distance, paired_unaligned_distance, pairwise_aligned_distance
from reid_core.evaluation.distance import pairwise_distance
from reid_core.losses.triplet import hard_example_mining
from reid_core.models.outputs import ReIDOutput

__all__ = ["AlignedTripletLoss", "AlignedReIDLoss", "MINING"]

Mining = Literal["global", "local"]
MINING = ("global", "local")
LocalDistance = Literal["aligned", "row"]
LOCAL_DISTANCES = ("aligned", "row")


class AlignedTripletLoss(nn.Module):
    """TriHard on the global distance and on the aligned local distance, returned separately.

    Args:
        margin: margin of the global triplet (0.3 in the re-production).
        local_margin: margin of the local triplet (0.3).
        mining: ``"global"``: the local triplet reuses the hard positive/negative mined by the
            global distance (the paper's default); ``"local"``: mine them by the local distance.
        local_distance: ``"aligned"`` (the paper's shortest path) or ``"row"`` (stripe i against
            stripe i only: the control without alignment).

    Returns from ``forward``: ``{"global": L_G, "local": L_L}``, two scalars. Anchors with no
    negative in the batch are left out of both means (as :class:`~reid_core.losses.triplet.TripletLoss`).

    Example:
        >>> loss = AlignedTripletLoss()
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> terms = loss(torch.randn(4, 32), torch.randn(4, 8, 16), labels)
        >>> sorted(terms)
        ['global', 'local']
    """

    def __init__(
        self,
        margin: float = 0.3,
        local_margin: float = 0.3,
        mining: Mining = "global",
        local_distance: LocalDistance = "aligned",
    ) -> None:
        super().__init__()
        if margin < 0 or local_margin < 0:
            raise ValueError(f"margins must be >= 0, got margin={margin}, local_margin={local_margin}")
        if mining not in MINING:
            raise ValueError(f"mining must be one of {MINING}, got {mining!r}")
        if local_distance not in LOCAL_DISTANCES:
            raise ValueError(f"local_distance must be one of {LOCAL_DISTANCES}, got {local_distance!r}")
        self.margin, self.local_margin, self.mining = margin, local_margin, mining
        self.local_distance = local_distance

    def forward(self, global_feat: Tensor, local_feat: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Args: global_feat (B, C), local_feat (B, S, d), labels (B,). Returns: {"global", "local"}."""
        if global_feat.dim() != 2:
            raise ValueError(f"global_feat must be (B, C), got shape {tuple(global_feat.shape)}")
        with torch.autocast(device_type=global_feat.device.type, enabled=False):
            global_dist = pairwise_distance(global_feat.float())  # (B, B)
        return self.from_distances(global_dist, local_feat, labels)

    def from_distances(
        self,
        global_dist: Tensor,
        local_feat: Tensor | None,
        labels: Tensor,
        local_dist: Tensor | None = None,
        with_local: bool = True,
    ) -> dict[str, Tensor]:
        """The same losses from a precomputed (B, B) global distance.

        Args:
            global_dist: (B, B) euclidean distances of the global features.
            local_feat: (B, S, d) stripe features (may be ``None`` when ``with_local`` is off).
            labels: (B,) identities.
            local_dist: optional precomputed (B, B) aligned local distances (used by
                ``mining="local"``; computed when missing).
            with_local: ``False`` skips the local term (and its cost).

        Returns:
            ``{"global": L_G, "local": L_L}`` (without ``"local"`` when ``with_local`` is off).
        """
        if with_local and (
            not isinstance(local_feat, Tensor) or local_feat.dim() != 3 or local_feat.shape[0] != global_dist.shape[0]
        ):
            shape = tuple(local_feat.shape) if isinstance(local_feat, Tensor) else None
            raise ValueError(f"local_feat must be (B, S, d) with B = {global_dist.shape[0]}, got {shape}")
        ap_global, an_global, pos_index, neg_index = hard_example_mining(global_dist, labels)  # (B,) each
        valid = torch.isfinite(an_global)  # anchors with at least one negative
        if not bool(valid.any()):
            zero = global_dist.sum() * 0.0  # keeps the graph, value 0
            if not with_local:
                return {"global": zero}
            return {"global": zero, "local": zero + local_feat.sum() * 0.0}  # type: ignore[union-attr]
        global_loss = F.relu(self.margin + ap_global[valid] - an_global[valid]).mean()
        if not with_local:
            return {"global": global_loss}
        assert local_feat is not None  # checked above
        with torch.autocast(device_type=local_feat.device.type, enabled=False):
            local_feat = local_feat.float()
            paired = paired_aligned_distance if self.local_distance == "aligned" else paired_unaligned_distance
            if self.mining == "global":
                # index_select, not local_feat[pos_index]: the backward of advanced indexing is
                # index_put_ with accumulation, which on a multi-threaded CPU adds with atomics in
                # an order that changes from call to call (runs of one seed drifted apart);
                # index_select's backward (index_add_) sums in a fixed order.
                ap_local = paired(local_feat, local_feat.index_select(0, pos_index))  # (B,)
                an_local = paired(local_feat, local_feat.index_select(0, neg_index))  # (B,)
            else:
                if local_dist is None and self.local_distance == "aligned":
                    local_dist = pairwise_aligned_distance(local_feat)  # (B, B)
                elif local_dist is None:
                    b = local_feat.shape[0]
                    local_dist = paired(local_feat.repeat_interleave(b, dim=0), local_feat.repeat(b, 1, 1)).view(b, b)
                ap_local, an_local, _, _ = hard_example_mining(local_dist, labels)  # (B,) each
        local_loss = F.relu(self.local_margin + ap_local[valid] - an_local[valid]).mean()
        return {"global": global_loss, "local": local_loss}


def check_nonnegative_weights(**weights: float) -> None:
    """Raise ``ValueError`` naming the first loss weight that is negative."""
    for name, value in weights.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


class AlignedReIDLoss(nn.Module):
    r"""One network's AlignedReID loss :math:`L = w_{ID} L_{ID} + w_G L_G + w_L L_L`, for the trainer.

    Called as ``criterion(output, labels)`` with a :class:`~reid_core.models.outputs.ReIDOutput`
    holding ``logits``, ``global_feat`` and ``local``; returns the weighted terms
    ``{"id", "global", "local"}`` (a term with weight 0 is left out, and so is its cost).
    The paper sums the three with weight 1; the re-production found the ID loss hurt its
    Market-1501 runs (87.05 -> 84.68 rank-1), so ``id_weight`` is a parameter.

    Args:
        margin, local_margin, mining, local_distance: see :class:`AlignedTripletLoss`.
        id_weight, global_weight, local_weight: term weights.
    """

    def __init__(
        self,
        margin: float = 0.3,
        local_margin: float = 0.3,
        mining: Mining = "global",
        id_weight: float = 1.0,
        global_weight: float = 1.0,
        local_weight: float = 1.0,
        local_distance: LocalDistance = "aligned",
    ) -> None:
        super().__init__()
        check_nonnegative_weights(id_weight=id_weight, global_weight=global_weight, local_weight=local_weight)
        self.triplet = AlignedTripletLoss(margin, local_margin, mining, local_distance)
        self.id_weight, self.global_weight, self.local_weight = id_weight, global_weight, local_weight

    def terms(
        self, output: ReIDOutput, labels: Tensor, global_dist: Tensor, local_dist: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Weighted terms given the output's (B, B) global (and optionally local) distances."""
        out: dict[str, Tensor] = {}
        if self.id_weight > 0:
            if not isinstance(output.logits, Tensor):
                raise ValueError("AlignedReIDLoss with id_weight > 0 needs output.logits (B, C)")
            out["id"] = self.id_weight * F.cross_entropy(output.logits.float(), labels)
        if self.global_weight > 0 or self.local_weight > 0:
            if self.local_weight > 0 and output.local is None:
                raise ValueError("AlignedReIDLoss with local_weight > 0 needs output.local (B, S, d) stripe features")
            metric = self.triplet.from_distances(
                global_dist, output.local, labels, local_dist, with_local=self.local_weight > 0
            )
            if self.global_weight > 0:
                out["global"] = self.global_weight * metric["global"]
            if self.local_weight > 0:
                out["local"] = self.local_weight * metric["local"]
        return out

    def forward(self, output: ReIDOutput, labels: Tensor) -> dict[str, Tensor]:
        """Args: output with logits (B, C), global_feat (B, D), local (B, S, d); labels (B,)."""
        with torch.autocast(device_type=labels.device.type, enabled=False):
            global_dist = pairwise_distance(_global_feature(output).float())  # (B, B)
        return self.terms(output, labels, global_dist)


def _global_feature(output: ReIDOutput) -> Tensor:
    """The feature the metric loss sees: ``global_feat``, else ``feat``."""
    return output.global_feat if output.global_feat is not None else output.feat
