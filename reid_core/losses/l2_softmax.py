r"""L2-softmax / L2-constrained softmax (Ranjan, Castillo, Chellappa 2017).

The feature is L2-normalised and rescaled to a fixed norm :math:`\alpha` before an ordinary
(unnormalised) linear classifier, i.e. softmax cross-entropy subject to
:math:`\lVert f(x_i)\rVert_2 = \alpha`:

.. math::
    z_{ij} = W_j^\top \Big(\alpha\,\frac{x_i}{\lVert x_i\rVert}\Big) + b_j

There is no margin; the constraint alone puts every feature on a sphere, so the easy, high-
norm samples stop dominating the loss. :math:`\alpha` is fixed (``scale``) or learned
(``learn_scale=True``). The paper bounds it from below: to reach a mean target probability
``p`` with C classes (class vectors at least 90 degrees apart),

.. math::
    \alpha_{low} = \log\frac{p\,(C - 2)}{1 - p}

(:func:`l2_softmax_scale_lower_bound`). Chapter: ``notebooks/02_metric_learning.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reid_core.losses.margin_head import MarginHead, check_scale, safe_normalize

__all__ = ["L2Softmax", "l2_softmax_scale_lower_bound"]


def l2_softmax_scale_lower_bound(num_classes: int, p: float = 0.9) -> float:
    r""":math:`\alpha_{low} = \log\big(p\,(C - 2)/(1 - p)\big)` (Ranjan et al. 2017).

    Args:
        num_classes: C (> 2).
        p: the target class probability to be reachable, in (0, 1).

    Returns:
        The smallest scale for which the mean target probability can reach ``p``.
    """
    if num_classes <= 2:
        raise ValueError(f"num_classes must be > 2 for the bound, got {num_classes}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    return math.log(p * (num_classes - 2) / (1.0 - p))


class L2Softmax(MarginHead):
    """L2-normalise, scale to ``scale``, then a linear classifier; ``head(embeddings, labels) -> logits``.

    The labels only exist for a uniform API: there is no margin, so the logits are the same
    with and without them.

    Args:
        embedding_dim: D.
        num_classes: C.
        scale: alpha, the norm the features are rescaled to (initial value if learned). The
            paper studies a range of values; use :func:`l2_softmax_scale_lower_bound` as a floor.
        learn_scale: make alpha a trainable parameter.
        bias: add a per-class bias ``b_j`` (the paper's classifier is a standard FC layer).

    Example:
        >>> head = L2Softmax(128, 10, scale=16.0)
        >>> head(torch.randn(4, 128)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        scale: float = 16.0,
        learn_scale: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        alpha = torch.tensor(check_scale(scale))
        if learn_scale:
            self.scale = nn.Parameter(alpha)
        else:
            self.register_buffer("scale", alpha)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None  # (C,)

    def similarity(self, x: Tensor, weight: Tensor) -> Tensor:
        r""":math:`\hat x_i \cdot W_j` with W left unnormalised; (B, D), (C, D) -> (B, C)."""
        return safe_normalize(x) @ weight.T  # (B, C)

    def scale_logits(self, logits: Tensor, x: Tensor) -> Tensor:
        """``alpha * logits + b``, (B, C)."""
        logits = logits * self.scale.to(logits.dtype)  # (B, C)
        return logits if self.bias is None else logits + self.bias.to(logits.dtype)

    def extra_repr(self) -> str:
        learned = isinstance(self.scale, nn.Parameter)
        return (
            f"{super().extra_repr()}, scale={float(self.scale):.4g}, learn_scale={learned}, "
            f"bias={self.bias is not None}"
        )
