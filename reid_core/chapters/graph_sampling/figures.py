"""The Graph Sampling chapter's figures: PK and GS batches side by side, batch logs, learning
curves, epoch time against the number of classes.

Chapter: ``notebooks/05_graph_sampling.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import numpy as np
from matplotlib.figure import Figure

from reid_core.book.figures import load_image
from reid_core.chapters.graph_sampling.experiment import CurvePoint

__all__ = [
    "one_image_per_identity",
    "plot_pk_vs_gs_batches",
    "plot_batch_log",
    "plot_learning_curves",
    "plot_epoch_time",
]


def one_image_per_identity(
    batch: Sequence[int] | np.ndarray,
    items: Sequence[Sequence[Any]],
    family_of: Mapping[int, int] | None = None,
    limit: int = 8,
) -> tuple[list[str], list[str]]:
    """The first image of each of the first ``limit`` identities of a batch, with titles.

    Args:
        batch: (B,) dataset indices, in batch order (GS: the seed's images first).
        items: the dataset's ``(path, pid, camid)`` items.
        family_of: pid -> look-alike family, shown in the titles when given.
        limit: identities to keep.

    Returns:
        ``(paths, titles)``, one entry per identity.
    """
    seen: set[int] = set()
    paths: list[str] = []
    titles: list[str] = []
    for index in np.asarray(batch).tolist():
        path, pid = items[index][0], int(items[index][1])
        if pid in seen:
            continue
        seen.add(pid)
        paths.append(str(path))
        titles.append(f"pid {pid}" + (f"\nfam {family_of[pid]}" if family_of and pid in family_of else ""))
        if len(paths) == limit:
            break
    return paths, titles


def plot_pk_vs_gs_batches(
    pk_batch: Sequence[int] | np.ndarray,
    gs_batch: Sequence[int] | np.ndarray,
    items: Sequence[Sequence[Any]],
    family_of: Mapping[int, int] | None = None,
    limit: int = 8,
) -> Figure:
    """Two rows: ``limit`` identities of a PK batch above those of a GS batch (one image each).

    Args:
        pk_batch, gs_batch: (B,) dataset indices of one batch of each sampler.
        items: the dataset's ``(path, pid, camid)`` items.
        family_of: pid -> family, for the titles.
        limit: identities per row (the GS row: the seed, then its nearest classes in order).
    """
    rows = [
        ("PK batch", *one_image_per_identity(pk_batch, items, family_of, limit)),
        ("GS batch", *one_image_per_identity(gs_batch, items, family_of, limit)),
    ]
    ncols = max(max(len(r[1]) for r in rows), 1)
    fig, axes = plt.subplots(2, ncols, figsize=(1.05 * ncols, 4.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (name, paths, titles) in enumerate(rows):
        for j, (path, title) in enumerate(zip(paths, titles)):
            axes[row, j].imshow(load_image(path))
            axes[row, j].set_title(title, fontsize=7)
        axes[row, 0].text(
            -0.15, 0.5, name, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right", fontsize=10
        )
    fig.tight_layout()
    return fig


def plot_batch_log(
    logs: Mapping[str, Sequence[Mapping[str, float]]], key: str = "hardest_neg", points: int = 30
) -> Figure:
    """A per-iteration statistic of :attr:`QAConvCriterion.log`, smoothed, one line per run.

    Args:
        logs: run name -> the criterion's log.
        key: ``"hardest_neg"``, ``"mean_neg"``, ``"hardest_pos"`` or ``"accuracy"``.
        points: the moving-average window is ``len(log) // points`` iterations.
    """
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, log in logs.items():
        if not log:
            continue
        if key not in log[0]:
            raise KeyError(f"key {key!r} not in the log; valid: {sorted(log[0])}")
        values = np.array([row[key] for row in log], dtype=np.float64)  # (T,)
        window = max(1, len(values) // points)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")  # (T - window + 1,)
        ax.plot(np.arange(len(smooth)) + window, smooth, label=name)
    labels = {
        "hardest_neg": "mean hardest-negative score",
        "mean_neg": "mean negative score",
        "hardest_pos": "mean hardest-positive score",
        "accuracy": "in-batch matching accuracy",
    }
    ax.set_xlabel("iteration")
    ax.set_ylabel(labels.get(key, key))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_learning_curves(
    curves: Mapping[str, Sequence[CurvePoint]], target: float | None = None, branch: CurvePoint | None = None
) -> Figure:
    """Rank-1 against images seen and against training seconds, one line per run.

    Args:
        curves: run name -> its points.
        target: a rank-1 level to draw (the time-to-target line).
        branch: the point where runs sharing a warm-up part ways (a dotted vertical line).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if branch is not None:
        axes[0].axvline(branch.images / 1000, color="k", ls=":", lw=1, label="end of shared PK warm-up")
        axes[1].axvline(branch.train_seconds, color="k", ls=":", lw=1, label="end of shared PK warm-up")
    for name, points in curves.items():
        images = [0] + [p.images for p in points]
        seconds = [0.0] + [p.train_seconds for p in points]
        rank1 = [0.0] + [p.rank1 for p in points]
        axes[0].plot(np.asarray(images) / 1000, rank1, marker="o", label=name)
        axes[1].plot(seconds, rank1, marker="o", label=name)
    for ax, xlabel in zip(axes, ("thousands of training images seen", "training seconds (graph builds included)")):
        if target is not None:
            ax.axhline(target, color="grey", ls="--", lw=1, label=f"target R1 {target:.0f}%")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("rank-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_epoch_time(
    num_ids: np.ndarray, times: Mapping[str, np.ndarray], measured: tuple[Sequence[int], Sequence[float]] | None = None
) -> Figure:
    """Epoch seconds against the number of identities (log-log), PK vs GS, with the graph's share.

    Args:
        num_ids: (n,) values of C.
        times: :func:`epoch_seconds`'s output for ``num_ids``.
        measured: ``(C values, seconds)`` of the graph builds actually timed, drawn as dots.
    """
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(num_ids, times["pk"], marker="o", label="PK epoch (N / B iterations)")
    ax.plot(num_ids, times["gs"], marker="s", label="GS epoch (C iterations + graph)")
    ax.plot(num_ids, times["gs_graph"], ls="--", label="of which: graph build")
    if measured is not None:
        ax.scatter(measured[0], measured[1], color="k", zorder=5, s=18, label="graph build, measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(np.asarray(num_ids))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("training identities C")
    ax.set_ylabel("seconds per epoch")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
