r"""Cross-entropy with label smoothing (Szegedy et al. 2016), as in the re-ID baseline.

The one-hot target is softened to :math:`q_j = (1 - \varepsilon)\,[j = y] + \varepsilon / C`,
so the model is not pushed to infinite logits on a training set with few images per
identity; Luo et al. 2019 ("Bag of Tricks") use :math:`\varepsilon = 0.1`:

.. math::
    L = -\frac{1}{B}\sum_{i=1}^{B}\sum_{j=1}^{C} q_{ij}\log p_{ij}
      = -\frac{1}{B}\sum_i \Big[(1 - \varepsilon)\log p_{i,y_i} + \frac{\varepsilon}{C}\sum_j \log p_{ij}\Big]

Chapters: 01 (baseline), 02 (softmax in the metric-learning comparison).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LabelSmoothingCrossEntropy"]


class LabelSmoothingCrossEntropy(nn.Module):
    """Label-smoothed softmax cross-entropy, mean over the batch: ``loss(logits, labels) -> scalar``.

    Args:
        epsilon: the smoothing weight in [0, 1); 0 gives the plain cross-entropy.

    Example:
        >>> loss = LabelSmoothingCrossEntropy(epsilon=0.1)
        >>> loss(torch.randn(4, 751), torch.tensor([0, 5, 9, 750])).shape
        torch.Size([])
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must lie in [0, 1), got {epsilon}")
        self.epsilon = float(epsilon)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Args: logits (B, C), labels (B,) integers in [0, C). Returns: the scalar loss (float32+)."""
        if logits.dim() != 2 or logits.shape[0] == 0:
            raise ValueError(f"logits must be (B, C) with B >= 1, got {tuple(logits.shape)}")
        if labels.shape != logits.shape[:1] or labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be integer ({logits.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
        num_classes = logits.shape[1]
        if ((labels < 0) | (labels >= num_classes)).any():
            raise ValueError(
                f"labels must lie in [0, {num_classes}), got min {int(labels.min())}, max {int(labels.max())}"
            )
        # float16 log-probabilities of unlikely classes underflow; smoothing sums all of them.
        log_prob = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)  # (B, C)
        target_term = log_prob.gather(1, labels.long().unsqueeze(1)).squeeze(1)  # (B,)
        uniform_term = log_prob.mean(dim=1)  # (B,) = (1/C) sum_j log p_j
        return -((1.0 - self.epsilon) * target_term + self.epsilon * uniform_term).mean()

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"
