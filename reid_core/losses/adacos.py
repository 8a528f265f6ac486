r"""AdaCos: adaptively scaled cosine logits (Zhang et al., CVPR 2019).

No margin; the normalised cosines are multiplied by a scale chosen automatically. The
*fixed* scale depends only on the number of classes:

.. math::
    \tilde s_f = \sqrt{2}\,\ln(C - 1)

The *dynamic* scale starts there and is re-estimated from every training mini-batch N(t),
using the previous scale inside the average:

.. math::
    B_{avg}^{(t)} = \frac{1}{N}\sum_{i \in N(t)} \sum_{k \ne y_i} e^{\tilde s^{(t-1)}\cos\theta_{i,k}},
    \qquad
    \tilde s^{(t)} = \frac{\ln B_{avg}^{(t)}}{\cos\big(\min(\pi/4,\ \theta_{med}^{(t)})\big)}

where :math:`\theta_{med}^{(t)}` is the median target angle :math:`\theta_{i,y_i}` of the batch
(the mean of the two middle values for an even batch). The new scale is used for the same
batch's logits. The update is statistics, not learning: it runs under ``no_grad`` and only
in training mode, unlike the reference repo ``4uiiurz1/pytorch-adacos``, which also updated
during validation. :math:`\ln B_{avg}` is computed with ``logsumexp`` so large scales cannot
overflow.

Batch scope: under ``torchrun``, with ``batch_scope="global"`` (the default) N(t) is the global
batch of every process: each process's :math:`\ln \sum e^{\dots}` and target angles are
gathered, so every process computes the same scale, the one a single process holding the whole
batch would compute; ``"local"`` uses this process's share only (the processes' scales then
differ). Chapter: ``notebooks/02_metric_learning.py`` (the scale plotted over training).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reid_core.collectives import BatchScope, check_batch_scope, gather_rows
from reid_core.losses.margin_head import MarginHead

__all__ = ["AdaCos", "adacos_fixed_scale"]


def adacos_fixed_scale(num_classes: int) -> float:
    r""":math:`\sqrt{2}\ln(C - 1)`, the fixed AdaCos scale (C >= 3, else it is <= 0)."""
    if num_classes < 3:
        raise ValueError(f"num_classes must be >= 3 for the AdaCos scale sqrt(2) ln(C - 1), got {num_classes}")
    return math.sqrt(2.0) * math.log(num_classes - 1)


class AdaCos(MarginHead):
    """Cosine head with a fixed or dynamic automatic scale; ``head(embeddings, labels) -> logits``.

    Args:
        embedding_dim: D.
        num_classes: C (>= 3).
        dynamic: re-estimate the scale from each training batch (Dynamic AdaCos); ``False``
            keeps the fixed scale.
        track_history: append the scale (a float) to ``scale_history`` after every update, for
            plotting. Off by default because reading the value waits for the GPU each step.
        batch_scope: under ``torchrun``, estimate the dynamic scale from the ``"global"``
            batch of every process (default) or this process's ``"local"`` share.

    Attributes:
        s: 0-d float32 buffer, the current scale (saved in the ``state_dict``).
        scale: the current scale as a Python float.
        scale_history: the scales after each dynamic update, when ``track_history``.

    Example:
        >>> head = AdaCos(128, 10, track_history=True)
        >>> logits = head(torch.randn(8, 128), torch.randint(0, 10, (8,)))  # (8, 10)
        >>> head.scale, head.scale_history  # the updated scale, and [that scale]
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        dynamic: bool = True,
        track_history: bool = False,
        batch_scope: BatchScope = "global",
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        check_batch_scope(batch_scope)
        self.dynamic, self.track_history, self.batch_scope = dynamic, track_history, batch_scope
        self.register_buffer("s", torch.tensor(adacos_fixed_scale(num_classes), dtype=torch.float32))
        self.scale_history: list[float] = []

    @property
    def scale(self) -> float:
        """The current scale as a Python float."""
        return float(self.s)

    @torch.no_grad()
    def update_state(self, cosine: Tensor, labels: Tensor) -> None:
        """One dynamic-scale step from the batch's (B, C) cosines and (B,) labels."""
        if not self.dynamic:
            return
        is_target = torch.zeros_like(cosine, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), True)  # (B, C)
        scaled = (self.s.to(cosine.dtype) * cosine).masked_fill(is_target, float("-inf"))  # (B, C)
        log_sum = torch.logsumexp(scaled.flatten(), dim=0)  # ln of this batch's sum
        theta_target = torch.acos(cosine.gather(1, labels.unsqueeze(1)).squeeze(1))  # (B,)
        if self.batch_scope == "global":  # no-ops with one process
            log_sum = torch.logsumexp(gather_rows(log_sum.reshape(1)), dim=0)  # over the processes' sums
            theta_target = gather_rows(theta_target)  # (N B,)
        log_b_avg = log_sum - math.log(theta_target.shape[0])  # ln B_avg
        theta_med = torch.quantile(theta_target, 0.5)  # median; mean of the middle two if B is even
        new_s = log_b_avg / torch.cos(theta_med.clamp_max(math.pi / 4))
        self.s.copy_(new_s)
        if self.track_history:
            self.scale_history.append(float(new_s))

    def scale_logits(self, logits: Tensor, x: Tensor) -> Tensor:
        """``s * logits`` with the current (just updated, in training) scale; (B, C)."""
        return logits * self.s.to(logits.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dynamic={self.dynamic}, s={self.scale:.4g}, batch_scope={self.batch_scope!r}"
