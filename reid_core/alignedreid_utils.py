r"""Helpers of the AlignedReID chapter: unit-length stripes for short trainings
(:class:`NormalizedLocal`), global and stripe features in one pass, every test distance of the
ablation (with and without re-ranking) from one set of features, a misaligned example pair,
where the shortest path runs compared with the boxes' known shifts, and the chapter's figures
(the stripe-distance matrix with its shortest path and the matched stripes linked between two
images; path offsets against box shifts; the ablation bar chart).

AlignedReID (Zhang et al. 2017, arXiv 1711.08184) ranks at test time with the global feature,
and optionally with the sum of the global and the aligned local distance,

.. math::
    D_{G+L}(x, y) = \lVert g_x - g_y \rVert_2 + D_L(x, y),

where :math:`D_L` is the shortest-path distance of :mod:`reid_core.alignment` (the public
re-production calls this "test with global + local distance", TWGALD). Either may be re-ranked
with k-reciprocal encoding (Zhong et al. 2017, :mod:`reid_core.evaluation.rerank`). One model
therefore gives several rows of the ablation table; :func:`evaluate_test_distances` computes
each distance block once and evaluates every variant from it.

As a control for the alignment itself, :func:`unaligned_local_distance` compares stripe
:math:`i` of one image with stripe :math:`i` of the other only (the diagonal of the cost matrix),
which is what a part model without alignment does:

.. math::
    D_{\text{row}}(x, y) = \sum_{i=1}^{S} \tanh\!\big(\lVert x_i - y_i \rVert_2 / 2\big).

Chapter: ``notebooks/03_alignedreid.py``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch
from torch import Tensor, nn
from tqdm import tqdm

from reid_core.alignment import aligned_distance, aligned_path
from reid_core.engine.evaluate import EvalResult, evaluate_distance
from reid_core.engine.features import Features
from reid_core.engine.modes import eval_mode
from reid_core.evaluation.distance import compute_distance_matrix
from reid_core.evaluation.rerank import re_ranking
from reid_core.paper_results import PaperResult

__all__ = [
    "TEST_DISTANCES",
    "NormalizedLocal",
    "extract_global_local",
    "unaligned_local_distance",
    "DistanceBlocks",
    "distance_blocks",
    "evaluate_test_distances",
    "AblationRow",
    "ablation_rows",
    "ablation_markdown",
    "paper_results_markdown",
    "ExamplePair",
    "misaligned_pair",
    "cross_camera_pair",
    "box_shifts",
    "mean_path_offsets",
    "expected_path_offset",
    "plot_alignment",
    "plot_path_offsets",
    "plot_ablation_bars",
]

TEST_DISTANCES = ("global", "global+local", "local", "local (row by row)")
"""Names of the test distances :func:`distance_blocks` knows: the global euclidean distance, the
re-production's sum of global and aligned local distances, the aligned local distance alone, and
the local distance without alignment (stripe i against stripe i)."""


# ---------------------------------------------------------------------------- stripe scale
class NormalizedLocal(nn.Module):
    r"""A model whose stripe features are L2-normalised: :math:`l_h \leftarrow l_h / \lVert l_h \rVert_2`.

    The element-wise normalisation :math:`\tanh(\lVert f_i - g_j\rVert / 2)` saturates when the
    stripe features are large: a 128-d ReLU output of a freshly initialised BN layer has
    stripe-to-stripe distances around 9, where :math:`\tanh(4.5) = 0.9998` and its slope is
    :math:`2 \cdot 10^{-4}`. Every cell then costs about 1, every path about :math:`2S - 1`, and
    the local triplet loss hardly moves. The maintainer of the public re-production met the
    same problem and added an L2 normalisation before the distance (its ``normalize_feature``
    option; AlignedReID-Re-Production-Pytorch issue 2); on unit vectors the distances lie in
    [0, 2] and the cell costs in [0, 0.76]. The re-production's 300-epoch runs reached their best
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


# ----------------------------------------------------------------------------------- features
@torch.no_grad()
def extract_global_local(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    flip: bool = False,
    amp: bool = True,
    progress: bool = True,
    desc: str = "features",
) -> tuple[Features, Features]:
    """Global and stripe features of every image, from one forward pass per batch.

    :func:`reid_core.engine.features.extract_features` keeps one output field; the ablation
    needs two (``feat`` and ``local``), and running the network twice would double the cost.

    With ``flip`` the features of the mirrored image are averaged in. A horizontal flip keeps
    every row where it was, so stripe :math:`i` of the mirror is still stripe :math:`i`.

    Args:
        model: returns a :class:`~reid_core.models.outputs.ReIDOutput` with ``feat`` (B, C)
            and ``local`` (B, S, d), e.g. :class:`~reid_core.models.alignedreid.AlignedReID`.
        loader: yields ``(images, pids, camids, ...)`` in dataset order.
        device: where the model runs (default: where its parameters are).
        flip: average with the mirrored image.
        amp: float16 autocast on CUDA.
        progress: tqdm bar.
        desc: the bar's label.

    Returns:
        ``(global, local)``: :class:`Features` (N, C) and (N, S, d), float32 on the CPU, with
        the same pids and camids.

    Raises:
        ValueError: the model's output lacks ``feat`` or ``local``, or the loader is empty.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    use_amp = amp and device.type == "cuda"
    globals_, locals_, pids, camids = [], [], [], []
    with eval_mode(model):  # restores every sub-module's own flag afterwards
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, mininterval=2.0):
            images = batch[0].to(device, non_blocking=True)  # (B, 3, H, W)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                g, l = _global_and_local(model(images))  # (B, C), (B, S, d)
                if flip:
                    g_m, l_m = _global_and_local(model(torch.flip(images, dims=[3])))
                    g, l = (g.float() + g_m.float()) / 2, (l.float() + l_m.float()) / 2
            globals_.append(g.float().cpu())
            locals_.append(l.float().cpu())
            pids.append(np.asarray(batch[1]))
            camids.append(np.asarray(batch[2]))
    if not globals_:
        raise ValueError("extract_global_local: the loader yielded no batches")
    pid_arr, cam_arr = np.concatenate(pids), np.concatenate(camids)
    return Features(torch.cat(globals_), pid_arr, cam_arr), Features(torch.cat(locals_), pid_arr, cam_arr)


def _global_and_local(output: object) -> tuple[Tensor, Tensor]:
    g, l = getattr(output, "feat", None), getattr(output, "local", None)
    if not isinstance(g, Tensor) or not isinstance(l, Tensor) or l.dim() != 3:
        raise ValueError(
            "extract_global_local needs a model output with feat (B, C) and local (B, S, d), "
            f"got feat={None if g is None else tuple(g.shape)}, local={None if l is None else tuple(l.shape)}"
        )
    return g, l


# ---------------------------------------------------------------------------------- distances
def unaligned_local_distance(x: Tensor, y: Tensor) -> Tensor:
    r"""Stripe :math:`i` against stripe :math:`i` only: :math:`\sum_i \tanh(\lVert x_i - y_i\rVert / 2)`.

    The diagonal of AlignedReID's cost matrix, i.e. what the local distance would be if the
    detector always put every body part in the same stripe. The control for the alignment.

    Args:
        x: (N, S, D) stripe features; y: (M, S, D) with the same S and D.

    Returns:
        (N, M) distances in [0, S).
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"x and y must be (N, S, D) and (M, S, D) with the same S and D, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    y = y.to(device=x.device, dtype=x.dtype)
    total = x.new_zeros(x.shape[0], y.shape[0])  # (N, M)
    for s in range(x.shape[1]):  # S is small (6-8); each stripe is one matrix of distances
        total += torch.tanh(torch.cdist(x[:, s], y[:, s]) / 2)  # (N, M)
    return total


@dataclass
class DistanceBlocks:
    """The three blocks a (re-ranked) evaluation needs.

    Attributes:
        q_g: (Q, G) query-gallery distances.
        q_q: (Q, Q) query-query distances, ``None`` when re-ranking is not wanted.
        g_g: (G, G) gallery-gallery distances, ``None`` when re-ranking is not wanted.
    """

    q_g: Tensor
    q_q: Tensor | None = None
    g_g: Tensor | None = None

    def __add__(self, other: "DistanceBlocks") -> "DistanceBlocks":
        """Block-wise sum (a block missing on either side is missing in the sum)."""
        def add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
            return None if a is None or b is None else a + b

        return DistanceBlocks(self.q_g + other.q_g, add(self.q_q, other.q_q), add(self.g_g, other.g_g))


def distance_blocks(
    kind: str,
    query: Features,
    gallery: Features,
    with_rerank_blocks: bool = False,
    device: torch.device | str | None = None,
) -> DistanceBlocks:
    """Query-gallery (and for re-ranking query-query and gallery-gallery) distances of one kind.

    Args:
        kind: ``"global"`` (euclidean between (N, C) features), ``"local"`` (aligned
            distance between (N, S, d) stripes) or ``"local (row by row)"``
            (:func:`unaligned_local_distance`). ``"global+local"`` is a sum: build it with
            ``+`` from the two blocks (see :func:`evaluate_test_distances`).
        query, gallery: features of the kind's shape.
        with_rerank_blocks: also compute q-q and g-g.
        device: where to compute (default: where the features are, i.e. the CPU); a GPU
            makes the aligned distance of a Market-1501-sized gallery take seconds.

    Returns:
        :class:`DistanceBlocks` on ``device``, float32.
    """
    functions = {
        "global": lambda a, b: compute_distance_matrix(a, b, metric="euclidean"),
        "local": lambda a, b: aligned_distance(a, b),
        "local (row by row)": unaligned_local_distance,
    }
    if kind not in functions:
        raise ValueError(f"kind must be one of {sorted(functions)}, got {kind!r}")
    expected_dim = 2 if kind == "global" else 3
    for name, feats in (("query", query), ("gallery", gallery)):
        if feats.features.dim() != expected_dim:
            raise ValueError(f"{kind!r} distance needs {name} features with {expected_dim} dims, "
                             f"got shape {tuple(feats.features.shape)}")
    dist = functions[kind]
    target = query.features.device if device is None else torch.device(device)
    q, g = query.features.to(target), gallery.features.to(target)
    q_g = torch.as_tensor(dist(q, g)).float().to(target)  # (Q, G)
    if not with_rerank_blocks:
        return DistanceBlocks(q_g)
    q_q = torch.as_tensor(dist(q, q)).float().to(target)  # (Q, Q)
    g_g = torch.as_tensor(dist(g, g)).float().to(target)  # (G, G)
    return DistanceBlocks(q_g, q_q, g_g)


def evaluate_test_distances(
    query_global: Features,
    gallery_global: Features,
    query_local: Features | None = None,
    gallery_local: Features | None = None,
    distances: Sequence[str] = ("global", "global+local"),
    rerank: Sequence[bool] = (False, True),
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    device: torch.device | str | None = None,
) -> dict[tuple[str, bool], EvalResult]:
    r"""Every (test distance, re-ranking) variant of one model, from features extracted once.

    Each base distance (global, aligned local, row-by-row local) is computed once, with the
    q-q and g-g blocks only if some variant is re-ranked; ``"global+local"`` is
    :math:`D_G + D_L` block by block (the re-production's TWGALD). Re-ranking is k-reciprocal
    (Zhong et al. 2017) with ``k1, k2, lambda_value`` (paper: 20, 6, 0.3) on the variant's
    own three blocks.

    Args:
        query_global, gallery_global: (Q, C) and (G, C) global features.
        query_local, gallery_local: (Q, S, d) and (G, S, d) stripe features (needed by every
            distance except ``"global"``).
        distances: names from :data:`TEST_DISTANCES`.
        rerank: which of ``False`` (plain) and ``True`` (re-ranked) to evaluate.
        k1, k2, lambda_value: re-ranking hyperparameters.
        device: where distances and re-ranking run (default: where the features are).

    Returns:
        ``{(distance, reranked): EvalResult}`` with CMC, mAP and the (Q, G) distance used.
    """
    unknown = [d for d in distances if d not in TEST_DISTANCES]
    if unknown:
        raise ValueError(f"unknown test distances {unknown}; valid: {list(TEST_DISTANCES)}")
    if not distances or not rerank:
        raise ValueError("distances and rerank must each name at least one variant")
    needs_local = any(d != "global" for d in distances)
    if needs_local and (query_local is None or gallery_local is None):
        raise ValueError(f"distances {list(distances)} need query_local and gallery_local stripe features")
    with_rr = any(rerank)
    cache: dict[str, DistanceBlocks] = {}

    def blocks(kind: str) -> DistanceBlocks:
        if kind not in cache:
            q, g = (query_global, gallery_global) if kind == "global" else (query_local, gallery_local)
            cache[kind] = distance_blocks(kind, q, g, with_rerank_blocks=with_rr, device=device)  # type: ignore[arg-type]
        return cache[kind]

    results: dict[tuple[str, bool], EvalResult] = {}
    for name in distances:
        d = blocks("global") + blocks("local") if name == "global+local" else blocks(name)
        for rr in rerank:
            q_g = d.q_g
            if rr:
                q_g = torch.as_tensor(re_ranking(d.q_g, d.q_q, d.g_g, k1=k1, k2=k2, lambda_value=lambda_value,
                                                 progress=False))  # (Q, G)
            results[(name, bool(rr))] = evaluate_distance(q_g.cpu(), query_global, gallery_global)
    return results


# ------------------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class AblationRow:
    """One cell group of the ablation: a trained model, a test distance, with or without RK.

    Attributes:
        world: the data the model was trained and tested on (e.g. ``"synth (misaligned)"``).
        training: what was trained (e.g. ``"global"``, ``"global + local"``).
        test: the test distance (a name of :data:`TEST_DISTANCES`).
        reranked: with k-reciprocal re-ranking.
        rank1, mAP: percentages.
    """

    world: str
    training: str
    test: str
    reranked: bool
    rank1: float
    mAP: float


def ablation_rows(world: str, training: str, results: Mapping[tuple[str, bool], EvalResult]) -> list[AblationRow]:
    """Turn :func:`evaluate_test_distances`' output for one model into :class:`AblationRow` s."""
    return [AblationRow(world, training, test, rr, r.metrics["rank1"], r.metrics["mAP"])
            for (test, rr), r in results.items()]


def _ordered(values: Iterable[str]) -> list[str]:
    """Unique values in first-seen order."""
    return list(dict.fromkeys(values))


def ablation_markdown(rows: Sequence[AblationRow], tests: Sequence[str] | None = None) -> str:
    """A markdown table: one line per (world, training), ``R1 / mAP`` per (test distance, RK).

    Args:
        rows: the ablation's rows.
        tests: test distances to show, in order (default: as they appear in ``rows``).

    Returns:
        Markdown; a cell with no row is ``-``.
    """
    if not rows:
        raise ValueError("ablation_markdown needs at least one row")
    tests = _ordered(r.test for r in rows) if tests is None else list(tests)
    columns = [(t, rr) for t in tests for rr in (False, True) if any(r.test == t and r.reranked == rr for r in rows)]
    lookup = {(r.world, r.training, r.test, r.reranked): r for r in rows}
    header = "| world | training | " + " | ".join(f"{t}{' + RK' if rr else ''}" for t, rr in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for world in _ordered(r.world for r in rows):
        for training in _ordered(r.training for r in rows if r.world == world):
            cells = []
            for t, rr in columns:
                r = lookup.get((world, training, t, rr))
                cells.append("-" if r is None else f"{r.rank1:.1f} / {r.mAP:.1f}")
            lines.append(f"| {world} | {training} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_results_markdown(results: Sequence[PaperResult]) -> str:
    """The papers' rows as a markdown table (R1 / mAP, '-' where not reported)."""
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = ["| source | method | train | test | RK | R1 | mAP |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.source} | {r.method} | {r.train} | {r.test} | {'yes' if r.reranked else 'no'} | "
              f"{fmt(r.rank1)} | {fmt(r.mAP)} |" for r in results]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ example pairs
@dataclass(frozen=True)
class ExamplePair:
    """Two test images of one identity, for the alignment figure.

    Attributes:
        path_a, path_b: the image files.
        pid: their identity.
        note: how they were chosen (e.g. the boxes' vertical shifts and scales).
    """

    path_a: str
    path_b: str
    pid: int
    note: str


_SPLIT_FOLDERS = {"query": "query", "gallery": "bounding_box_test"}


def misaligned_pair(root: str | Path, same_view: bool = True, same_camera: bool = False) -> ExamplePair:
    r"""The two unoccluded test images of one SynthReID identity whose boxes differ most vertically.

    The renderer records each box's shift and scale (``synthreid_images.csv``). A body part's
    vertical position in the crop moves with the shift and with the scale, so the pair score is
    :math:`|\Delta \mathrm{shift}_y| + |\log(\mathrm{scale}_a / \mathrm{scale}_b)|`. Ties keep
    the first pair in file order, so the choice is deterministic.

    Args:
        root: a SynthReID folder (holding ``synthreid_images.csv``).
        same_view: only pairs seen from the same side (front, back, ...), so that the images
            differ mainly by the box.
        same_camera: only pairs from one camera (same colour cast and background).

    Returns:
        :class:`ExamplePair`.

    Raises:
        FileNotFoundError: no ``synthreid_images.csv`` under ``root`` (not a SynthReID folder).
        ValueError: no identity has two eligible images.
    """
    table = Path(root) / "synthreid_images.csv"
    if not table.is_file():
        raise FileNotFoundError(f"misaligned_pair: {table} not found; root must be a SynthReID folder")
    by_pid: dict[int, list[dict[str, str]]] = {}
    with table.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] in _SPLIT_FOLDERS and row["subject"] == "identity" and row["occluder"] == "none":
                by_pid.setdefault(int(row["pid"]), []).append(row)
    best: tuple[float, dict[str, str], dict[str, str]] | None = None
    for pid in sorted(by_pid):
        rows = by_pid[pid]
        for i, a in enumerate(rows):
            for b in rows[i + 1:]:
                if (same_view and a["view"] != b["view"]) or (same_camera and a["camera"] != b["camera"]):
                    continue
                score = abs(float(a["shift_y"]) - float(b["shift_y"])) + abs(
                    math.log(float(a["scale"]) / float(b["scale"])))
                if best is None or score > best[0]:
                    best = (score, a, b)
    if best is None:
        raise ValueError(f"misaligned_pair: no test identity in {table} has two unoccluded images"
                         + (" seen from the same side" if same_view else "")
                         + (" by the same camera" if same_camera else ""))
    _, a, b = best
    paths = [str(Path(root) / _SPLIT_FOLDERS[r["split"]] / r["filename"]) for r in (a, b)]
    note = "; ".join(f"{r['filename']}: shift_y {float(r['shift_y']):+.3f}, scale {float(r['scale']):.2f}" for r in (a, b))
    return ExamplePair(paths[0], paths[1], int(a["pid"]), note)


def cross_camera_pair(query: Sequence[tuple[str, int, int]], gallery: Sequence[tuple[str, int, int]]) -> ExamplePair:
    """The first query and the first gallery image of its identity from another camera.

    For real datasets, which record no box shifts.

    Args:
        query, gallery: the reader's ``(path, pid, camid)`` lists.

    Raises:
        ValueError: no query has a cross-camera match.
    """
    for path, pid, cam in query:
        for g_path, g_pid, g_cam in gallery:
            if g_pid == pid and g_cam != cam:
                return ExamplePair(str(path), str(g_path), int(pid), f"query camera {cam + 1}, gallery camera {g_cam + 1}")
    raise ValueError("cross_camera_pair: no query has a gallery image of its identity from another camera")


# ----------------------------------------------------------------- where the path goes, measured
def box_shifts(root: str | Path) -> dict[str, tuple[float, float]]:
    """Each SynthReID image's box geometry: file name -> (shift_y, scale).

    ``shift_y`` is the vertical shift of the person in the crop as a fraction of the height
    (positive = lower), ``scale`` the person's size relative to a perfect box (see
    :mod:`reid_core.data.synthreid_plan`).

    Raises:
        FileNotFoundError: no ``synthreid_images.csv`` under ``root``.
    """
    table = Path(root) / "synthreid_images.csv"
    if not table.is_file():
        raise FileNotFoundError(f"box_shifts: {table} not found; root must be a SynthReID folder")
    with table.open(newline="") as f:
        return {row["filename"]: (float(row["shift_y"]), float(row["scale"])) for row in csv.DictReader(f)}


def expected_path_offset(shift_y_a: float, shift_y_b: float, stripes: int) -> float:
    r"""Where the shortest path should run if the stripes matched the same body parts, in stripes.

    The renderer puts the body's top at :math:`(1 - \beta s)/2 + t_y` of the height (body
    fraction :math:`\beta`, scale :math:`s`, shift :math:`t_y`), so a point at relative body
    height :math:`u` sits at :math:`1/2 + t_y + \beta s (u - 1/2)`. Averaged over the body
    (:math:`\bar u = 1/2`) the scale cancels, and part :math:`u` of image B lies
    :math:`S (t_{y,B} - t_{y,A})` stripes below the same part of image A on average: the mean of
    (column - row) over the cells of a correctly aligned path.

    Args:
        shift_y_a, shift_y_b: the two boxes' vertical shifts (fractions of the height).
        stripes: S.

    Returns:
        :math:`S (t_{y,B} - t_{y,A})`.
    """
    return stripes * (shift_y_b - shift_y_a)


def mean_path_offsets(local_a: Tensor, local_b: Tensor) -> Tensor:
    """Mean signed offset (column - row) of the shortest path of each pair (a_k, b_k).

    0 for a path that hugs the diagonal; positive when stripe i of A is matched with lower
    stripes of B (B's person sits lower in its box). The path must start and end in the
    corners, so the offset of a shifted pair is smaller than the shift itself.

    Args:
        local_a, local_b: (K, S_a, d) and (K, S_b, d) stripe features of K pairs.

    Returns:
        (K,) float32 offsets, in stripes.
    """
    if local_a.dim() != 3 or local_b.dim() != 3 or local_a.shape[0] != local_b.shape[0]:
        raise ValueError(f"local_a and local_b must be (K, S, d) with the same K, "
                         f"got {tuple(local_a.shape)} and {tuple(local_b.shape)}")
    offsets = torch.empty(local_a.shape[0])
    for k in range(local_a.shape[0]):  # one small DP per pair: K is a few hundred
        cells = aligned_path(local_a[k].float(), local_b[k].float()).path.float()  # (S_a + S_b - 1, 2)
        offsets[k] = (cells[:, 1] - cells[:, 0]).mean()
    return offsets


# ------------------------------------------------------------------------------------ figures
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
        link = ConnectionPatch(xyA=(w_a - 0.5, (i + 0.5) * h_a / s_a - 0.5), coordsA=ax_a.transData,
                               xyB=(-0.5, (j + 0.5) * h_b / s_b - 0.5), coordsB=ax_b.transData,
                               color=cmap(float(cost[i, j])), lw=2.0, alpha=0.95)
        fig.add_artist(link)
    shown = ax_m.imshow(cost, cmap=cmap, vmin=0.0, vmax=max(float(cost.max()), 1e-6))
    outline = [patheffects.Stroke(linewidth=3.6, foreground="black"), patheffects.Normal()]
    ax_m.plot(path[:, 1], path[:, 0], color="white", lw=2.0, marker="o", ms=4, mec="black", label="shortest path",
              path_effects=outline)
    if s_a == s_b:
        ax_m.plot(range(s_a), range(s_a), color="tab:red", lw=1.2, ls="--", label="row by row (no alignment)")
    ax_m.set_xlabel(f"stripe of {titles[1]}", fontsize=8)
    ax_m.set_ylabel(f"stripe of {titles[0]}", fontsize=8)
    ax_m.yaxis.set_label_position("right")
    ax_m.yaxis.tick_right()
    ax_m.tick_params(labelsize=7)
    ax_m.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.colorbar(shown, ax=ax_m, fraction=0.046, pad=0.16, label=r"cost $d_{ij}$")
    ax_m.set_title(f"path {float(align.distance):.2f} ({len(path)} cells), "
                   f"diagonal {diagonal:.2f} ({min(s_a, s_b)} cells)", fontsize=8)
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
    fig, axes = plt.subplots(len(metrics), len(worlds), figsize=(4.6 * len(worlds), 3.1 * len(metrics)),
                             squeeze=False, sharey="row")
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
                bars = ax.bar(xs, ys, width=width * 0.95, color=color, label=f"test {test}{' + RK' if rr else ''}",
                              hatch="//" if rr else None, edgecolor="white" if rr else None)
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
            ax.plot(centres, means, marker="s", ms=5, lw=1.8, color=dots.get_facecolor()[0][:3],
                    label=f"{label}: mean per bin")
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
