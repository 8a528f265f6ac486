r"""The classic ensemble: K separately trained networks whose features are concatenated,

.. math::
    f_{\mathrm{ens}}(x) = \big[\, f_1(x) \,\Vert\, f_2(x) \,\Vert \cdots \Vert\, f_K(x) \,\big],

optionally after L2-normalising each member so that no member dominates the euclidean distance
(:math:`\lVert f_{\mathrm{ens}}(x) - f_{\mathrm{ens}}(y) \rVert^2 = \sum_k \lVert f_k(x) -
f_k(y) \rVert^2`). EnsembleNet (:mod:`reid_core.models.ensemblenet`) claims to keep most of what
this gives for a fraction of the weights; :class:`ConcatEnsemble` has the same
:class:`~reid_core.models.outputs.ReIDOutput` interface as every model, so the book's evaluation
runs on it unchanged.

Chapter: 04 (EnsembleNet).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.models.outputs import ReIDOutput

__all__ = ["ConcatEnsemble"]


class ConcatEnsemble(nn.Module):
    """K separately trained re-ID models used as one: their test features, concatenated.

    Args:
        members: the trained models; each returns a :class:`ReIDOutput` whose ``field`` is (N, D_k).
        field: the output field of each member to concatenate (``"feat"`` by default).
        normalize: L2-normalise each member's feature before concatenating, so that each
            member adds a squared distance in [0, 4] to the ensemble's.

    ``forward`` returns a :class:`ReIDOutput` with ``feat`` (N, sum_k D_k) and ``parts`` the K
    member features (N, D_k). It is for evaluation: the members are trained separately.
    """

    def __init__(self, members: Sequence[nn.Module], field: str = "feat", normalize: bool = False) -> None:
        super().__init__()
        if len(members) == 0:
            raise ValueError("ConcatEnsemble needs at least one member model, got an empty sequence")
        for k, member in enumerate(members):
            if not isinstance(member, nn.Module):
                raise TypeError(f"members[{k}] must be an nn.Module, got {type(member).__name__}")
        self.members = nn.ModuleList(members)
        self.field = field
        self.normalize = normalize

    def forward(self, x: Tensor) -> ReIDOutput:
        """Run every member on (N, 3, H, W) images and concatenate their features."""
        parts: list[Tensor] = []
        for k, member in enumerate(self.members):
            out = member(x)
            value = getattr(out, self.field, None)
            if not isinstance(value, Tensor) or value.dim() != 2:
                raise ValueError(f"member {k}: output field {self.field!r} must be an (N, D) tensor, got {value!r:.80}")
            parts.append(F.normalize(value, dim=1) if self.normalize else value)  # (N, D_k)
        return ReIDOutput(feat=torch.cat(parts, dim=1), parts=parts)  # (N, sum D_k)
