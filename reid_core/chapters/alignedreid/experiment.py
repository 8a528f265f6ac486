r"""The AlignedReID chapter's experiment: features, every test distance of the ablation, example
pairs, and where the shortest path runs compared with the boxes' known shifts.

AlignedReID (Zhang et al. 2017, :cite:`zhang2017alignedreid`) ranks at test time with the global
feature, and optionally with the sum of the global and the aligned local distance,

.. math::
    D_{G+L}(x, y) = \lVert g_x - g_y \rVert_2 + D_L(x, y),

where :math:`D_L` is the shortest-path distance of :mod:`reid_core.alignment` (the public
re-production calls this "test with global + local distance", TWGALD). Either may be re-ranked
with k-reciprocal encoding (Zhong et al. 2017, :mod:`reid_core.evaluation.rerank`). One model
therefore gives several rows of the ablation table; :func:`evaluate_test_distances` computes
each distance block once and evaluates every variant from it. The control without alignment is
:func:`reid_core.alignment.unaligned_local_distance`.

Chapter: ``notebooks/03_alignedreid.py``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from reid_core.alignment import aligned_distance, aligned_path
from reid_core.alignment.unaligned import unaligned_local_distance
from reid_core.engine.evaluate import EvalResult, evaluate_distance
from reid_core.engine.features import Features
from reid_core.engine.precision import autocast_context, autocast_dtype
from reid_core.evaluation.distance import compute_distance_matrix
from reid_core.evaluation.rerank.k_reciprocal import re_ranking
from reid_core.modes import eval_mode

__all__ = [
    "TEST_DISTANCES",
    "extract_global_local",
    "DistanceBlocks",
    "distance_blocks",
    "evaluate_test_distances",
    "AblationRow",
    "ablation_rows",
    "ablation_markdown",
    "ExamplePair",
    "misaligned_pair",
    "cross_camera_pair",
    "box_shifts",
    "expected_path_offset",
    "mean_path_offsets",
    "ARMS",
    "WorldSpec",
    "build_alignedreid",
    "evaluate_run_model",
    "path_offsets",
    "widest_path_offsets",
    "band_offset_bound",
    "train_and_evaluate",
    "train_and_evaluate_many",
]


TEST_DISTANCES = ("global", "global+local", "local", "local (row by row)")
"""Names of the test distances :func:`distance_blocks` knows: the global euclidean distance, the
re-production's sum of global and aligned local distances, the aligned local distance alone, and
the local distance without alignment (stripe i against stripe i)."""


@torch.no_grad()
def extract_global_local(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    flip: bool = False,
    amp: bool = True,
    progress: bool = True,
    desc: str = "features",
    precision: str = "auto",
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
        amp: float16 autocast on CUDA, when ``precision`` is ``"auto"``.
        progress: tqdm bar.
        desc: the bar's label.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (bfloat16 autocast, the CPU profiles' fast
            path); see :mod:`reid_core.engine.precision`. Features come back float32 either way.

    Returns:
        ``(global, local)``: :class:`Features` (N, C) and (N, S, d), float32 on the CPU, with
        the same pids and camids.

    Raises:
        ValueError: the model's output lacks ``feat`` or ``local``, or the loader is empty.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    dtype = autocast_dtype(precision, device, amp=amp)
    globals_, locals_, pids, camids = [], [], [], []
    with eval_mode(model):  # restores every sub-module's own flag afterwards
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, mininterval=2.0):
            images = batch[0].to(device, non_blocking=True)  # (B, 3, H, W)
            with autocast_context(dtype, device):
                g, loc = _global_and_local(model(images))  # (B, C), (B, S, d)
                if flip:
                    g_m, loc_m = _global_and_local(model(torch.flip(images, dims=[3])))
                    g, loc = (g.float() + g_m.float()) / 2, (loc.float() + loc_m.float()) / 2
            globals_.append(g.float().cpu())
            locals_.append(loc.float().cpu())
            pids.append(np.asarray(batch[1]))
            camids.append(np.asarray(batch[2]))
    if not globals_:
        raise ValueError("extract_global_local: the loader yielded no batches")
    pid_arr, cam_arr = np.concatenate(pids), np.concatenate(camids)
    return Features(torch.cat(globals_), pid_arr, cam_arr), Features(torch.cat(locals_), pid_arr, cam_arr)


def _global_and_local(output: object) -> tuple[Tensor, Tensor]:
    g, loc = getattr(output, "feat", None), getattr(output, "local", None)
    if not isinstance(g, Tensor) or not isinstance(loc, Tensor) or loc.dim() != 3:
        raise ValueError(
            "extract_global_local needs a model output with feat (B, C) and local (B, S, d), "
            f"got feat={None if g is None else tuple(g.shape)}, local={None if loc is None else tuple(loc.shape)}"
        )
    return g, loc


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

    def __add__(self, other: DistanceBlocks) -> DistanceBlocks:
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
            raise ValueError(
                f"{kind!r} distance needs {name} features with {expected_dim} dims, "
                f"got shape {tuple(feats.features.shape)}"
            )
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
                q_g = torch.as_tensor(
                    re_ranking(d.q_g, d.q_q, d.g_g, k1=k1, k2=k2, lambda_value=lambda_value, progress=False)
                )  # (Q, G)
            results[(name, bool(rr))] = evaluate_distance(q_g.cpu(), query_global, gallery_global)
    return results


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
    return [
        AblationRow(world, training, test, rr, r.metrics["rank1"], r.metrics["mAP"])
        for (test, rr), r in results.items()
    ]


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
            for b in rows[i + 1 :]:
                if (same_view and a["view"] != b["view"]) or (same_camera and a["camera"] != b["camera"]):
                    continue
                score = abs(float(a["shift_y"]) - float(b["shift_y"])) + abs(
                    math.log(float(a["scale"]) / float(b["scale"]))
                )
                if best is None or score > best[0]:
                    best = (score, a, b)
    if best is None:
        raise ValueError(
            f"misaligned_pair: no test identity in {table} has two unoccluded images"
            + (" seen from the same side" if same_view else "")
            + (" by the same camera" if same_camera else "")
        )
    _, a, b = best
    paths = [str(Path(root) / _SPLIT_FOLDERS[r["split"]] / r["filename"]) for r in (a, b)]
    note = "; ".join(
        f"{r['filename']}: shift_y {float(r['shift_y']):+.3f}, scale {float(r['scale']):.2f}" for r in (a, b)
    )
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
                return ExamplePair(
                    str(path), str(g_path), int(pid), f"query camera {cam + 1}, gallery camera {g_cam + 1}"
                )
    raise ValueError("cross_camera_pair: no query has a gallery image of its identity from another camera")


def box_shifts(root: str | Path) -> dict[str, tuple[float, float]]:
    """Each SynthReID image's box geometry: file name -> (shift_y, scale).

    ``shift_y`` is the vertical shift of the person in the crop as a fraction of the height
    (positive = lower), ``scale`` the person's size relative to a perfect box (see
    :mod:`reid_core.data.synthreid.plan`).

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
        raise ValueError(
            f"local_a and local_b must be (K, S, d) with the same K, "
            f"got {tuple(local_a.shape)} and {tuple(local_b.shape)}"
        )
    offsets = torch.empty(local_a.shape[0])
    for k in range(local_a.shape[0]):  # one small DP per pair: K is a few hundred
        cells = aligned_path(local_a[k].float(), local_b[k].float()).path.float()  # (S_a + S_b - 1, 2)
        offsets[k] = (cells[:, 1] - cells[:, 0]).mean()
    return offsets


# ------------------------------------------------------------------------------------------------
# One training run of the chapter's experiment (an arm and a seed), for run_side_by_side.

ARMS = ("global", "global + local", "global + local (row by row)", "mutual")
"""What a run trains: the global branch only (:math:`L_{ID} + L_G`); the global and the local
branch with the aligned local distance (:math:`L_{ID} + L_G + L_L`, the paper); the same with
the row-by-row local distance in :math:`L_L` (the control: a local branch without alignment);
and a mutual pair of global + local networks (Sec. 3.3 of the paper)."""


@dataclass(frozen=True)
class WorldSpec:
    """Where a run finds its data (picklable, so that it can travel to a worker process).

    Attributes:
        name: the data's name in results (e.g. ``"synthreid_synth"``).
        root: a SynthReID folder, or ``None`` for a real dataset.
        dataset: a :func:`~reid_core.data.build_dataset` name when ``root`` is ``None``.
        data_root: the datasets' folder for ``dataset``.
        kwargs: extra reader arguments (e.g. CUHK03's ``split``).
    """

    name: str
    root: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    kwargs: tuple[tuple[str, object], ...] = ()

    def load(self) -> object:
        """The dataset reader (``train``, ``query``, ``gallery`` lists)."""
        from reid_core.data import SynthReID, build_dataset

        if self.root is not None:
            return SynthReID(self.root, verbose=False)
        if self.dataset is None or self.data_root is None:
            raise ValueError(f"WorldSpec {self.name!r} needs a SynthReID root or a dataset name and data_root")
        return build_dataset(self.dataset, self.data_root, verbose=False, **dict(self.kwargs))


def build_alignedreid(num_classes: int, recipe: Mapping[str, object], weights: object | None = None) -> nn.Module:
    """The chapter's network: :class:`~reid_core.models.AlignedReID` with the recipe's backbone.

    With ``weights`` (a :class:`~reid_core.book.PretrainedBackbone`) the backbone starts from
    them (the CPU profiles' SynthReID pretraining); else from ImageNet when the recipe says
    ``pretrained``. With ``normalize_local`` the stripes are L2-normalised
    (:class:`~reid_core.models.NormalizedLocal`).
    """
    from reid_core.book import load_pretrained_backbone
    from reid_core.models import AlignedReID, NormalizedLocal

    net = AlignedReID(
        num_classes,
        backbone=str(recipe["backbone"]),
        pretrained=bool(recipe["pretrained"]) and weights is None,
        last_stride=int(recipe["last_stride"]),  # type: ignore[arg-type]
        global_pool="avg",
        local_pool="max",
        local_dim=int(recipe["local_dim"]),  # type: ignore[arg-type]
    )
    if weights is not None:
        load_pretrained_backbone(net.backbone, weights)  # type: ignore[arg-type]
    return NormalizedLocal(net) if recipe["normalize_local"] else net


def _criterion(arm: str, recipe: Mapping[str, object]) -> nn.Module:
    from reid_core.losses import AlignedReIDLoss, MutualLearningLoss

    common = dict(margin=recipe["margin"], local_margin=recipe["local_margin"], mining="global")
    if arm == "mutual":
        return MutualLearningLoss(
            **common,  # type: ignore[arg-type]
            id_weight=recipe["id_weight"],
            prob_mutual_weight=recipe["prob_mutual_weight"],
            global_mutual_weight=recipe["global_mutual_weight"],
            local_mutual_weight=0.0,
        )
    return AlignedReIDLoss(
        **common,  # type: ignore[arg-type]
        id_weight=recipe["id_weight"],  # type: ignore[arg-type]
        local_weight=0.0 if arm == "global" else 1.0,
        local_distance="row" if arm == "global + local (row by row)" else "aligned",
    )


def _metrics(result: EvalResult) -> dict[str, float]:
    return {k: float(v) for k, v in result.metrics.items()}


def evaluate_run_model(
    model: nn.Module,
    query_loader: Iterable,
    gallery_loader: Iterable,
    local_trained: bool,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    progress: bool = False,
    rerank: bool = True,
) -> tuple[dict[str, dict[str, float]], tuple[Features, Features, Features, Features]]:
    """Every test variant of one trained model: ``{variant: metrics}`` and its features.

    Variants: ``"global"`` (and ``"global + RK"`` with ``rerank``); for a model whose local branch
    was trained also ``"global+local"`` (+ RK), ``"local"`` (aligned) and ``"local (row by row)"``.

    Returns:
        ``(variants, (q_global, g_global, q_local, g_local))``.
    """
    qg, ql = extract_global_local(model, query_loader, device, precision=precision, progress=progress)
    gg, gl = extract_global_local(model, gallery_loader, device, precision=precision, progress=progress)
    main = ("global", "global+local") if local_trained else ("global",)
    results = evaluate_test_distances(
        qg, gg, ql, gl, distances=main, rerank=(False, True) if rerank else (False,), device=device
    )
    if local_trained:
        results |= evaluate_test_distances(
            qg, gg, ql, gl, distances=("local", "local (row by row)"), rerank=(False,), device=device
        )
    variants = {f"{test}{' + RK' if rr else ''}": _metrics(r) for (test, rr), r in results.items()}
    return variants, (qg, gg, ql, gl)


def widest_path_offsets(local_a: Tensor, local_b: Tensor) -> Tensor:
    r"""Largest distance of each pair's shortest path from the diagonal, :math:`\max |j - i|` over its cells.

    A path with widest offset 1 never leaves the band of one stripe around the diagonal.

    Args:
        local_a, local_b: (K, S_a, d) and (K, S_b, d) stripe features of K pairs.

    Returns:
        (K,) long, in stripes.
    """
    if local_a.dim() != 3 or local_b.dim() != 3 or local_a.shape[0] != local_b.shape[0]:
        raise ValueError(
            f"local_a and local_b must be (K, S, d) with the same K, "
            f"got {tuple(local_a.shape)} and {tuple(local_b.shape)}"
        )
    widest = torch.empty(local_a.shape[0], dtype=torch.long)
    for k in range(local_a.shape[0]):
        cells = aligned_path(local_a[k].float(), local_b[k].float()).path  # (S_a + S_b - 1, 2)
        widest[k] = (cells[:, 1] - cells[:, 0]).abs().max()
    return widest


def band_offset_bound(stripes: int) -> float:
    r"""The largest mean offset of a path that stays within one stripe of the diagonal: :math:`(S-1)/(2S-1)`.

    Such a path starts and ends on the diagonal (offset 0) and each move changes the offset by
    one, so at best it alternates 0, 1, 0, 1, ..., 0 over its :math:`2S - 1` cells: :math:`S - 1`
    ones (5/11 for S = 6, 3/7 for S = 4).
    """
    if stripes < 1:
        raise ValueError(f"stripes must be >= 1, got {stripes}")
    return (stripes - 1) / (2 * stripes - 1)


def path_offsets(
    root: str | Path, query: Sequence, gallery: Sequence, features: tuple[Features, Features, Features, Features]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted and learned path offsets of up to 600 same-identity query-gallery pairs.

    The prediction is :func:`expected_path_offset` from the boxes' recorded shifts; the learned
    offsets are :func:`mean_path_offsets` and :func:`widest_path_offsets` of the model's stripes.
    Pairs are an even subsample of all same-identity pairs, in a fixed order.

    Returns:
        ``(predicted, mean, widest)``, (K,) arrays each.
    """
    q_glob, g_glob, q_loc, g_loc = features
    shifts = box_shifts(root)
    q_names = [Path(p).name for p, _, _ in query]
    g_names = [Path(p).name for p, _, _ in gallery]
    qi, gi = np.nonzero((q_glob.pids[:, None] == g_glob.pids[None, :]) & (q_glob.pids[:, None] > 0))
    keep = np.linspace(0, len(qi) - 1, num=min(len(qi), 600)).astype(int)
    qi, gi = qi[keep], gi[keep]
    stripes = q_loc.features.shape[1]
    expected = np.array(
        [expected_path_offset(shifts[q_names[a]][0], shifts[g_names[b]][0], stripes) for a, b in zip(qi, gi)]
    )
    measured = mean_path_offsets(q_loc.features[qi], g_loc.features[gi]).numpy()
    widest = widest_path_offsets(q_loc.features[qi], g_loc.features[gi]).numpy()
    return expected, measured, widest


def train_and_evaluate(
    *,
    arm: str,
    seed: int,
    world: WorldSpec,
    recipe: Mapping[str, object],
    weights: object | None = None,
    device: str = "cpu",
    figure_paths: Sequence[str] = (),
    offsets: bool = False,
    rerank: bool = True,
    checkpoint_root: str | None = None,
    progress: bool = False,
) -> dict[str, object]:
    """One run of the chapter's experiment: train ``arm`` on ``world`` with ``seed``, evaluate it.

    Seeds everything first, so the result depends only on the arguments (and the thread count).
    Seed ``s`` gives every arm the same initial weights (the pretrained backbone and the same
    draws for the new heads: the model always has its local branch, used or not) and the same
    batches and flips, so arms are paired. A mutual pair's first network starts from exactly
    those weights, its second from the next draws.

    Args:
        arm: one of :data:`ARMS`.
        seed: the run's seed.
        world: the data.
        recipe: the profile's settings (backbone, input size, batches, optimiser, losses).
        weights: the pretrained backbone (:class:`~reid_core.book.PretrainedBackbone`) or ``None``.
        device: where to train.
        figure_paths: images whose stripes the caller wants for its alignment figure.
        offsets: also return the predicted and learned path offsets (SynthReID only).
        rerank: also evaluate the re-ranked variants (k-reciprocal, k1=20, k2=6, lambda=0.3).
        checkpoint_root: resume from / write ``last.pt`` checkpoints under this folder (long runs).
        progress: bars.

    Returns:
        A picklable dict: ``variants`` (test variant -> metrics; a mutual run also has
        ``"net 2: ..."`` variants), ``history``, ``train_seconds``, ``stripes``, and on request
        ``figure_local`` ((len(figure_paths), S, d)) and ``offsets`` (predicted, learned).
    """
    import time

    from reid_core.engine import TrainConfig, Trainer, build_test_loader, build_train_loader, seed_everything
    from reid_core.losses import MutualPair

    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    seed_everything(seed, deterministic=True)  # deterministic kernels where torch has a choice
    dev = torch.device(device)
    data = world.load()
    height, width = int(recipe["height"]), int(recipe["width"])  # type: ignore[arg-type]
    precision = str(recipe.get("precision", "auto"))
    preload = dev.type == "cpu" or world.root is not None
    train_loader = build_train_loader(
        data.train,  # type: ignore[attr-defined]
        height,
        width,
        batch_size=int(recipe["ids_per_batch"]) * int(recipe["num_instances"]),  # type: ignore[arg-type]
        num_instances=int(recipe["num_instances"]),  # type: ignore[arg-type]
        preload=preload,
        workers=0 if dev.type == "cpu" else None,
        seed=seed,
        batch_augment=bool(recipe.get("batch_augment", False)),
        device=dev,
        pad=0,  # flips only (the re-production's augmentation): pad-and-crop would itself misalign the boxes
        random_erasing_p=0.0,
    )
    test_workers = 0 if dev.type == "cpu" else None
    query_loader = build_test_loader(data.query, height, width, preload=preload, workers=test_workers)  # type: ignore[attr-defined]
    gallery_loader = build_test_loader(data.gallery, height, width, preload=preload, workers=test_workers)  # type: ignore[attr-defined]
    num_classes = len({pid for _, pid, _ in data.train})  # type: ignore[attr-defined]
    torch.manual_seed(seed)  # the heads' initial weights: the same draws in every arm
    model = build_alignedreid(num_classes, recipe, weights)
    if arm == "mutual":
        model = MutualPair(model, build_alignedreid(num_classes, recipe, weights))
    config = TrainConfig(
        epochs=int(recipe["epochs"]),  # type: ignore[arg-type]
        optimizer=str(recipe["optimizer"]),
        lr=float(recipe["lr"]),  # type: ignore[arg-type]
        weight_decay=float(recipe["weight_decay"]),  # type: ignore[arg-type]
        scheduler=str(recipe["scheduler"]),
        milestones=tuple(recipe["milestones"]),  # type: ignore[arg-type]
        decay_start=recipe["decay_start"],  # type: ignore[arg-type]
        warmup_epochs=0.0,
        max_iters_per_epoch=recipe["max_iters_per_epoch"],  # type: ignore[arg-type]
        seed=seed,
        progress=progress,
        precision=precision,
        checkpoint_dir=checkpoint_root,
    )
    start = time.perf_counter()
    history = Trainer(model, _criterion(arm, recipe), train_loader, config, device=dev).fit()
    train_seconds = time.perf_counter() - start
    nets = (model.net1, model.net2) if arm == "mutual" else (model,)
    variants: dict[str, dict[str, float]] = {}
    features = None
    for k, net in enumerate(nets):
        found, feats = evaluate_run_model(
            net,
            query_loader,
            gallery_loader,
            arm != "global",
            dev,
            precision=precision,
            progress=progress,
            rerank=rerank,
        )
        variants |= {(name if k == 0 else f"net 2: {name}"): m for name, m in found.items()}
        features = feats if k == 0 else features
    out: dict[str, object] = {
        "arm": arm,
        "seed": seed,
        "world": world.name,
        "variants": variants,
        "history": history,
        "train_seconds": train_seconds,
        "stripes": int(features[2].features.shape[1]),  # type: ignore[index]
    }
    if figure_paths:
        loader = build_test_loader([(p, 0, 0) for p in figure_paths], height, width, preload=False, workers=0)
        _, local = extract_global_local(nets[0], loader, dev, precision=precision, progress=False)
        out["figure_local"] = local.features  # (len(figure_paths), S, d)
    if offsets and world.root is not None:
        out["offsets"] = path_offsets(world.root, data.query, data.gallery, features)  # type: ignore[arg-type, attr-defined]
    return out


def train_and_evaluate_many(runs: Sequence[Mapping[str, object]], **shared: object) -> list[dict[str, object]]:
    """:func:`train_and_evaluate` for several runs, one after another in this process.

    Each run seeds itself first, so its result is the same as a call on its own (the tests check
    it); packing several runs into one worker process only saves the cost of starting one
    process per run.

    Args:
        runs: one dict of :func:`train_and_evaluate`'s per-run arguments (``arm``, ``seed``, ...)
            per run.
        **shared: the arguments every run shares (``world`` may be per run or shared).

    Returns:
        The runs' results, in order.
    """
    return [train_and_evaluate(**{**shared, **run}) for run in runs]  # type: ignore[arg-type]
