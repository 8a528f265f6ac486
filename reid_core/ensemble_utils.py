r"""Helpers of the EnsembleNet chapter: a feature-concatenating ensemble of separately trained
models, parameter counts, per-part feature slices, evaluation on a subset of queries, and the
chapter's figures.

EnsembleNet (Wang, Li, Miao, arXiv 1901.05798, 2019; :mod:`reid_core.models.ensemblenet`)
claims that branching one network after ``res_conv5_1`` keeps most of what an ensemble of
separately trained networks gives, for a fraction of the weights and the training time. To test
that claim the chapter needs the classical ensemble it is compared with: K networks
:math:`f_1..f_K` trained independently (different random initialisations) whose test features
are concatenated,

.. math::
    f_{\mathrm{ens}}(x) = \big[\, f_1(x) \,\Vert\, f_2(x) \,\Vert \cdots \Vert\, f_K(x) \,\big],

optionally after L2-normalising each member so that no member dominates the euclidean distance
(:math:`\lVert f_{\mathrm{ens}}(x) - f_{\mathrm{ens}}(y) \rVert^2 = \sum_k \lVert f_k(x) -
f_k(y) \rVert^2`, a sum of the members' squared distances). :class:`ConcatEnsemble` is that
ensemble, with the same :class:`~reid_core.models.outputs.ReIDOutput` interface as every model,
so :func:`reid_core.engine.evaluate.evaluate_reid` evaluates it unchanged.

Chapter: ``notebooks/04_ensemblenet.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from reid_core.engine.evaluate import EvalResult, evaluate_distance
from reid_core.engine.features import Features
from reid_core.models.ensemblenet import BranchActivation, EnsembleNet
from reid_core.models.outputs import ReIDOutput

__all__ = [
    "TRAINING_ONLY_MODULES",
    "ConcatEnsemble",
    "concat_features",
    "count_parameters",
    "ensemblenet_parameter_groups",
    "PartSlice",
    "part_feature_slices",
    "branch_feature_slices",
    "slice_features",
    "local_part_only_pids",
    "evaluate_query_subset",
    "plot_branch_curve",
    "plot_part_rank1",
    "plot_part_activations",
]

TRAINING_ONLY_MODULES = ("classifier",)
"""Attribute names of sub-modules used only in training (identity classifiers): a test-time
parameter count leaves them out."""


# --------------------------------------------------------------------------- the classic ensemble
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
            raise ValueError(f"members[{k}]: features {tuple(member.features.shape)} do not match "
                             f"members[0] {tuple(first.features.shape)}; expected (N, D_k) of the same N images")
        if not (np.array_equal(member.pids, first.pids) and np.array_equal(member.camids, first.camids)):
            raise ValueError(f"members[{k}] lists other images (pids/camids differ from members[0])")
    blocks = [F.normalize(m.features, dim=1) if normalize else m.features for m in members]  # K x (N, D_k)
    return Features(torch.cat(blocks, dim=1), first.pids, first.camids)  # (N, sum D_k)


# ------------------------------------------------------------------------------ parameter counts
def count_parameters(module: nn.Module, exclude: Iterable[str] = (), trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module``, optionally without some sub-modules.

    Args:
        module: any module.
        exclude: attribute names of sub-modules to leave out wherever they sit in the tree
            (e.g. :data:`TRAINING_ONLY_MODULES` = ``("classifier",)`` for a test-time count).
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The count (shared parameters are counted once).
    """
    excluded = set(exclude)
    seen: set[int] = set()
    total = 0
    for name, param in module.named_parameters():
        if excluded.intersection(name.split(".")[:-1]):
            continue
        if trainable_only and not param.requires_grad:
            continue
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
    return total


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


# ----------------------------------------------------------------------------- per-part features
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


# ------------------------------------------------------------------------ evaluation on a subset
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


def evaluate_query_subset(result: EvalResult, query_mask: np.ndarray | Sequence[bool], max_rank: int = 50) -> EvalResult:
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


# ------------------------------------------------------------------------------------- figures
def plot_branch_curve(
    branches: Sequence[int],
    curves: Mapping[str, Sequence[float]],
    references: Mapping[str, float] | None = None,
    ylabel: str = "%",
) -> Figure:
    """Accuracy against the number of branches (one line per metric), as the paper's figure.

    Args:
        branches: the branch counts on the x axis.
        curves: ``{label: values}``, one value per branch count (e.g. rank-1, mAP).
        references: ``{label: value}`` drawn as dashed horizontal lines (e.g. an ensemble of
            separately trained baselines).
        ylabel: the y axis label.

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, values) in enumerate(curves.items()):
        if len(values) != len(branches):
            raise ValueError(f"curve {label!r} has {len(values)} values for {len(branches)} branch counts")
        ax.plot(list(branches), list(values), marker="o", color=colors[i % len(colors)], label=label)
    for j, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, ls="--", lw=1.2, color=colors[(len(curves) + j) % len(colors)], label=label)
    ax.set_xticks(list(branches))
    ax.set_xlabel("number of branches B")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_part_rank1(slices: Sequence[PartSlice], values: Mapping[str, Sequence[float]],
                    ylabel: str = "rank-1 (%)") -> Figure:
    """Grouped bar chart of a metric per part (or per branch) feature, one bar per series.

    Args:
        slices: the parts, as from :func:`part_feature_slices` / :func:`branch_feature_slices`.
        values: ``{series label: one value per slice}`` (e.g. all queries, a subset).
        ylabel: the y axis label.

    Returns:
        The figure.
    """
    if len(values) == 0:
        raise ValueError("values must hold at least one series")
    for label, series in values.items():
        if len(series) != len(slices):
            raise ValueError(f"series {label!r} has {len(series)} values for {len(slices)} slices")
    fig, ax = plt.subplots(figsize=(max(4.5, 0.5 * len(slices) * max(1, len(values) / 1.5) + 1.5), 3.4))
    x = np.arange(len(slices))
    width = 0.8 / len(values)
    for i, (label, series) in enumerate(values.items()):
        ax.bar(x + (i - (len(values) - 1) / 2) * width, list(series), width=width, label=label)
    ax.set_xticks(x, [s.label for s in slices], rotation=45 if len(slices) > 10 else 0, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("feature (bB = branch B whole, bBpP = its stripe P from the top)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_part_activations(
    images: Tensor,
    activations: Sequence[BranchActivation],
    titles: Sequence[str] | None = None,
    alpha: float = 0.55,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> Figure:
    """What each branch responds to: its activation map over each image, with its stripes.

    Row n shows image n, then for each branch b its channel-mean activation (upsampled to the
    image, as from :func:`reid_core.models.ensemblenet.part_activation_maps`) with the limits
    of the b stripes that branch pools over drawn as horizontal lines.

    Args:
        images: (N, 3, H, W) normalised images (what the model saw).
        activations: one :class:`BranchActivation` per branch, each with (N, h, w) maps.
        titles: optional title per image.
        alpha: opacity of the heat map.
        mean, std: the normalisation to undo for display.

    Returns:
        The figure.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    n, _, height, width = images.shape
    for act in activations:
        if act.activation.shape[0] != n:
            raise ValueError(f"branch {act.branch}: {act.activation.shape[0]} maps for {n} images")
    mean_t = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    shown = (images.detach().cpu() * std_t + mean_t).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    cols = 1 + len(activations)
    fig, axes = plt.subplots(n, cols, figsize=(1.25 * cols, 2.3 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(shown[i])
        axes[i, 0].set_title(titles[i] if titles is not None else "image", fontsize=8)
        for j, act in enumerate(activations, start=1):
            heat = F.interpolate(act.activation[i : i + 1, None].float().cpu(), size=(height, width),
                                 mode="bilinear", align_corners=False)[0, 0].numpy()  # (H, W)
            ax = axes[i, j]
            ax.imshow(shown[i])
            ax.imshow(heat, cmap="jet", alpha=alpha, vmin=0.0, vmax=max(float(heat.max()), 1e-6))
            for start, _ in act.image_rows(height)[1:]:  # the boundaries between stripes
                ax.axhline(start - 0.5, color="white", lw=1.5)
            if i == 0:
                ax.set_title(f"branch {act.branch}\n({act.branch} stripe{'s' if act.branch > 1 else ''})", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig
