"""Figures the chapters share: ranked lists, image grids, training curves, CMC curves.

Kept in the library so notebooks stay about the method (d2l's rule: notebooks call the library).
Every function returns the matplotlib ``Figure`` it drew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

__all__ = ["load_image", "show_images", "plot_ranked_lists", "plot_history", "plot_cmc", "ranked_gallery"]


def load_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def show_images(
    paths: Sequence[str | Path],
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: tuple[float, float] = (1.1, 2.2),
) -> Figure:
    """A grid of images with optional titles."""
    n = len(paths)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, path in enumerate(paths):
        ax = axes.flat[i]
        ax.imshow(load_image(path))
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def ranked_gallery(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    query_index: int,
    topk: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k gallery indices of one query under the Market-1501 rule, and whether each matches."""
    d = np.asarray(distmat[query_index], dtype=np.float64)
    keep = ~((g_pids == q_pids[query_index]) & (g_camids == q_camids[query_index])) & (g_pids != -1)
    order = np.argsort(np.where(keep, d, np.inf), kind="stable")[: min(topk, int(keep.sum()))]
    return order, g_pids[order] == q_pids[query_index]


def plot_ranked_lists(
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    query_indices: Sequence[int],
    topk: int = 10,
    row_titles: Sequence[str] | None = None,
) -> Figure:
    """One row per query: the query, then its top-k gallery images with green (match) / red borders."""
    distmat = np.asarray(distmat)
    rows = len(query_indices)
    fig, axes = plt.subplots(rows, topk + 1, figsize=(1.05 * (topk + 1), 2.3 * rows), squeeze=False)
    for r, qi in enumerate(query_indices):
        order, match = ranked_gallery(distmat, q_pids, g_pids, q_camids, g_camids, qi, topk)
        ax = axes[r, 0]
        ax.imshow(load_image(query_paths[qi]))
        ax.set_title("query" if row_titles is None else row_titles[r], fontsize=8)
        for c in range(topk):
            ax = axes[r, c + 1]
            ax.set_xticks([]), ax.set_yticks([])
            if c >= len(order):
                ax.axis("off")
                continue
            img = load_image(gallery_paths[order[c]])
            ax.imshow(img)
            color = "tab:green" if match[c] else "tab:red"
            ax.add_patch(Rectangle((0, 0), img.shape[1] - 1, img.shape[0] - 1, fill=False, lw=4, edgecolor=color))
            ax.set_title(f"{c + 1}: {distmat[qi, order[c]]:.2f}", fontsize=7)
        axes[r, 0].set_xticks([]), axes[r, 0].set_yticks([])
    fig.tight_layout()
    return fig


def plot_history(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    keys: Sequence[str] = ("loss",),
    x: str = "epoch",
    logy: bool = False,
) -> Figure:
    """Training curves: one panel per key, one line per run (``{run name: trainer history}``)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, hist in histories.items():
            xs = [h[x] for h in hist if key in h]
            ys = [h[key] for h in hist if key in h]
            if ys:
                ax.plot(xs, ys, marker="o", ms=3, label=name)
        ax.set_xlabel(x), ax.set_title(key)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_cmc(curves: Mapping[str, np.ndarray], max_rank: int = 20) -> Figure:
    """CMC curves (rank on x, matching rate in % on y)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for name, cmc in curves.items():
        k = min(max_rank, len(cmc))
        ax.plot(np.arange(1, k + 1), np.asarray(cmc[:k]) * 100, marker=".", label=name)
    ax.set_xlabel("rank"), ax.set_ylabel("matching rate (%)"), ax.grid(alpha=0.3), ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
