r"""The Graph Sampling chapter's experiment: optimiser groups, evaluation with the QAConv matcher,
learning curves timed honestly, batch hardness, and epoch-time arithmetic.

Graph Sampling (GS; Liao & Shao, CVPR 2022, :cite:`liao2022graph`) trains QAConv with batches
made of a seed class and its nearest classes. The parts are in the library
(:class:`~reid_core.samplers.GraphSampler`, :class:`~reid_core.samplers.graph_epoch.GraphSamplingCallback`,
:class:`~reid_core.models.QAConv`, :class:`~reid_core.losses.qaconv_criterion.QAConvCriterion`);
this module holds what only the chapter measures:

* :class:`LearningCurve`: the wall time each epoch costs (graph building included, evaluation
  excluded), the images seen, and the test accuracy after each epoch; :func:`time_to_reach`
  reads off when a rank-1 target was first reached;
* :func:`batch_hardness`: how alike the identities of a batch are, for PK and GS batches
  under one fixed model;
* :func:`epoch_seconds`: a PK epoch is :math:`\lfloor N/B \rfloor` iterations, a GS epoch
  :math:`C` iterations plus the graph, :math:`t_\text{graph}(C) \approx aC + bC^2`;
* :func:`train_and_evaluate`: one run of the chapter's experiment (one arm, one seed), the
  function the notebook runs side by side over arms and seeds: PK, GS, PK until the in-batch
  accuracy passes a threshold then GS, or QAConv 1.x's class memory
  (:class:`~reid_core.chapters.graph_sampling.class_memory.ClassMemoryCriterion`).

Chapter: ``notebooks/05_graph_sampling.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reid_core.engine.evaluate import EvalResult, evaluate_reid
from reid_core.losses.qaconv_criterion import score_statistics
from reid_core.models.qaconv import QAConv
from reid_core.modes import eval_mode
from reid_core.samplers.class_distance import build_class_distance

__all__ = [
    "qaconv_param_groups",
    "evaluate_qaconv",
    "CurvePoint",
    "LearningCurve",
    "time_to_reach",
    "family_index",
    "same_family_fraction",
    "batch_hardness",
    "measure_graph_seconds",
    "fit_graph_cost",
    "epoch_seconds",
    "ARMS",
    "CONTROL_PRESETS",
    "prepare_world",
    "qaconv_net",
    "GraphAfterAccuracy",
    "classes_covered",
    "train_and_evaluate",
    "PooledBackbone",
    "pretrained_feature_rank1",
]


def qaconv_param_groups(model: nn.Module, matcher: nn.Module, backbone_lr_mult: float = 0.1) -> list[dict[str, Any]]:
    """Optimizer groups of QAConv 2.1: the backbone at ``backbone_lr_mult`` x lr, the rest at lr.

    The paper's code trains the neck and the QAConv head at lr 0.005 and the pretrained
    backbone at 0.1 x that (arXiv 2104.01546; QAConv 2.1 ``main.py``).

    Args:
        model: a network with a ``backbone`` attribute (e.g. :class:`~reid_core.models.qaconv.QAConvNet`).
        matcher: the QAConv head (its parameters go with the neck).
        backbone_lr_mult: factor of the backbone's learning rate.

    Returns:
        ``[{"params": backbone, "lr_mult": backbone_lr_mult}, {"params": rest, "lr_mult": 1.0}]``
        for :class:`~reid_core.engine.trainer.Trainer`'s ``param_groups``.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"model must have a .backbone module, got {type(model).__name__}")
    if backbone_lr_mult <= 0:
        raise ValueError(f"backbone_lr_mult must be > 0, got {backbone_lr_mult}")
    backbone_ids = {id(p) for p in backbone.parameters()}
    rest = [p for p in model.parameters() if id(p) not in backbone_ids] + list(matcher.parameters())
    return [{"params": list(backbone.parameters()), "lr_mult": backbone_lr_mult}, {"params": rest, "lr_mult": 1.0}]


def evaluate_qaconv(
    model: nn.Module,
    matcher: QAConv,
    query_loader: Any,
    gallery_loader: Any,
    device: torch.device | str | None = None,
    flip: bool = False,
    chunk: int | None = None,
    progress: bool = False,
    precision: str = "auto",
) -> EvalResult:
    r"""CMC/mAP with the QAConv distance :math:`D_{qg} = -\mathrm{QAConv}(F_q, F_g)`.

    Feature maps are extracted once; all pairs are scored by
    :meth:`~reid_core.models.qaconv.QAConv.match_all` in blocks (BN running statistics).

    Args:
        model: returns ``feature_map`` (N, d, h, w).
        matcher: the trained QAConv head.
        query_loader, gallery_loader: test loaders.
        device: where the model runs.
        flip: average each map with its mirror's (flipped back).
        chunk: block size of the matching (``None``: the matcher's default).
        progress: tqdm bars.
        precision: autocast of the feature extraction (``"bf16"`` on the CPU fast path); the
            matching itself runs in float32.
    """

    def distance(q: Tensor, g: Tensor) -> Tensor:
        return -matcher.match_all(q, g, chunk=chunk, out_device="cpu", progress=progress)  # (Q, G)

    return evaluate_reid(
        model,
        query_loader,
        gallery_loader,
        flip=flip,
        field="feature_map",
        distance_fn=distance,
        device=device,
        progress=progress,
        precision=precision,
    )


@dataclass
class CurvePoint:
    """One evaluation during training.

    Attributes:
        epoch: epochs done (1-based; counted across continued curves).
        iterations: iterations done.
        images: images seen.
        train_seconds: wall seconds of training so far (graph rebuilds included).
        rank1, mAP: percentages.
    """

    epoch: int
    iterations: int
    images: int
    train_seconds: float
    rank1: float
    mAP: float


@dataclass
class LearningCurve:
    """Trainer callback: time each epoch (graph rebuild included) and evaluate after it.

    Put it **first** in the callbacks list, so that its clock starts before the graph rebuild
    of :class:`GraphSamplingCallback`; its own evaluation runs after the clock stops.

    To continue the curve of an earlier run (a shared warm-up), pass its ``points`` and
    totals: :meth:`continued` does it.

    Attributes:
        evaluate: ``evaluate(model) -> EvalResult``; ``None``: only time.
        every: evaluate every ``every`` epochs (and always after the last one).
        points: the :class:`CurvePoint` of each evaluation.
        train_seconds, images, iterations, epochs: running totals.
    """

    evaluate: Callable[[nn.Module], EvalResult] | None = None
    every: int = 1
    points: list[CurvePoint] = field(default_factory=list)
    train_seconds: float = 0.0
    images: int = 0
    iterations: int = 0
    epochs: int = 0
    _start: float | None = None
    _start_iteration: int = 0

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")

    def continued(
        self, evaluate: Callable[[nn.Module], EvalResult] | None = None, every: int | None = None
    ) -> LearningCurve:
        """A new curve that starts where this one ends (same points and totals, copied).

        ``evaluate`` / ``every`` left ``None`` keep this curve's.
        """
        return LearningCurve(
            evaluate=evaluate if evaluate is not None else self.evaluate,
            every=every if every is not None else self.every,
            points=list(self.points),
            train_seconds=self.train_seconds,
            images=self.images,
            iterations=self.iterations,
            epochs=self.epochs,
        )

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self._start = time.perf_counter()
        self._start_iteration = int(trainer.state.iteration)

    def on_epoch_end(self, trainer: Any, epoch: int, stats: Mapping[str, float]) -> None:
        if self._start is None:
            raise RuntimeError("LearningCurve.on_epoch_end called before on_epoch_start")
        self.train_seconds += time.perf_counter() - self._start
        self._start = None
        self.images += int(stats["images"])
        self.iterations += int(trainer.state.iteration) - self._start_iteration
        self.epochs += 1
        last = epoch + 1 >= trainer.config.epochs or trainer.stop_training
        if self.evaluate is not None and ((epoch + 1) % self.every == 0 or last):
            result = self.evaluate(trainer.model)
            self.points.append(
                CurvePoint(
                    self.epochs,
                    self.iterations,
                    self.images,
                    self.train_seconds,
                    result.metrics["rank1"],
                    result.metrics["mAP"],
                )
            )


def time_to_reach(points: Sequence[CurvePoint], rank1: float, key: str = "train_seconds") -> float | None:
    """When a learning curve first reached ``rank1``, linearly interpolated between evaluations.

    Before the first evaluation the curve is taken to start at (0, 0).

    Args:
        points: the curve, in training order.
        rank1: target rank-1 (percent).
        key: ``"train_seconds"``, ``"images"`` or ``"iterations"``.

    Returns:
        The interpolated value of ``key``, or ``None`` if the target was never reached.
    """
    if key not in ("train_seconds", "images", "iterations"):
        raise ValueError(f"key must be 'train_seconds', 'images' or 'iterations', got {key!r}")
    prev_x, prev_y = 0.0, 0.0
    for p in points:
        x, y = float(getattr(p, key)), p.rank1
        if y >= rank1:
            if y == prev_y:
                return x
            return prev_x + (x - prev_x) * (rank1 - prev_y) / (y - prev_y) if rank1 > prev_y else prev_x
        prev_x, prev_y = x, y
    return None


def family_index(identities: Sequence[Mapping[str, Any]], relabel_split: str | None = None) -> dict[int, int]:
    """``pid -> look-alike family`` from SynthReID's ``identities`` (``synthreid.json``).

    Args:
        identities: dicts with ``pid``, ``family`` and ``split``.
        relabel_split: ``None``: keys are the rendered pids. ``"train"``: keys are the
            relabelled training pids ``0..C-1`` the readers give (the split's pids in sorted
            order, as :func:`reid_core.data.base.relabel` numbers them).
    """
    try:
        pairs = [(int(i["pid"]), int(i["family"]), i.get("split")) for i in identities]
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"identities must be dicts with 'pid' and 'family', as in synthreid.json: {err}") from err
    if relabel_split is None:
        return {pid: fam for pid, fam, _ in pairs}
    chosen = sorted((pid, fam) for pid, fam, split in pairs if split == relabel_split)
    if not chosen:
        raise ValueError(f"no identity has split {relabel_split!r}")
    return {rank: fam for rank, (_, fam) in enumerate(chosen)}


def same_family_fraction(batch_pids: Sequence[int] | np.ndarray, family_of: Mapping[int, int]) -> float:
    """Fraction of a batch's identities that share their look-alike family with another one in it.

    A ground-truth measure of batch hardness on SynthReID: family members differ in one or two
    attributes only. Random PK batches of 32 among 2,000 identities in families of 6 rarely
    hold two members of a family; GS batches, built from nearest classes, should.

    Args:
        batch_pids: (B,) pids of the batch (repeats: K images per identity).
        family_of: pid -> family.
    """
    pids = sorted({int(p) for p in np.asarray(batch_pids).tolist()})
    missing = [p for p in pids if p not in family_of]
    if missing:
        raise KeyError(f"pids {missing[:5]} have no family in family_of")
    families = [family_of[p] for p in pids]
    counts: dict[int, int] = {}
    for f in families:
        counts[f] = counts.get(f, 0) + 1
    return sum(counts[f] > 1 for f in families) / len(pids)


@torch.no_grad()
def batch_hardness(
    model: nn.Module,
    matcher: QAConv,
    dataset: Any,
    batches: np.ndarray,
    family_of: Mapping[int, int] | None = None,
    device: torch.device | str | None = None,
    transform: Callable[[Any], Tensor] | None = None,
) -> dict[str, float]:
    r"""How hard batches are under one fixed model: mean over the batches of the in-batch statistics.

    With :math:`D = -S` the QAConv distance within a batch, reports the mean negative distance
    :math:`\overline{D_{an}}`, the mean hardest-negative distance :math:`\overline{\min_n D_{an}}`,
    the mean hardest-positive distance, and (with ``family_of``) the same-family fraction.
    Evaluated in eval mode on the images as the dataset serves them (or with ``transform`` on
    its preloaded images), so only the sampler differs between two calls.

    Args:
        model: returns ``feature_map``.
        matcher: QAConv head.
        dataset: an ``ImageDataset``; ``dataset[i][0]`` is the image, ``dataset[i][1]`` the pid.
        batches: (n, B) dataset indices, one batch per row.
        family_of: pid -> family (SynthReID), for :func:`same_family_fraction`.
        device: where to run (default: the model's).
        transform: applied to ``dataset.preloaded[i]`` instead of ``dataset[i]`` (e.g. the test
            transform, to measure without augmentation).

    Returns:
        ``{"neg_dist", "hardest_neg_dist", "hardest_pos_dist", "same_family"}`` (the last NaN
        without ``family_of``).
    """
    batches = np.asarray(batches)
    if batches.ndim != 2 or batches.shape[0] == 0:
        raise ValueError(f"batches must be a non-empty (n, B) index array, got shape {batches.shape}")
    if transform is not None and getattr(dataset, "preloaded", None) is None:
        raise ValueError("transform needs a dataset built with preload=True")
    if device is None:
        device = next(model.parameters()).device
    rows: list[dict[str, float]] = []
    with eval_mode(model, matcher):
        for batch in batches:
            if transform is not None:
                images = torch.stack([transform(dataset.preloaded[int(i)]) for i in batch])  # (B, 3, H, W)
            else:
                images = torch.stack([dataset[int(i)][0] for i in batch])  # (B, 3, H, W)
            labels = torch.as_tensor([dataset.items[int(i)][1] for i in batch], device=device)  # (B,)
            scores = matcher.pairwise(model(images.to(device)).feature_map).float()  # (B, B)
            stats = score_statistics(scores, labels)
            rows.append(
                {
                    "neg_dist": -stats["mean_neg"],
                    "hardest_neg_dist": -stats["hardest_neg"],
                    "hardest_pos_dist": -stats["hardest_pos"],
                    "same_family": same_family_fraction(labels.cpu().numpy(), family_of) if family_of else float("nan"),
                }
            )
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def measure_graph_seconds(
    model: nn.Module,
    matcher: nn.Module | str,
    items: Sequence[Sequence[Any]],
    transform: Callable[[Any], Tensor],
    num_classes: Sequence[int],
    image_loader: Callable[[Any], Any] | None = None,
    device: torch.device | str | None = None,
    chunk_size: int | None = None,
    seed: int = 0,
) -> list[float]:
    """Wall seconds of one graph build (embed C images + C x C matching) for each C.

    The first C classes (sorted pid order) of ``items`` are used.

    Args:
        model, matcher, transform, image_loader, chunk_size: as for :class:`GraphSamplingCallback`.
        items: training items.
        num_classes: the values of C to time, each at most the number of classes in ``items``.
        device: where to run (default: the model's).
        seed: seeds the representatives.

    Returns:
        One time per entry of ``num_classes``.
    """
    pids = sorted({int(it[1]) for it in items})
    if not num_classes or max(num_classes) > len(pids) or min(num_classes) < 2:
        raise ValueError(f"num_classes must be values in [2, {len(pids)}], got {list(num_classes)}")
    if device is None:
        device = next(model.parameters()).device
    kwargs: dict[str, Any] = {} if image_loader is None else {"loader": image_loader}
    seconds = []
    for c in num_classes:
        keep = set(pids[:c])
        subset = [it for it in items if int(it[1]) in keep]
        start = time.perf_counter()
        build_class_distance(
            model, subset, transform, matcher, device=device, seed=seed, chunk_size=chunk_size, progress=False, **kwargs
        )
        seconds.append(time.perf_counter() - start)
    return seconds


def fit_graph_cost(num_classes: Sequence[int], seconds: Sequence[float]) -> tuple[float, float]:
    r"""Least-squares :math:`t(C) = aC + bC^2` (a, b >= 0): embedding is linear in C, matching quadratic.

    Returns:
        ``(a, b)`` in seconds per class and per class pair.
    """
    c = np.asarray(num_classes, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    if c.shape != t.shape or c.size < 2:
        raise ValueError(f"need at least two (C, seconds) pairs of equal length, got {c.size} and {t.size}")
    design = np.stack([c, c**2], axis=1)  # (n, 2)
    from scipy.optimize import nnls

    (a, b), _ = nnls(design, t)
    return float(a), float(b)


def epoch_seconds(
    num_ids: int | np.ndarray,
    images_per_id: float,
    batch_size: int,
    iteration_seconds: float,
    graph_cost: tuple[float, float] = (0.0, 0.0),
) -> dict[str, np.ndarray]:
    r"""Seconds of one epoch of PK and of GS for ``num_ids`` identities.

    * PK: every image once, :math:`\lfloor C n / B \rfloor` iterations (n images per identity).
    * GS: every class seeds one batch, :math:`C` iterations, plus the graph
      :math:`aC + bC^2`.

    So a GS epoch is :math:`B / n` times as many images as a PK epoch (about 10.7 for B = 64,
    n = 6); what GS saves is epochs, not time per epoch.

    Args:
        num_ids: C (scalar or array).
        images_per_id: n.
        batch_size: B.
        iteration_seconds: seconds of one training iteration of B images.
        graph_cost: ``(a, b)`` of :func:`fit_graph_cost`.

    Returns:
        ``{"pk": ..., "gs": ..., "gs_graph": ...}`` arrays of the shape of ``num_ids``.
    """
    if batch_size < 1 or images_per_id <= 0 or iteration_seconds < 0:
        raise ValueError("batch_size, images_per_id must be positive and iteration_seconds >= 0")
    c = np.asarray(num_ids, dtype=np.float64)
    a, b = graph_cost
    graph = a * c + b * c**2
    return {
        "pk": np.floor(c * images_per_id / batch_size) * iteration_seconds,
        "gs": c * iteration_seconds + graph,
        "gs_graph": graph,
    }


# ------------------------------------------------------------------ one run of the experiment

ARMS: dict[str, str] = {
    "pk": "QAConv + PK sampler",
    "gs": "QAConv + GS sampler",
    "pk_then_gs": "QAConv + PK until in-batch accuracy passes the threshold, then GS",
    "memory": "QAConv 1.x class memory (PK batches)",
}
"""The arms of the chapter's experiment, with their labels."""


CONTROL_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "synth_gs_nofamily": ("synth_gs", {"lookalike_family_size": 1}),
    "smoke_nofamily": ("smoke", {"lookalike_family_size": 1}),
}
"""The control worlds: a preset with its cause switched off (no look-alike families: every
identity drawn on its own), as ``name -> (base preset, changed arguments)``. Used where
:data:`reid_core.data.SYNTHREID_PRESETS` does not (yet) define the name."""


def prepare_world(data_root: str | Path, preset: str) -> Path:
    """Render a SynthReID preset (or one of :data:`CONTROL_PRESETS`) under ``data_root/synthreid/<name>``.

    Returns:
        The dataset folder.
    """
    from reid_core.data import SYNTHREID_PRESETS, ensure_synthreid, prepare_synthreid

    if preset in SYNTHREID_PRESETS:
        return prepare_synthreid(data_root, preset)
    if preset not in CONTROL_PRESETS:
        raise ValueError(f"unknown world {preset!r}; valid: {sorted({*SYNTHREID_PRESETS, *CONTROL_PRESETS})}")
    base, change = CONTROL_PRESETS[preset]
    root = Path(data_root) / "synthreid" / preset
    ensure_synthreid(root, progress=False, **{**SYNTHREID_PRESETS[base], **change})
    return root


def qaconv_net(recipe: Mapping[str, Any], weights: Any = None) -> nn.Module:
    """The chapter's :class:`~reid_core.models.qaconv.QAConvNet`, its backbone loaded *before* it is cut.

    A pretrained backbone file holds all four stages; QAConvNet drops ``layer4``. So the full
    backbone is built, loaded with
    :func:`~reid_core.book.pretrained.load_pretrained_backbone`, cut after ``layer3``, and
    its weights copied in.

    Args:
        recipe: ``backbone``, ``pretrained`` (ImageNet, used when ``weights`` is ``None``),
            ``neck_dim``, ``height``, ``width``.
        weights: a :class:`~reid_core.book.pretrained.PretrainedBackbone`, or ``None``.
    """
    from reid_core.book.pretrained import load_pretrained_backbone
    from reid_core.models import QAConvNet, ResNetBackbone

    net = QAConvNet(
        backbone=recipe["backbone"],
        pretrained=bool(recipe.get("pretrained", False)) and weights is None,
        neck_dim=recipe["neck_dim"],
        height=recipe["height"],
        width=recipe["width"],
    )
    if weights is not None:
        full = ResNetBackbone(recipe["backbone"], pretrained=False, last_stride=1)
        load_pretrained_backbone(full, weights)
        full.layer4 = nn.Identity()  # cut as QAConvNet cuts
        net.backbone.load_state_dict(full.state_dict())
    return net


class GraphAfterAccuracy:
    """Trainer callback: PK batches until the in-batch accuracy of an epoch passes ``threshold``, then GS.

    The chapter's hypothesis: hard batches help once random batches are solved. The loader
    draws from a :class:`~reid_core.samplers.GraphSampler`, which serves PK batches until its
    first graph; after the first epoch whose mean in-batch matching accuracy (the criterion's
    log) reaches ``threshold``, the graph is built at the start of every epoch.

    Put it after :class:`LearningCurve` in the callbacks, so the graph builds are timed.

    Attributes:
        switch_epoch: the first GS epoch (0-based), ``None`` while PK.
        accuracies: the mean in-batch accuracy of each PK epoch.
    """

    def __init__(self, graph: Any, log: list[dict[str, float]], threshold: float = 0.9) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.graph, self.log, self.threshold = graph, log, threshold
        self.switch_epoch: int | None = None
        self.accuracies: list[float] = []
        self._first = 0

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self._first = len(self.log)
        if self.switch_epoch is not None:
            self.graph.rebuild(trainer.model, trainer.device, epoch)

    def on_epoch_end(self, trainer: Any, epoch: int, stats: Mapping[str, float]) -> None:
        if self.switch_epoch is None:
            rows = self.log[self._first :]
            accuracy = float(np.mean([r["accuracy"] for r in rows])) if rows else 0.0
            self.accuracies.append(accuracy)
            if accuracy >= self.threshold:
                self.switch_epoch = epoch + 1


def classes_covered(iterations: int, num_classes: int, neighbours: int) -> dict[str, int]:
    """How much of the class graph truncated GS epochs use: one seed class per iteration.

    Args:
        iterations: GS iterations run.
        num_classes: C.
        neighbours: k = B / K - 1 neighbours per batch.

    Returns:
        ``{"seed_classes": min(iterations, C), "num_classes": C, "class_visits": iterations * (k + 1)}``.
    """
    return {
        "seed_classes": min(iterations, num_classes),
        "num_classes": num_classes,
        "class_visits": iterations * (neighbours + 1),
    }


def _reader(spec: Mapping[str, Any]) -> Any:
    """A dataset reader from ``{"name": "synthreid", "root": ...}`` or ``{"name": <dataset>, "data_root": ...}``."""
    from reid_core.data import SynthReID, build_dataset

    if spec["name"] == "synthreid":
        return SynthReID(spec["root"], verbose=False)
    return build_dataset(spec["name"], spec["data_root"], verbose=False, **dict(spec.get("options", {})))


def train_and_evaluate(
    arm: str,
    seed: int,
    *,
    train_spec: Mapping[str, Any],
    recipe: Mapping[str, Any],
    cross_specs: Mapping[str, Mapping[str, Any]] | None = None,
    weights: Any = None,
    device: str = "cpu",
    split: str = "test",
    curve_every: int | None = 1,
    evaluate_start: bool = True,
    return_state: bool = False,
    checkpoint_dir: str | None = None,
) -> dict[str, Any]:
    """One run of the chapter's experiment: train QAConv with one arm's sampler (or loss), evaluate.

    Seeds everything first; the network is the pretrained backbone (``weights``) cut after
    ``layer3`` plus a fresh neck and QAConv head drawn from ``seed``. For one seed, every arm
    starts from the same weights and (PK, memory, and PK-then-GS until it switches) draws the
    same PK batches. Renders nothing; safe to call in a worker process.

    Args:
        arm: a key of :data:`ARMS`.
        seed: the run's seed.
        train_spec: the training world (see ``_reader``).
        recipe: the notebook's profile entries (backbone, input size, batch, optimiser, epochs,
            ``max_iters_per_epoch`` = iterations per epoch (a GS graph per epoch), precision, ...).
        cross_specs: name -> reader spec of the test sets of other domains (evaluated once, at the end).
        weights: the :class:`~reid_core.book.pretrained.PretrainedBackbone` (``None``: ImageNet or scratch).
        device: ``"cpu"`` or ``"cuda"``.
        split: ``"test"``, or ``"validation"`` (train on the training identities minus a carved
            validation split and evaluate on it: for choosing recipes).
        curve_every: evaluate every this many epochs (the learning curve); ``None``: only at the end.
        evaluate_start: with ``curve_every``, also evaluate the starting weights (the curve's first
            point, iteration 0). The arms of one seed start from the same weights, so one arm
            per seed is enough; the notebook shares its point.
        return_state: also return the trained model's and matcher's state dicts (for figures).
        checkpoint_dir: per-run checkpoints (GPU runs); ``None``: none.

    Returns:
        A dict: ``arm``, ``seed``, ``rank1``, ``mAP``, ``rank5``, ``rank10`` (last evaluation, the
        chosen split), ``cross`` (name -> metrics), ``curve`` (list of :class:`CurvePoint` as dicts),
        ``train_seconds``, ``graph_seconds``, ``images``, ``iterations``, ``batch_log`` (the
        criterion's per-iteration statistics), ``switch_epoch``, ``pk_accuracies``,
        ``coverage`` (GS arms: :func:`classes_covered`), ``num_classes``; with ``return_state``
        also ``state`` = ``(model_state, matcher_state)``.
    """
    from reid_core.chapters.graph_sampling.class_memory import ClassMemoryCriterion
    from reid_core.data import build_transforms, carve_validation
    from reid_core.engine import (
        AdaptiveLossStep,
        FreezeBackboneBN,
        TrainConfig,
        Trainer,
        build_test_loader,
        build_train_loader,
        seed_everything,
    )
    from reid_core.losses import QAConvCriterion
    from reid_core.samplers import GraphSampler, GraphSamplingCallback, RandomIdentitySampler, preloaded_image_lookup

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {sorted(ARMS)}")
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    seed_everything(seed)
    dev = torch.device(device)
    data = _reader(train_spec)
    train, query, gallery = data.train, data.query, data.gallery
    if split == "validation":
        carved = carve_validation(train, recipe.get("validation_fraction", 0.2), seed=0)
        train, query, gallery = carved.train, carved.query, carved.gallery
    height, width = recipe["height"], recipe["width"]
    preload = bool(recipe.get("preload", True))
    with contextlib.redirect_stderr(io.StringIO()):  # no preload bars from every run
        loaders = {
            "test": (
                build_test_loader(query, height, width, preload=preload, workers=0),
                build_test_loader(gallery, height, width, preload=preload, workers=0),
            )
        }
    pids = [pid for _, pid, _ in train]
    num_classes = len(set(pids))
    B, K = recipe["batch_size"], recipe["num_instances"]
    test_transform = build_transforms(height, width, is_train=False)

    seed_everything(seed)  # the neck and head are drawn from the seed alone
    model = qaconv_net(recipe, weights).to(dev)
    matcher = model.make_matcher().to(dev)
    if arm == "pk" or arm == "memory":
        sampler: Any = RandomIdentitySampler(pids, B, K, seed=seed)
    else:
        sampler = GraphSampler(pids, B, K, seed=seed)  # PK until its first graph
    with contextlib.redirect_stderr(io.StringIO()):
        loader = build_train_loader(
            train,
            height,
            width,
            B,
            K,
            sampler=sampler,
            preload=preload,
            workers=0,
            seed=seed,
            batch_augment=bool(recipe.get("batch_augment", False)),
            device=dev,
            pad=recipe["pad"],
            random_erasing_p=recipe["random_erasing_p"],
            color_jitter=recipe["color_jitter"],
        )
    criterion: nn.Module
    if arm == "memory":
        criterion = ClassMemoryCriterion(matcher, num_classes, gamma=recipe.get("memory_gamma", 2.0))
    else:
        criterion = QAConvCriterion(matcher, loss=recipe["loss"], margin=recipe["margin"])

    def evaluate(m: nn.Module, q: Any = None, g: Any = None) -> EvalResult:
        q, g = (q, g) if q is not None else loaders["test"]
        return evaluate_qaconv(
            m,
            matcher,
            q,
            g,
            device=dev,
            flip=recipe["flip_test"],
            chunk=recipe["graph_chunk"],
            precision=recipe.get("precision", "auto"),
        )

    epochs = int(recipe["epochs"])
    curve = LearningCurve(evaluate=evaluate if curve_every else None, every=curve_every or epochs)
    callbacks: list[Any] = [AdaptiveLossStep(max_epochs=epochs)] if recipe.get("adaptive_step") else []
    callbacks.append(curve)
    graph = switch = None
    if arm in ("gs", "pk_then_gs"):
        image_loader = preloaded_image_lookup(loader.dataset) if preload else None
        graph = GraphSamplingCallback(
            sampler,
            train,
            test_transform,
            matcher,
            image_loader=image_loader,
            chunk_size=recipe["graph_chunk"],
            seed=seed,
        )
        if arm == "gs":
            callbacks.append(graph)
        else:
            switch = GraphAfterAccuracy(graph, criterion.log, recipe.get("switch_accuracy", 0.9))
            callbacks.append(switch)
    if recipe.get("freeze_backbone_bn"):
        callbacks.append(FreezeBackboneBN())
    config = TrainConfig(
        epochs=epochs,
        optimizer=recipe["optimizer"],
        lr=recipe["lr"],
        weight_decay=recipe["weight_decay"],
        nesterov=recipe["nesterov"],
        scheduler="constant",
        warmup_epochs=0,
        amp=recipe.get("amp", True),
        precision=recipe.get("precision", "auto"),
        grad_clip=recipe.get("grad_clip"),
        max_iters_per_epoch=recipe.get("max_iters_per_epoch"),
        checkpoint_dir=checkpoint_dir,
        seed=seed,
        progress=bool(recipe.get("progress", False)),
    )
    trainer = Trainer(
        model,
        criterion,
        loader,
        config,
        device=dev,
        callbacks=callbacks,
        param_groups=qaconv_param_groups(model, matcher, recipe["backbone_lr_mult"]),
    )
    if curve_every and evaluate_start:  # where every arm of this seed starts: the same weights
        start = evaluate(model).metrics
        curve.points.append(CurvePoint(0, 0, 0, 0.0, start["rank1"], start["mAP"]))
    history = trainer.fit()
    if not curve.points or curve.points[-1].epoch != curve.epochs:  # the curve's last point is the final model
        final = evaluate(model).metrics
        curve.points.append(
            CurvePoint(curve.epochs, curve.iterations, curve.images, curve.train_seconds, final["rank1"], final["mAP"])
        )
    metrics = {"rank1": curve.points[-1].rank1, "mAP": curve.points[-1].mAP}
    cross: dict[str, dict[str, float]] = {}
    for name, spec in (cross_specs or {}).items():
        other = _reader(spec)
        with contextlib.redirect_stderr(io.StringIO()):
            q = build_test_loader(other.query, height, width, preload=preload, workers=0)
            g = build_test_loader(other.gallery, height, width, preload=preload, workers=0)
        cross[name] = {k: float(v) for k, v in evaluate(model, q, g).metrics.items()}
    gs_iterations = 0
    if arm == "gs":
        gs_iterations = curve.iterations
    elif switch is not None and switch.switch_epoch is not None:
        per_epoch = [int(h["images"]) // B for h in history]
        gs_iterations = sum(per_epoch[switch.switch_epoch :])
    out: dict[str, Any] = {
        "arm": arm,
        "seed": seed,
        "split": split,
        "rank1": float(metrics["rank1"]),
        "mAP": float(metrics["mAP"]),
        "cross": cross,
        "curve": [dataclasses.asdict(p) for p in curve.points],
        "train_seconds": curve.train_seconds,
        "graph_seconds": float(sum(graph.seconds)) if graph is not None else 0.0,
        "graph_builds": len(graph.seconds) if graph is not None else 0,
        "images": curve.images,
        "iterations": curve.iterations,
        "iteration_seconds": float(np.median([h["seconds"] / max(h["images"] / B, 1) for h in history])),
        "batch_log": list(criterion.log),
        "switch_epoch": None if switch is None else switch.switch_epoch,
        "pk_accuracies": None if switch is None else switch.accuracies,
        "coverage": classes_covered(gs_iterations, num_classes, B // K - 1) if gs_iterations else None,
        "num_classes": num_classes,
        "history": [dict(h) for h in history],
    }
    if return_state:
        out["state"] = (
            {k: v.detach().cpu() for k, v in model.state_dict().items()},
            {k: v.detach().cpu() for k, v in matcher.state_dict().items()},
        )
    return out


class PooledBackbone(nn.Module):
    """A backbone's global feature: ``layer4`` average-pooled (the retrieval feature of the pretraining).

    Used to read off what the starting weights already reach on their own, before any QAConv
    training: the chapter's time-to-target level, set by neither sampler.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> Any:
        from reid_core.models.outputs import ReIDOutput

        return ReIDOutput(feat=self.backbone(images).mean(dim=(2, 3)))  # (B, C)


def pretrained_feature_rank1(
    weights: Any, recipe: Mapping[str, Any], query: Sequence[Any], gallery: Sequence[Any], device: str = "cpu"
) -> dict[str, float]:
    """CMC/mAP of the pretrained backbone's pooled ``layer4`` feature (cosine distance), no training.

    Args:
        weights: the :class:`~reid_core.book.pretrained.PretrainedBackbone`.
        recipe: ``backbone``, ``height``, ``width``, ``precision``.
        query, gallery: the test items.
        device: where to run.

    Returns:
        The metrics (percentages).
    """
    from reid_core.book.pretrained import load_pretrained_backbone
    from reid_core.engine import build_test_loader
    from reid_core.models import ResNetBackbone

    backbone = ResNetBackbone(recipe["backbone"], pretrained=False, last_stride=1)
    load_pretrained_backbone(backbone, weights)
    model = PooledBackbone(backbone).to(device)
    h, w = recipe["height"], recipe["width"]
    with contextlib.redirect_stderr(io.StringIO()):  # no preload bars
        loaders = (
            build_test_loader(query, h, w, preload=True, workers=0),
            build_test_loader(gallery, h, w, preload=True, workers=0),
        )
    result = evaluate_reid(
        model,
        *loaders,
        metric="cosine",
        flip=False,
        device=device,
        progress=False,
        precision=recipe.get("precision", "auto"),
    )
    return {k: float(v) for k, v in result.metrics.items()}
