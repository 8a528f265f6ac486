"""The EnsembleNet chapter's figures: accuracy against the number of branches, rank-1 per part,
part activation maps.

Chapter: ``notebooks/04_ensemblenet.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from reid_core.chapters.ensemblenet.experiment import PartSlice
from reid_core.models.ensemblenet import BranchActivation

__all__ = ["plot_branch_curve", "plot_part_rank1", "plot_part_activations"]


def plot_branch_curve(
    branches: Sequence[int],
    curves: Mapping[str, Sequence[float]],
    references: Mapping[str, float] | None = None,
    ylabel: str = "%",
    intervals: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> Figure:
    """Accuracy against the number of branches (one line per metric).

    Args:
        branches: the branch counts on the x axis.
        curves: ``{label: values}``, one value per branch count (e.g. mean rank-1 over seeds).
        references: ``{label: value}`` drawn as dashed horizontal lines (e.g. an ensemble of
            separately trained networks).
        ylabel: the y axis label.
        intervals: ``{label: [(low, high), ...]}`` error bars for some curves (e.g. 95%
            intervals over seeds); NaN ends (one seed) draw no bar.

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, values) in enumerate(curves.items()):
        if len(values) != len(branches):
            raise ValueError(f"curve {label!r} has {len(values)} values for {len(branches)} branch counts")
        color = colors[i % len(colors)]
        ax.plot(list(branches), list(values), marker="o", color=color, label=label)
        bars = (intervals or {}).get(label)
        if bars is not None:
            if len(bars) != len(branches):
                raise ValueError(f"intervals of {label!r}: {len(bars)} pairs for {len(branches)} branch counts")
            for x, value, (low, high) in zip(branches, values, bars):
                if not (np.isnan(low) or np.isnan(high)):
                    ax.errorbar([x], [value], yerr=[[value - low], [high - value]], color=color, capsize=3, lw=1)
    for j, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, ls="--", lw=1.2, color=colors[(len(curves) + j) % len(colors)], label=label)
    ax.set_xticks(list(branches))
    ax.set_xlabel("number of branches B")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_part_rank1(
    slices: Sequence[PartSlice | str], values: Mapping[str, Sequence[float]], ylabel: str = "rank-1 (%)"
) -> Figure:
    """Grouped bar chart of a metric per part (or per branch) feature, one bar per series.

    Args:
        slices: the parts, as from :func:`part_feature_slices` / :func:`branch_feature_slices`,
            or their labels (``"b3p2"``).
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
    names = [s if isinstance(s, str) else s.label for s in slices]
    ax.set_xticks(x, names, rotation=45 if len(slices) > 10 else 0, fontsize=8)
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
            heat = F.interpolate(
                act.activation[i : i + 1, None].float().cpu(),
                size=(height, width),
                mode="bilinear",
                align_corners=False,
            )[0, 0].numpy()  # (H, W)
            ax = axes[i, j]
            ax.imshow(shown[i])
            ax.imshow(heat, cmap="jet", alpha=alpha, vmin=0.0, vmax=max(float(heat.max()), 1e-6))
            for start, _ in act.image_rows(height)[1:]:  # the boundaries between stripes
                ax.axhline(start - 0.5, color="white", lw=1.5)
            if i == 0:
                count = len(act.part_rows)
                ax.set_title(f"branch {act.branch}\n({count} stripe{'s' if count > 1 else ''})", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig
