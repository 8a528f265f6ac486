"""Unit-length stripe features for AlignedReID's local branch (:class:`NormalizedLocal`).

Chapter: 03 (AlignedReID).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["NormalizedLocal"]


class NormalizedLocal(nn.Module):
    r"""A model whose stripe features are L2-normalised: :math:`l_h \leftarrow l_h / \lVert l_h \rVert_2`.

    The element-wise normalisation :math:`\tanh(\lVert f_i - g_j\rVert / 2)` saturates when the
    stripe features are large: a 128-d ReLU output of a freshly initialised BN layer has
    stripe-to-stripe distances around 9, where :math:`\tanh(4.5) = 0.9998` and its slope is
    :math:`2 \cdot 10^{-4}`. Every cell then costs about 1, every path about :math:`2S - 1`, and
    the local triplet loss hardly moves. The maintainer of the public re-production met the
    same problem and added an L2 normalisation before the distance (its ``normalize_feature``
    option; AlignedReID-Re-Production-Pytorch issue 2); unit vectors are at most 2 apart.
    The stripes here come out of a ReLU: their entries are non-negative, so are the dot products
    of two of them, and two unit stripes are at most :math:`\sqrt 2` apart; every cell then
    costs at most :math:`\tanh(\sqrt 2 / 2) \approx 0.61`. The re-production's 300-epoch runs reached their best
    numbers without the normalisation, so long trainings evidently get past the saturation;
    trainings of a few epochs do not.

    Only ``local`` changes; the global feature, logits and map pass through.

    Args:
        model: returns a :class:`~reid_core.models.outputs.ReIDOutput` with ``local`` (B, S, d).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> object:
        """(B, 3, H, W) images -> the wrapped model's output with unit-length stripes (B, S, d)."""
        out = self.model(x)
        local = getattr(out, "local", None)
        if not isinstance(local, Tensor) or local.dim() != 3:
            raise ValueError("NormalizedLocal needs a model output with local features (B, S, d)")
        out.local = torch.nn.functional.normalize(local, dim=-1)  # (B, S, d), unit rows
        return out
