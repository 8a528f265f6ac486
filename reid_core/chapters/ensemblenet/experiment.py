"""The EnsembleNet chapter's experiment: ensemble features, EnsembleNet's parameter groups,
per-part feature slices, and evaluation on a subset of queries.

Chapter: ``notebooks/04_ensemblenet.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reid_core.engine.evaluate import EvalResult, evaluate_distance
from reid_core.engine.features import Features
from reid_core.models.ensemblenet import EnsembleNet
from reid_core.models.parameters import count_parameters

__all__ = [
    "concat_features",
    "ensemblenet_parameter_groups",
    "PartSlice",
    "part_feature_slices",
    "branch_feature_slices",
    "slice_features",
    "local_part_only_pids",
    "evaluate_query_subset",
]


def concat_features(members: Sequence[Features], normalize: bool = False) -> Features:
    """The ensemble's features from features already extracted by each member (no re-run).

    Args:
        members: K :class:`Features` of the same images in the same order, each (N, D_k).
        normalize: L2-normalise each member's rows first, as ``ConcatEnsemble(normalize=True)``.

    Returns:
        (N, sum_k D_k) :class:`Features`. Without ``normalize`` they equal what
        :class:`ConcatEnsemble` extracts with the same ``flip`` setting (flip averaging is
        linear). With ``normalize`` and flip averaging they differ slightly: here the
        flip-averaged member features are normalised, there each view is normalised first.
    """
    if len(members) == 0:
        raise ValueError("concat_features needs at least one Features, got an empty sequence")
    first = members[0]
    for k, member in enumerate(members):
        if member.features.dim() != 2 or member.features.shape[0] != first.features.shape[0]:
            raise ValueError(
                f"members[{k}]: features {tuple(member.features.shape)} do not match "
                f"members[0] {tuple(first.features.shape)}; expected (N, D_k) of the same N images"
            )
        if not (np.array_equal(member.pids, first.pids) and np.array_equal(member.camids, first.camids)):
            raise ValueError(f"members[{k}] lists other images (pids/camids differ from members[0])")
    blocks = [F.normalize(m.features, dim=1) if normalize else m.features for m in members]  # K x (N, D_k)
    return Features(torch.cat(blocks, dim=1), first.pids, first.camids)  # (N, sum D_k)


def ensemblenet_parameter_groups(model: EnsembleNet) -> dict[str, int]:
    """Where an EnsembleNet's parameters sit: shared trunk, branch copies, part heads.

    Args:
        model: an :class:`EnsembleNet`.

    Returns:
        ``{"shared trunk", "branches", "part reductions", "part classifiers", "total",
        "test-time"}``; "test-time" leaves out the classifiers, which retrieval never uses.
    """
    if not isinstance(model, EnsembleNet):
        raise TypeError(f"model must be an EnsembleNet, got {type(model).__name__}")
    classifiers = sum(count_parameters(head.classifier) for heads in model.heads for head in heads)
    reductions = sum(count_parameters(head.reduce) for heads in model.heads for head in heads)
    groups = {
        "shared trunk": count_parameters(model.trunk),
        "branches": count_parameters(model.branches),
        "part reductions": reductions,
        "part classifiers": classifiers,
        "total": count_parameters(model),
    }
    groups["test-time"] = groups["total"] - classifiers
    return groups


@dataclass(frozen=True)
class PartSlice:
    """Where one part (or one branch) of an EnsembleNet feature lies in ``feat``.

    Attributes:
        branch: b, 1-based.
        part: p, 1-based stripe within the branch (top first); 0 for a whole branch.
        columns: the ``slice`` of ``feat``'s columns.
    """

    branch: int
    part: int
    columns: slice

    @property
    def label(self) -> str:
        """``"b3"`` for a whole branch, ``"b3p2"`` for part 2 of branch 3."""
        return f"b{self.branch}" if self.part == 0 else f"b{self.branch}p{self.part}"


def _check_layout(num_branches: int, reduction_dim: int) -> None:
    for name, value in (("num_branches", num_branches), ("reduction_dim", reduction_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def part_feature_slices(num_branches: int, reduction_dim: int) -> list[PartSlice]:
    """Columns of each part feature in EnsembleNet's ``feat`` (branch-major, top stripe first).

    Part p of branch b is feature number :math:`k = b(b-1)/2 + p` (1-based), so it lies in
    columns :math:`[d(k-1), dk)` for reduction dimension d.

    Args:
        num_branches: B.
        reduction_dim: d.

    Returns:
        B(B+1)/2 :class:`PartSlice`, in ``feat`` order.
    """
    _check_layout(num_branches, reduction_dim)
    slices = []
    k = 0
    for b in range(1, num_branches + 1):
        for p in range(1, b + 1):
            slices.append(PartSlice(b, p, slice(k * reduction_dim, (k + 1) * reduction_dim)))
            k += 1
    return slices


def branch_feature_slices(num_branches: int, reduction_dim: int) -> list[PartSlice]:
    """Columns of each branch's concatenated parts: branch b spans :math:`[d\\,b(b-1)/2,\\; d\\,b(b+1)/2)`.

    Args:
        num_branches: B.
        reduction_dim: d.

    Returns:
        B :class:`PartSlice` with ``part == 0``.
    """
    _check_layout(num_branches, reduction_dim)
    return [
        PartSlice(b, 0, slice(reduction_dim * b * (b - 1) // 2, reduction_dim * b * (b + 1) // 2))
        for b in range(1, num_branches + 1)
    ]


def slice_features(features: Features, columns: slice) -> Features:
    """The same images with only some feature columns: (N, D) -> (N, D')."""
    if features.features.dim() != 2:
        raise ValueError(f"slice_features expects (N, D) features, got {tuple(features.features.shape)}")
    return Features(features.features[:, columns], features.pids, features.camids)


def local_part_only_pids(identities: Iterable[Mapping[str, Any]], split: str = "test") -> set[int]:
    """SynthReID identities that differ from a look-alike only in a local part (shoes, bag, hem).

    Args:
        identities: ``SynthReIDInfo.identities`` (each a mapping with ``pid``, ``split`` and
            ``local_part_only``).
        split: ``"test"`` or ``"train"``.

    Returns:
        The pids with ``local_part_only`` true in that split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    pids = set()
    for k, ident in enumerate(identities):
        missing = [key for key in ("pid", "split", "local_part_only") if key not in ident]
        if missing:
            raise ValueError(f"identities[{k}] lacks {missing}; expected SynthReIDInfo.identities entries")
        if ident["split"] == split and ident["local_part_only"]:
            pids.add(int(ident["pid"]))
    return pids


def evaluate_query_subset(
    result: EvalResult, query_mask: np.ndarray | Sequence[bool], max_rank: int = 50
) -> EvalResult:
    """Re-evaluate an :class:`EvalResult` on some of its queries only (same gallery).

    Args:
        result: an evaluation that kept its ``query`` and ``gallery`` features.
        query_mask: (Q,) booleans, True for the queries to keep.
        max_rank: CMC length.

    Returns:
        A new :class:`EvalResult` over the kept queries.
    """
    if result.query is None or result.gallery is None:
        raise ValueError("evaluate_query_subset needs an EvalResult that holds its query and gallery Features")
    mask = np.asarray(query_mask, dtype=bool)
    num_q = result.distmat.shape[0]
    if mask.shape != (num_q,):
        raise ValueError(f"query_mask must have shape ({num_q},), got {mask.shape}")
    if not mask.any():
        raise ValueError("query_mask selects no query")
    keep = torch.from_numpy(np.flatnonzero(mask))
    q = result.query
    sub = Features(q.features[keep], q.pids[mask], q.camids[mask])
    return evaluate_distance(result.distmat[keep], sub, result.gallery, max_rank=max_rank)
