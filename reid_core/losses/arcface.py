r"""ArcFace / additive angular margin loss (Deng et al., CVPR 2019).

The margin is added to the target *angle*: :math:`z_{i,y_i} = s\cos(\theta_{i,y_i} + m)`,
computed without ``acos`` as :math:`\cos\theta\cos m - \sin\theta\sin m`.

For :math:`\theta + m > \pi` the curve :math:`\cos(\theta + m)` turns upwards again, so a
worse-aligned sample would get a *larger* target logit. The usual fix (insightface and
``ronghuaiyang/arcface-pytorch``) switches to a CosFace-like penalty there:

.. math::
    g(\theta) = \begin{cases} \cos(\theta + m) & \cos\theta > \cos(\pi - m) \\
                              \cos\theta - m\sin(\pi - m) & \text{otherwise} \end{cases}

which is decreasing on all of :math:`[0, \pi]` (it jumps down at :math:`\theta = \pi - m`).
``easy_margin=True`` instead applies the margin only where :math:`\cos\theta > 0`.
Defaults are the paper's ``s = 64, m = 0.5``. Chapter: ``notebooks/02_metric_learning.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reid_core.losses.margin_head import MarginHead, check_scale, safe_sqrt

__all__ = ["ArcFace"]


class ArcFace(MarginHead):
    """Additive angular margin head; ``head(embeddings, labels) -> logits`` (B, C).

    Args:
        embedding_dim: D.
        num_classes: C.
        s: the scale applied to every cosine.
        m: the additive angular margin in radians, in [0, pi/2].
        easy_margin: apply the margin only where cos(theta) > 0 (else leave the cosine),
            instead of the monotone fallback for theta + m > pi.

    Example:
        >>> head = ArcFace(128, 10)
        >>> logits = head(torch.randn(4, 128), torch.tensor([0, 1, 2, 3]))  # (4, 10)
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5, easy_margin: bool = False
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        if not 0.0 <= m <= math.pi / 2:
            raise ValueError(f"m must be an angle in [0, pi/2] radians, got {m}")
        self.s, self.m, self.easy_margin = check_scale(s), float(m), easy_margin
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th = math.cos(math.pi - m)  # cos(theta) <= th  <=>  theta + m >= pi
        self.mm = math.sin(math.pi - m) * m  # the fallback's cosine penalty

    def target_logit(self, cos_target: Tensor) -> Tensor:
        """``cos(theta + m)`` with the easy-margin or monotone fallback; (B, 1) -> (B, 1)."""
        sin_target = safe_sqrt(1.0 - cos_target * cos_target)  # (B, 1), theta in [0, pi]
        phi = cos_target * self.cos_m - sin_target * self.sin_m  # (B, 1) cos(theta + m)
        if self.easy_margin:
            return torch.where(cos_target > 0, phi, cos_target)
        return torch.where(cos_target > self.th, phi, cos_target - self.mm)

    def scale_logits(self, logits: Tensor, x: Tensor) -> Tensor:
        """``s * logits``, (B, C)."""
        return logits * self.s

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}, easy_margin={self.easy_margin}"
