"""The AlignedReID chapter's figures: the stripe-distance matrix with its shortest path and the
matched stripes linked between two images; path offsets against box shifts; the ablation bars.

Chapter: ``notebooks/03_alignedreid.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch
from torch import Tensor

from reid_core.alignment import aligned_path
from reid_core.chapters.alignedreid.experiment import AblationRow, _ordered

__all__ = ["plot_alignment", "plot_ablation_bars", "plot_path_offsets"]


def plot_alignment(
    image_a: np.ndarray,
    image_b: np.ndarray,
    local_a: Tensor,
    local_b: Tensor,
    titles: tuple[str, str] = ("image A", "image B"),
    suptitle: str | None = None,
) -> Figure:
    r"""The alignment of two images: their stripes linked along the shortest path, and the cost matrix.

    Left: the two images with their :math:`S` horizontal stripes; every cell :math:`(i, j)` of
    the shortest path links stripe :math:`i` of A with stripe :math:`j` of B (line colour = the
    cell's cost :math:`d_{ij}`, darker is closer). Right: the normalised stripe distances
    :math:`d_{ij} = \tanh(\lVert a_i - b_j \rVert / 2)` with the shortest right/down path, and the
    diagonal (stripe :math:`i` against stripe :math:`i`) dashed for comparison.

    Args:
        image_a, image_b: (H, W, 3) uint8 images (any sizes; the stripes split each height).
        local_a, local_b: (S_a, d) and (S_b, d) stripe features of the two images.
        titles: labels of the two images.
        suptitle: figure title.

    Returns:
        The figure. Its title line gives the aligned distance and the diagonal's cost.
    """
    if local_a.dim() != 2 or local_b.dim() != 2:
        raise ValueError(f"local_a and local_b must be (S, d), got {tuple(local_a.shape)} and {tuple(local_b.shape)}")
    align = aligned_path(local_a.float(), local_b.float())
    cost = align.cost.cpu().numpy()  # (S_a, S_b)
    path = align.path.cpu().numpy()  # (L, 2)
    s_a, s_b = cost.shape
    diagonal = float(sum(cost[i, i] for i in range(min(s_a, s_b)))) if s_a == s_b else float("nan")

    fig = plt.figure(figsize=(8.4, 4.0))
    grid = fig.add_gridspec(1, 4, width_ratios=[1, 0.55, 1, 2.3], wspace=0.05)
    ax_a, ax_b, ax_m = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 2]), fig.add_subplot(grid[0, 3])
    cmap = plt.get_cmap("viridis")
    for ax, img, s, title in ((ax_a, image_a, s_a, titles[0]), (ax_b, image_b, s_b, titles[1])):
        h, w = img.shape[:2]
        ax.imshow(img)
        for k in range(1, s):
            ax.axhline(k * h / s - 0.5, color="white", lw=0.8, alpha=0.9)
        ax.set_yticks([(k + 0.5) * h / s - 0.5 for k in range(s)], [str(k) for k in range(s)], fontsize=7)
        ax.set_xticks([])
        ax.set_title(title, fontsize=8)
    ax_b.yaxis.tick_right()
    h_a, w_a = image_a.shape[:2]
    h_b = image_b.shape[0]
    for i, j in path:
        link = ConnectionPatch(
            xyA=(w_a - 0.5, (i + 0.5) * h_a / s_a - 0.5),
            coordsA=ax_a.transData,
            xyB=(-0.5, (j + 0.5) * h_b / s_b - 0.5),
            coordsB=ax_b.transData,
            color=cmap(float(cost[i, j])),
            lw=2.0,
            alpha=0.95,
        )
        fig.add_artist(link)
    shown = ax_m.imshow(cost, cmap=cmap, vmin=0.0, vmax=max(float(cost.max()), 1e-6))
    outline = [patheffects.Stroke(linewidth=3.6, foreground="black"), patheffects.Normal()]
    ax_m.plot(
        path[:, 1],
        path[:, 0],
        color="white",
        lw=2.0,
        marker="o",
        ms=4,
        mec="black",
        label="shortest path",
        path_effects=outline,
    )
    if s_a == s_b:
        ax_m.plot(range(s_a), range(s_a), color="tab:red", lw=1.2, ls="--", label="row by row (no alignment)")
    ax_m.set_xlabel(f"stripe of {titles[1]}", fontsize=8)
    ax_m.set_ylabel(f"stripe of {titles[0]}", fontsize=8)
    ax_m.yaxis.set_label_position("right")
    ax_m.yaxis.tick_right()
    ax_m.tick_params(labelsize=7)
    ax_m.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.colorbar(shown, ax=ax_m, fraction=0.046, pad=0.16, label=r"cost $d_{ij}$")
    ax_m.set_title(
        f"path {float(align.distance):.2f} ({len(path)} cells), diagonal {diagonal:.2f} ({min(s_a, s_b)} cells)",
        fontsize=8,
    )
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.subplots_adjust(left=0.04, right=0.93, top=0.86, bottom=0.2)
    return fig


def plot_ablation_bars(
    rows: Sequence[AblationRow], metrics: Sequence[str] = ("rank1", "mAP"), tests: Sequence[str] | None = None
) -> Figure:
    """Grouped bars: one panel per (metric, world); groups = training; bars = test distance x RK.

    Args:
        rows: the ablation's rows.
        metrics: ``"rank1"`` and/or ``"mAP"`` (one panel row each).
        tests: test distances to draw, in order (default: as they appear in ``rows``).

    Returns:
        The figure (values printed above the bars).
    """
    if not rows:
        raise ValueError("plot_ablation_bars needs at least one row")
    bad = [m for m in metrics if m not in ("rank1", "mAP")]
    if bad:
        raise ValueError(f"metrics must be 'rank1' and/or 'mAP', got {bad}")
    worlds = _ordered(r.world for r in rows)
    tests = _ordered(r.test for r in rows) if tests is None else list(tests)
    series = [(t, rr) for t in tests for rr in (False, True) if any(r.test == t and r.reranked == rr for r in rows)]
    lookup = {(r.world, r.training, r.test, r.reranked): r for r in rows}
    colors = plt.get_cmap("tab20").colors
    fig, axes = plt.subplots(
        len(metrics), len(worlds), figsize=(4.6 * len(worlds), 3.1 * len(metrics)), squeeze=False, sharey="row"
    )
    width = 0.8 / max(len(series), 1)
    for r_i, metric in enumerate(metrics):
        for c_i, world in enumerate(worlds):
            ax = axes[r_i, c_i]
            trainings = _ordered(r.training for r in rows if r.world == world)
            for s_i, (test, rr) in enumerate(series):
                xs, ys = [], []
                for t_i, training in enumerate(trainings):
                    row = lookup.get((world, training, test, rr))
                    if row is not None:
                        xs.append(t_i + (s_i - (len(series) - 1) / 2) * width)
                        ys.append(getattr(row, metric))
                color = colors[(2 * tests.index(test) + (0 if rr else 1)) % len(colors)]
                bars = ax.bar(
                    xs,
                    ys,
                    width=width * 0.95,
                    color=color,
                    label=f"test {test}{' + RK' if rr else ''}",
                    hatch="//" if rr else None,
                    edgecolor="white" if rr else None,
                )
                ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
            ax.set_xticks(range(len(trainings)), trainings, fontsize=7)
            ax.set_title(f"{world}: {'rank-1' if metric == 'rank1' else 'mAP'} (%)", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_path_offsets(series: Mapping[str, tuple[np.ndarray, np.ndarray]], stripes: int) -> Figure:
    """Scatter of the learned paths' mean offset against the offset the boxes predict.

    Args:
        series: ``{label: (expected, measured)}``, two (K,) arrays each, in stripes
            (:func:`expected_path_offset`, :func:`mean_path_offsets`).
        stripes: S, for the axis limits.

    Returns:
        The figure; each label gets its Pearson correlation in the legend (when defined).
    """
    if not series:
        raise ValueError("plot_path_offsets needs at least one series")
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    lim = 0.0
    for label, (expected, measured) in series.items():
        expected, measured = np.asarray(expected, dtype=float), np.asarray(measured, dtype=float)
        if expected.shape != measured.shape:
            raise ValueError(f"{label}: expected {expected.shape} and measured {measured.shape} differ")
        corr = np.corrcoef(expected, measured)[0, 1] if expected.std() > 0 and measured.std() > 0 else float("nan")
        text = f"{label} (r = {corr:.2f})" if np.isfinite(corr) else label
        dots = ax.scatter(expected, measured, s=7, alpha=0.35, label=text)
        if expected.std() > 0:  # the trend: mean measured offset in bins of the prediction
            edges = np.arange(np.floor(expected.min() * 4) / 4, expected.max() + 0.25, 0.25)
            which = np.digitize(expected, edges)
            centres, means = [], []
            for b in np.unique(which):
                inside = which == b
                if inside.sum() >= 5:
                    centres.append(float(expected[inside].mean()))
                    means.append(float(measured[inside].mean()))
            ax.plot(
                centres,
                means,
                marker="s",
                ms=5,
                lw=1.8,
                color=dots.get_facecolor()[0][:3],
                label=f"{label}: mean per bin",
            )
        lim = max(lim, float(np.abs(expected).max(initial=0)), float(np.abs(measured).max(initial=0)))
    lim = min(max(lim * 1.05, 0.5), float(stripes))
    ax.plot([-lim, lim], [-lim, lim], color="0.4", lw=1, ls="--", label="path = box shift")
    ax.axhline(0, color="0.8", lw=0.8), ax.axvline(0, color="0.8", lw=0.8)
    ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim)
    ax.set_xlabel("box shift of B below A (stripes)", fontsize=8)
    ax.set_ylabel("mean path offset, column - row (stripes)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
