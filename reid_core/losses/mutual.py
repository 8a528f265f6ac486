r"""Mutual learning of two networks, as AlignedReID uses it (Zhang et al. 2017, Sec. 3.3),
built on Deep Mutual Learning (DML; Zhang, Xiang, Hospedales, Lu, CVPR 2018).

Two networks :math:`\theta_1, \theta_2` see the same batch and each learns, besides its own
losses, to agree with the other, whose output it treats as a constant ("zero gradient",
:math:`\mathrm{ZG}`, a stop-gradient):

* **classification mutual loss** (DML): with :math:`p_k = \mathrm{softmax}(z_k)`,

  .. math::
      L^{(1)}_{C} = \frac1N \sum_{n} D_{KL}\big(\mathrm{ZG}(p_2^{(n)}) \,\Vert\, p_1^{(n)}\big)
                  = \frac1N \sum_n \sum_c p_2^{(n,c)} \big(\log p_2^{(n,c)} - \log p_1^{(n,c)}\big),

  and symmetrically :math:`L^{(2)}_C` with the roles swapped;
* **metric mutual loss** (AlignedReID): with :math:`d^{(k)}_{ij}` the batch distance matrix of
  net :math:`k`,

  .. math::
      L^{(1)}_{M} = \frac{1}{N^2} \sum_{i,j} \big(\mathrm{ZG}(d^{(2)}_{ij}) - d^{(1)}_{ij}\big)^2 .

Batch scope: the metric mutual loss compares the distance matrices of the batch it is given, so
under ``torchrun`` each process compares its own share of the step (the local batch).

Normalisation. The paper writes :math:`1/N^2` for the metric term; the public re-production
divides the squared Frobenius norm by :math:`(M-1) N^2` and the summed KL by :math:`(M-1) N`
for :math:`M` networks (``train_ml.py``). For the two networks here (:math:`M = 2`) both give
exactly the means above, which is what this module computes. The re-production's default
weights are 1 (classification), 1 (global distance) and 0 (local distance, which it only
computes when the local branch mines its own hard samples); the paper's weights are not known.

Because every mutual term detaches the peer, the *sum* of both networks' losses has, with
respect to each network's parameters, exactly the gradient of that network's own loss. So
:class:`MutualPair` (both nets as one module) and :class:`MutualLearningLoss` (both losses as
one dict of terms) let a generic trainer train the pair with one optimizer and one backward,
on one GPU or on the CPU. Evaluate ``pair.net1`` (or ``net2``) on its own.

Chapter: ``notebooks/03_alignedreid.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.alignment import pairwise_aligned_distance
from reid_core.evaluation.distance import pairwise_distance
from reid_core.losses.aligned_triplet import AlignedReIDLoss, Mining, check_nonnegative_weights
from reid_core.models.outputs import ReIDOutput

__all__ = [
    "classification_mutual_loss",
    "metric_mutual_loss",
    "MutualLearningLoss",
    "MutualPair",
    "MutualOutput",
]


def classification_mutual_loss(logits: Tensor, peer_logits: Tensor) -> Tensor:
    r"""DML's :math:`\frac1N \sum_n D_{KL}(\mathrm{ZG}(p_{peer}) \Vert p)`: the loss for the net owning ``logits``.

    Call it again with the arguments swapped for the peer's loss.

    Args:
        logits: (N, C) this net's logits (gradients flow into them).
        peer_logits: (N, C) the peer's logits (detached here).

    Returns:
        Scalar KL divergence averaged over the batch, in float32.
    """
    if logits.dim() != 2 or logits.shape != peer_logits.shape:
        raise ValueError(
            f"logits and peer_logits must both be (N, C), got {tuple(logits.shape)} and {tuple(peer_logits.shape)}"
        )
    log_p = F.log_softmax(logits.float(), dim=1)  # (N, C)
    log_q = F.log_softmax(peer_logits.detach().float(), dim=1)  # (N, C) the constant target
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)


def metric_mutual_loss(dist: Tensor, peer_dist: Tensor) -> Tensor:
    r"""AlignedReID's :math:`\frac{1}{N^2} \sum_{i,j} (\mathrm{ZG}(d^{peer}_{ij}) - d_{ij})^2`.

    Args:
        dist: (N, N) this net's batch distances (gradients flow into them).
        peer_dist: (N, N) the peer's batch distances (detached here).

    Returns:
        Scalar mean squared difference.
    """
    if dist.dim() != 2 or dist.shape != peer_dist.shape:
        raise ValueError(
            f"dist and peer_dist must both be (N, N), got {tuple(dist.shape)} and {tuple(peer_dist.shape)}"
        )
    return (peer_dist.detach().float() - dist.float()).pow(2).mean()


def _metric_feature(output: ReIDOutput) -> Tensor:
    """The feature the global metric losses see: ``global_feat``, else ``feat``."""
    return output.global_feat if output.global_feat is not None else output.feat


class MutualOutput(NamedTuple):
    """The two networks' outputs for one batch."""

    net1: ReIDOutput
    net2: ReIDOutput


class MutualPair(nn.Module):
    """Two re-ID models trained together; ``forward`` runs both on the same batch.

    One module so that a generic trainer (one optimizer over both parameter sets, one
    backward of the summed loss, one checkpoint) trains the pair. The nets run one after the
    other on the inputs' device.

    Args:
        net1, net2: models returning :class:`ReIDOutput` (e.g. two
            :class:`~reid_core.models.alignedreid.AlignedReID`, possibly different backbones).

    Example:
        >>> from reid_core.models.alignedreid import AlignedReID
        >>> pair = MutualPair(AlignedReID(10, "resnet18"), AlignedReID(10, "resnet18"))
        >>> out = pair(torch.zeros(2, 3, 128, 64))
        >>> out.net1.local.shape
        torch.Size([2, 8, 128])
    """

    def __init__(self, net1: nn.Module, net2: nn.Module) -> None:
        super().__init__()
        if net1 is net2:
            raise ValueError("MutualPair needs two distinct networks, got the same module twice")
        self.net1, self.net2 = net1, net2

    def forward(self, x: Tensor) -> MutualOutput:
        """(B, 3, H, W) images -> :class:`MutualOutput` of both nets' :class:`ReIDOutput`."""
        return MutualOutput(self.net1(x), self.net2(x))


class MutualLearningLoss(nn.Module):
    r"""Both networks' AlignedReID losses with the mutual terms, as one dict for the trainer.

    Per network :math:`k` with peer :math:`\bar k`:

    .. math::
        L_k = w_{ID} L_{ID} + w_G L_G + w_L L_L
              + w_{C}\, D_{KL}(\mathrm{ZG}(p_{\bar k}) \Vert p_k)
              + w_{MG}\, \tfrac{1}{N^2}\lVert \mathrm{ZG}(D^G_{\bar k}) - D^G_k\rVert_F^2
              + w_{ML}\, \tfrac{1}{N^2}\lVert \mathrm{ZG}(D^L_{\bar k}) - D^L_k\rVert_F^2

    with :math:`D^G` the euclidean distances of the global features and :math:`D^L` the
    aligned local distances of the batch. Terms with weight 0 are not computed.

    Args:
        margin, local_margin, mining: the triplet losses (see
            :class:`~reid_core.losses.aligned_triplet.AlignedTripletLoss`).
        id_weight, global_weight, local_weight: :math:`w_{ID}, w_G, w_L`.
        prob_mutual_weight: :math:`w_C` (re-production ``pmlw``, default 1).
        global_mutual_weight: :math:`w_{MG}` (``gdmlw``, default 1).
        local_mutual_weight: :math:`w_{ML}` (``ldmlw``, default 0).

    Returns from ``forward(outputs, labels)``: weighted scalar terms named ``"<term>_1"`` and
    ``"<term>_2"`` for ``id``, ``global``, ``local``, ``prob_mutual``, ``global_mutual`` and
    ``local_mutual``. Their sum is :math:`L_1 + L_2`.
    """

    def __init__(
        self,
        margin: float = 0.3,
        local_margin: float = 0.3,
        mining: Mining = "global",
        id_weight: float = 1.0,
        global_weight: float = 1.0,
        local_weight: float = 1.0,
        prob_mutual_weight: float = 1.0,
        global_mutual_weight: float = 1.0,
        local_mutual_weight: float = 0.0,
    ) -> None:
        super().__init__()
        check_nonnegative_weights(
            prob_mutual_weight=prob_mutual_weight,
            global_mutual_weight=global_mutual_weight,
            local_mutual_weight=local_mutual_weight,
        )
        self.own = AlignedReIDLoss(margin, local_margin, mining, id_weight, global_weight, local_weight)
        self.prob_mutual_weight = prob_mutual_weight
        self.global_mutual_weight = global_mutual_weight
        self.local_mutual_weight = local_mutual_weight

    def forward(self, outputs: MutualOutput | tuple[ReIDOutput, ReIDOutput], labels: Tensor) -> dict[str, Tensor]:
        """Args: outputs, both nets' :class:`ReIDOutput`; labels (B,). Returns the weighted terms."""
        if len(outputs) != 2:
            raise ValueError(f"outputs must hold the two networks' outputs, got {len(outputs)}")
        first, second = outputs
        with torch.autocast(device_type=labels.device.type, enabled=False):
            global_dists = [pairwise_distance(_metric_feature(o).float()) for o in (first, second)]  # (B, B) each
            local_dists: list[Tensor | None] = [None, None]
            need_local_matrix = self.local_mutual_weight > 0 or (
                self.own.triplet.mining == "local" and self.own.local_weight > 0
            )
            if need_local_matrix:
                for k, o in enumerate((first, second)):
                    if o.local is None:
                        raise ValueError(f"net{k + 1}'s output has no local features; the local terms need them")
                    local_dists[k] = pairwise_aligned_distance(o.local.float())  # (B, B)
        terms: dict[str, Tensor] = {}
        for k, (own, peer) in enumerate(((first, second), (second, first))):
            j = 1 - k
            suffix = f"_{k + 1}"
            for name, value in self.own.terms(own, labels, global_dists[k], local_dists[k]).items():
                terms[name + suffix] = value
            if self.prob_mutual_weight > 0:
                if not isinstance(own.logits, Tensor) or not isinstance(peer.logits, Tensor):
                    raise ValueError("prob_mutual_weight > 0 needs both outputs' logits (B, C)")
                terms["prob_mutual" + suffix] = self.prob_mutual_weight * classification_mutual_loss(
                    own.logits, peer.logits
                )
            if self.global_mutual_weight > 0:
                terms["global_mutual" + suffix] = self.global_mutual_weight * metric_mutual_loss(
                    global_dists[k], global_dists[j]
                )
            if self.local_mutual_weight > 0:
                terms["local_mutual" + suffix] = self.local_mutual_weight * metric_mutual_loss(
                    local_dists[k],
                    local_dists[j],  # type: ignore[arg-type]
                )
        return terms
