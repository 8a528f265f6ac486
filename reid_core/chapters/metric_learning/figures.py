r"""Figures of the metric-learning chapter: embeddings on the unit sphere, head sizes, AdaCos's scale.

A 3-D embedding :math:`x` is drawn by its direction :math:`\hat x = x / \lVert x\rVert` on the
unit sphere, since that is all a cosine (retrieval, or any normalised head) looks at. Two
views:

* ``projection="3d"``: a 3-D scatter on a wire sphere (only the near side is readable);
* ``projection="equal_area"``: the whole sphere in the Hammer equal-area map, longitude
  :math:`\lambda = \operatorname{atan2}(y, x)`, latitude :math:`\varphi = \arcsin z`, so equal
  areas of the sphere stay equal on the page and a tight cluster looks tight wherever it is.
  The map cuts the sphere along one half great circle (its left and right edges); the sphere
  is first rotated so that this cut runs as far as possible from every point
  (:func:`seam_rotation`), which keeps clusters whole.

Chapter: ``notebooks/02_metric_learning.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "unit_directions",
    "seam_rotation",
    "seam_distance",
    "sphere_to_lonlat",
    "plot_sphere_embeddings",
    "plot_head_parameters",
    "plot_scale_history",
    "plot_target_logits",
    "plot_digit_grid",
]

Projection = Literal["equal_area", "3d"]


def unit_directions(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; (N, 3) -> (N, 3). A zero row raises (it has no direction)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != 3:
        raise ValueError(f"features must be (N, 3) to be drawn on the sphere, got {features.shape}")
    norms = np.linalg.norm(features, axis=1, keepdims=True)  # (N, 1)
    if (norms == 0).any():
        raise ValueError(f"{int((norms == 0).sum())} embeddings are exactly zero and have no direction")
    return features / norms


def _fibonacci_sphere(n: int) -> np.ndarray:
    """(n, 3) nearly uniform unit vectors (the Fibonacci lattice)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n  # (n,) uniform in z = uniform in area
    phi = np.pi * (3.0 - np.sqrt(5.0)) * k  # golden-angle steps
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def seam_distance(directions: np.ndarray, back: np.ndarray, north: np.ndarray) -> np.ndarray:
    r"""Angle (radians) of each point to the seam, the half great circle from ``north`` through ``back`` to ``-north``.

    A point p projects onto the plane of ``north`` and ``back`` as (a1, a2) = (p.n, p.b). If
    a2 >= 0 its nearest seam point is that projection's direction, at angle
    :math:`\arccos\sqrt{a_1^2 + a_2^2}`; otherwise it is the nearer pole, at
    :math:`\arccos|a_1|`.

    Args:
        directions: (N, 3) unit vectors.
        back: (3,) unit vector, the middle of the seam, or (M, 3) for M seams at once.
        north: (3,) or (M, 3) unit vectors orthogonal to ``back``, the seam's end.

    Returns:
        (N,) angles in [0, pi], or (N, M) for M seams.
    """
    a1, a2 = directions @ north.T, directions @ back.T  # (N,) or (N, M) each
    in_plane = np.sqrt(np.clip(a1 * a1 + a2 * a2, 0.0, 1.0))
    return np.where(a2 >= 0, np.arccos(in_plane), np.arccos(np.clip(np.abs(a1), 0.0, 1.0)))


def seam_rotation(directions: np.ndarray, num_candidates: int = 400, num_turns: int = 12) -> np.ndarray:
    r"""The rotation R (3, 3) whose map seam runs as far as possible from every point.

    The Hammer map cuts the sphere along the meridian at longitude :math:`\pm\pi` (the back
    half great circle from pole to pole); a cluster on it is split between the map's left and
    right edges. Among ``num_candidates`` seam centres (a Fibonacci lattice) times ``num_turns``
    orientations (each in both directions), the one whose closest point is farthest away (:func:`seam_distance`) is
    rotated to the back: its centre to -x, its end to +z.

    Args:
        directions: (N, 3) unit vectors.
        num_candidates: seam centres tried.
        num_turns: orientations of the seam tried around each centre.

    Returns:
        (3, 3) rotation matrix (orthonormal, det +1); rotated points are ``directions @ R.T``.
    """
    backs = _fibonacci_sphere(num_candidates)  # (K, 3)
    helper = np.where(np.abs(backs[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])  # (K, 3) not parallel to b
    e1 = np.cross(backs, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)  # (K, 3)
    e2 = np.cross(backs, e1)  # (K, 3); (e1, e2) span the plane orthogonal to b
    psi = np.linspace(0.0, 2 * np.pi, 2 * num_turns, endpoint=False)  # (T,) both seam directions
    norths = np.cos(psi)[None, :, None] * e1[:, None] + np.sin(psi)[None, :, None] * e2[:, None]  # (K, T, 3)
    backs_kt = np.broadcast_to(backs[:, None], norths.shape).reshape(-1, 3)  # (K*T, 3)
    norths = norths.reshape(-1, 3)  # (K*T, 3)
    best = int(np.argmax(seam_distance(directions, backs_kt, norths).min(axis=0)))  # over (N, K*T) angles
    b, n = backs_kt[best], norths[best]
    # new axes as rows: x' = -b (front = away from the seam), z' = n, y' = z' x x' (right-handed)
    return np.stack([-b, np.cross(n, -b), n])


def sphere_to_lonlat(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in (-pi, pi] and latitude in [-pi/2, pi/2] of (N, 3) unit vectors."""
    lon = np.arctan2(directions[:, 1], directions[:, 0])  # (N,)
    lat = np.arcsin(np.clip(directions[:, 2], -1.0, 1.0))  # (N,)
    return lon, lat


def _draw_wire_sphere(ax: Any) -> None:
    """A light wire-frame unit sphere on a 3-D axes (``mpl_toolkits.mplot3d.Axes3D``)."""
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
    ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", lw=0.4)


def plot_sphere_embeddings(
    features: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray] | np.ndarray,
    weights: Mapping[str, np.ndarray | None] | None = None,
    projection: Projection = "equal_area",
    ncols: int = 4,
    class_names: Sequence[str] | None = None,
    point_size: float = 6.0,
    cmap: str = "tab10",
) -> Figure:
    """One panel per run: the directions of its 3-D embeddings, coloured by class.

    Args:
        features: ``{panel title: (N, 3) embeddings}``.
        labels: ``{panel title: (N,) class labels}``, or one (N,) array shared by all panels;
            integer labels index the colour map.
        weights: optional ``{panel title: (C, 3) class weights}``, drawn as black-edged stars
            in their class's colour (row c = class c); ``None`` entries are skipped.
        projection: ``"equal_area"`` (Hammer map of the whole sphere) or ``"3d"``.
        ncols: panels per row.
        class_names: legend labels for classes 0..C-1 (default: the class numbers).
        point_size: scatter marker size.
        cmap: a qualitative matplotlib colour map.

    Returns:
        The figure.
    """
    if projection not in ("equal_area", "3d"):
        raise ValueError(f"projection must be 'equal_area' or '3d', got {projection!r}")
    names = list(features)
    if not names:
        raise ValueError("features is empty: nothing to draw")
    nrows = int(np.ceil(len(names) / ncols))
    ncols = min(ncols, len(names))
    size = (3.6, 2.3) if projection == "equal_area" else (3.0, 3.0)
    fig = plt.figure(figsize=(size[0] * ncols, size[1] * nrows + 0.5))
    colors = plt.get_cmap(cmap)
    all_classes: set[int] = set()
    for k, name in enumerate(names):
        lab = np.asarray(labels[name] if isinstance(labels, Mapping) else labels)
        u = unit_directions(features[name])  # (N, 3)
        if len(lab) != len(u):
            raise ValueError(f"panel {name!r}: {len(u)} embeddings but {len(lab)} labels")
        w_raw = None if weights is None else weights.get(name)
        w = None if w_raw is None else unit_directions(w_raw)  # (C, 3) class-weight directions
        all_classes.update(int(c) for c in np.unique(lab))
        if projection == "3d":
            ax = fig.add_subplot(nrows, ncols, k + 1, projection="3d")
            _draw_wire_sphere(ax)
            ax.scatter(u[:, 0], u[:, 1], u[:, 2], c=colors(lab % colors.N), s=point_size, depthshade=True)
            if w is not None:
                ax.scatter(
                    w[:, 0],
                    w[:, 1],
                    w[:, 2],
                    c=colors(np.arange(len(w)) % colors.N),
                    marker="*",
                    s=160,
                    edgecolors="k",
                    linewidths=0.8,
                    depthshade=False,
                )
            ax.set_box_aspect((1, 1, 1))
            ax.set_axis_off()
        else:
            ax = fig.add_subplot(nrows, ncols, k + 1, projection="hammer")
            rot = seam_rotation(u)  # (3, 3)
            lon, lat = sphere_to_lonlat(u @ rot.T)
            ax.scatter(lon, lat, c=colors(lab % colors.N), s=point_size, linewidths=0)
            if w is not None:
                wlon, wlat = sphere_to_lonlat(w @ rot.T)
                ax.scatter(
                    wlon,
                    wlat,
                    c=colors(np.arange(len(w)) % colors.N),
                    marker="*",
                    s=140,
                    edgecolors="k",
                    linewidths=0.8,
                    zorder=3,
                )
            ax.set_xticklabels([])
            ax.set_yticklabels([])
            ax.grid(alpha=0.3)
        ax.set_title(name, fontsize=10)
    handles = [
        plt.Line2D(
            [],
            [],
            ls="",
            marker="o",
            color=colors(c % colors.N),
            label=class_names[c] if class_names is not None else str(c),
        )
        for c in sorted(all_classes)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 10), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_head_parameters(
    class_counts: Sequence[int],
    heads: Mapping[str, Sequence[int]],
    backbones: Mapping[str, int],
    marks: Mapping[str, int] | None = None,
) -> Figure:
    """Head parameters against the number of classes (log-log), with backbones as horizontal lines.

    Args:
        class_counts: the C values on the x axis.
        heads: ``{label: parameter count at each C}``.
        backbones: ``{label: parameter count}``, drawn as dashed lines.
        marks: ``{label: C}``, vertical dotted lines at named class counts (e.g. Market-1501).

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for label, counts in heads.items():
        ax.plot(class_counts, counts, marker="o", ms=3, label=label)
    for k, (label, count) in enumerate(backbones.items()):
        ax.axhline(count, ls="--", lw=1, color=f"C{k + len(heads)}", label=label)
    for label, c in (marks or {}).items():
        ax.axvline(c, ls=":", color="0.4", lw=1)
        # x in data units, y in axes units: the label sits at the bottom whatever the y range
        ax.text(
            c,
            0.03,
            f" {label}",
            rotation=90,
            va="bottom",
            ha="right",
            fontsize=8,
            color="0.3",
            transform=ax.get_xaxis_transform(),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of training classes C")
    ax.set_ylabel("parameters")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_scale_history(
    scales: Mapping[str, Sequence[float]], fixed: Mapping[str, float] | None = None, xlabel: str = "iteration"
) -> Figure:
    """The AdaCos scale after every update, one line per run, with the fixed scales dashed.

    Args:
        scales: ``{run: [scale after update 1, 2, ...]}``.
        fixed: ``{label: value}`` horizontal reference lines (e.g. the fixed AdaCos scale).
        xlabel: the x axis label.

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for k, (name, values) in enumerate(scales.items()):
        ax.plot(np.arange(1, len(values) + 1), values, color=f"C{k}", label=name)
    for k, (label, value) in enumerate((fixed or {}).items()):
        ax.axhline(value, ls="--", lw=1, color=f"C{k}", alpha=0.7, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("scale s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_target_logits(target_logits: Mapping[str, Callable[[Tensor], Tensor]], num_points: int = 361) -> Figure:
    r"""The target-class logit :math:`g(\theta_y)` (before the scale) of each head against :math:`\theta_y`.

    A margin head replaces :math:`\cos\theta_y` by a smaller, still decreasing
    :math:`g(\theta_y)`: the sample must get closer to its class weight to reach the same logit.

    Args:
        target_logits: ``{label: g}`` with ``g`` mapping a tensor of cosines to the target values
            (e.g. a margin head's ``target_logit``, or ``lambda c: c`` for softmax).
        num_points: samples of :math:`\theta \in [0, \pi]`.

    Returns:
        The figure.
    """
    theta = torch.linspace(0.0, np.pi, num_points, dtype=torch.float64)  # (T,)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    with torch.no_grad():
        for label, g in target_logits.items():
            values = g(torch.cos(theta).unsqueeze(1)).squeeze(1)  # (T,)
            ax.plot(np.degrees(theta.numpy()), values.numpy(), label=label)
    ax.set_xlabel(r"angle to the own class weight $\theta_y$ (degrees)")
    ax.set_ylabel(r"target logit / scale")
    ax.set_xlim(0, 180)
    ax.set_ylim(-2.2, 1.05)
    ax.set_xticks(range(0, 181, 30))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_digit_grid(
    images: np.ndarray | Tensor, labels: Sequence[int] | np.ndarray | Tensor, ncols: int = 10
) -> Figure:
    """A grid of (N, 1, 8, 8) or (N, 8, 8) digit images titled with their labels."""
    images = np.asarray(images).reshape(len(images), 8, 8)
    labels = np.asarray(labels)
    nrows = int(np.ceil(len(images) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.9 * ncols, 1.05 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, lab in zip(axes.flat, images, labels):
        ax.imshow(img, cmap="gray_r")
        ax.set_title(str(int(lab)), fontsize=9)
    fig.tight_layout()
    return fig
