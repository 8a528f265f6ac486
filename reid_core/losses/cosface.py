r"""CosFace / large margin cosine loss (Wang et al., CVPR 2018).

Both the feature and the class weights are L2-normalised, and a margin ``m`` is subtracted
from the target cosine before scaling by ``s``:

.. math::
    z_{i,y_i} = s\,(\cos\theta_{i,y_i} - m), \qquad z_{ij} = s\cos\theta_{ij}\ (j \ne y_i)

Defaults are the paper's ``s = 64, m = 0.35`` (common code uses s = 30, m = 0.35 or 0.40).
Chapter: ``notebooks/02_metric_learning.py``.
"""

from __future__ import annotations

from torch import Tensor

from reid_core.losses.margin_head import MarginHead, check_scale

__all__ = ["CosFace"]


class CosFace(MarginHead):
    """Additive cosine margin head; ``head(embeddings, labels) -> logits`` (B, C).

    Args:
        embedding_dim: D.
        num_classes: C.
        s: the scale applied to every cosine.
        m: the additive cosine margin on the target class (>= 0).

    Example:
        >>> head = CosFace(128, 10)
        >>> logits = head(torch.randn(4, 128), torch.tensor([0, 1, 2, 3]))  # (4, 10)
        >>> loss = F.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    """

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.35) -> None:
        super().__init__(embedding_dim, num_classes)
        if m < 0:
            raise ValueError(f"m must be >= 0, got {m}")
        self.s, self.m = check_scale(s), float(m)

    def target_logit(self, cos_target: Tensor) -> Tensor:
        """``cos - m`` on the (B, 1) target cosines."""
        return cos_target - self.m

    def scale_logits(self, logits: Tensor, x: Tensor) -> Tensor:
        """``s * logits``, (B, C)."""
        return logits * self.s

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}"
