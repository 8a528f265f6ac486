r"""Glue of the Graph Sampling chapter: the training criterion, the per-epoch graph rebuild,
learning curves timed honestly, batch hardness, epoch-time arithmetic and the chapter's figures.

Graph Sampling (GS; Liao & Shao, CVPR 2022, arXiv 2104.01546) trains QAConv with batches made
of a seed class and its nearest classes. The library holds the parts
(:class:`~reid_core.samplers.graph_sampler.GraphSampler`,
:func:`~reid_core.samplers.class_distance.build_class_distance`,
:class:`~reid_core.models.qaconv.QAConv`, :mod:`reid_core.losses.qaconv_losses`); this module
wires them into :class:`~reid_core.engine.trainer.Trainer`:

* :class:`QAConvCriterion`: ``criterion(output, labels)`` computes the in-batch score matrix
  :math:`S = \mathrm{QAConv}(F, F)` of the batch's feature maps and the loss on it, and logs
  how hard the batch was (mean and hardest negative score);
* :class:`GraphSamplingCallback`: at the start of every epoch, the (C, C) class distance
  :math:`D = -S(\text{one image per class})` under the *current* model and matcher, handed to
  ``sampler.update_graph``;
* :class:`LearningCurve`: the wall time each epoch costs (graph building included, evaluation
  excluded), the images seen, and the test accuracy after each epoch; :func:`time_to_reach`
  reads off when a rank-1 target was first reached;
* :func:`batch_hardness`: how alike the identities of a batch are, for PK and GS batches
  under one fixed model;
* :func:`epoch_seconds`: a PK epoch is :math:`\lfloor N/B \rfloor` iterations, a GS epoch
  :math:`C` iterations plus the graph, :math:`t_\text{graph}(C) \approx aC + bC^2`.

Chapter: ``notebooks/05_graph_sampling.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from reid_core.engine.evaluate import EvalResult, evaluate_reid
from reid_core.losses.qaconv_losses import PairwiseMatchingLoss, ScoreTripletLoss, hardest_scores, matching_accuracy
from reid_core.models.qaconv import QAConv
from reid_core.samplers.class_distance import build_class_distance
from reid_core.samplers.graph_sampler import GraphSampler
from reid_core.viz import load_image

__all__ = [
    "QAConvCriterion",
    "qaconv_param_groups",
    "FreezeBackboneBN",
    "GraphSamplingCallback",
    "preloaded_image_lookup",
    "evaluate_qaconv",
    "CurvePoint",
    "LearningCurve",
    "time_to_reach",
    "batch_hardness",
    "family_index",
    "same_family_fraction",
    "measure_graph_seconds",
    "fit_graph_cost",
    "epoch_seconds",
    "one_image_per_identity",
    "plot_pk_vs_gs_batches",
    "plot_batch_log",
    "plot_learning_curves",
    "plot_epoch_time",
]


# --------------------------------------------------------------------------- criterion
class QAConvCriterion(nn.Module):
    r"""The trainer's criterion for QAConv: in-batch scores, then a score loss.

    For the batch's normalised feature maps :math:`F_1..F_B` the matcher gives the (B, B)
    score matrix :math:`S_{ij} = \mathrm{QAConv}(F_i, F_j)`, and the loss is either

    * ``"triplet"`` (QAConv 2.1 = CVPR 2022): :math:`\frac1B\sum_a [m - (\min_p S_{ap} -
      \max_n S_{an})]_+` with m = 16 (:class:`~reid_core.losses.qaconv_losses.ScoreTripletLoss`);
    * ``"pairwise"`` (QAConv 2.0 = arXiv v1): BCE of every :math:`S_{ij}` against
      :math:`[y_i = y_j]` (:class:`~reid_core.losses.qaconv_losses.PairwiseMatchingLoss`).

    The matcher is a sub-module, so the trainer optimises its BN and FC parameters with the
    network's. In training mode every call appends to :attr:`log` the batch's mean negative
    score, mean hardest negative score (per anchor :math:`\max_n S_{an}`), mean hardest
    positive score and matching accuracy (all detached): a GS batch should show higher
    negative scores than a PK batch under the same model.

    Args:
        matcher: the :class:`~reid_core.models.qaconv.QAConv` head.
        loss: ``"triplet"`` or ``"pairwise"``.
        margin: m of the triplet loss, on the score (logit) scale.
        weight: factor on the loss term.
        track: keep :attr:`log`.

    Returns (``forward``):
        ``{"triplet": loss}`` or ``{"pairwise": loss}``, the weighted scalar term.
    """

    def __init__(self, matcher: QAConv, loss: str = "triplet", margin: float = 16.0, weight: float = 1.0,
                 track: bool = True) -> None:
        super().__init__()
        if loss not in ("triplet", "pairwise"):
            raise ValueError(f"loss must be 'triplet' or 'pairwise', got {loss!r}")
        if weight <= 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        self.matcher = matcher
        self.name = loss
        self.loss_fn: nn.Module = ScoreTripletLoss(margin) if loss == "triplet" else PairwiseMatchingLoss()
        self.weight = weight
        self.track = track
        self.log: list[dict[str, float]] = []

    def forward(self, output: Any, labels: Tensor) -> dict[str, Tensor]:
        """Args: output with ``feature_map`` (B, d, h, w); labels (B,). Returns: {name: loss}."""
        fmap = getattr(output, "feature_map", None)
        if fmap is None:
            raise ValueError("output must carry a feature_map (B, d, h, w): use QAConvNet")
        scores = self.matcher.pairwise(fmap)  # (B, B)
        loss = self.loss_fn(scores.float(), labels)
        if self.track and self.training:
            self.log.append(_score_stats(scores.detach().float(), labels))
        return {self.name: loss * self.weight}


@torch.no_grad()
def _score_stats(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """Mean negative, mean hardest negative, mean hardest positive score and accuracy of a batch."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)  # (B, B)
    min_pos, max_neg = hardest_scores(scores, labels)  # (B,), (B,)
    ok_pos, ok_neg = torch.isfinite(min_pos), torch.isfinite(max_neg)
    return {
        "mean_neg": float(scores[~same].mean()) if bool((~same).any()) else float("nan"),
        "hardest_neg": float(max_neg[ok_neg].mean()) if bool(ok_neg.any()) else float("nan"),
        "hardest_pos": float(min_pos[ok_pos].mean()) if bool(ok_pos.any()) else float("nan"),
        "accuracy": float(matching_accuracy(scores, labels)),
    }


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


class FreezeBackboneBN:
    """Trainer callback: keep ``model.backbone`` in eval mode while training (QAConv 2.1).

    The paper's code calls ``model.eval()`` on the ImageNet-pretrained backbone during
    training so that its BN running statistics stay fixed "for better generalisation"; the
    BN layers of the QAConv head train normally. The trainer calls ``model.train()`` before
    ``on_epoch_start``, so this hook runs there.
    """

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        backbone = getattr(trainer.model, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise ValueError("FreezeBackboneBN needs a model with a .backbone module")
        backbone.eval()


# --------------------------------------------------------------------------- graph sampling
def _training_flags(*modules: Any) -> list[tuple[nn.Module, bool]]:
    """The train/eval flag of every sub-module of the given modules (non-modules are skipped)."""
    return [(sub, sub.training) for m in modules if isinstance(m, nn.Module) for sub in m.modules()]


def _restore_training_flags(flags: Sequence[tuple[nn.Module, bool]]) -> None:
    """Put back flags saved by :func:`_training_flags` (``module.train(flag)`` would overwrite children)."""
    for sub, flag in flags:
        sub.training = flag


def preloaded_image_lookup(dataset: Any) -> Callable[[str], Tensor]:
    """``path -> uint8 (3, H, W)`` for the images a preloaded ``ImageDataset`` holds.

    :func:`~reid_core.samplers.class_distance.build_class_distance` decodes the C
    representatives from disk by default; on a 2-core machine the copies already in memory
    save that decoding at every graph rebuild.

    Args:
        dataset: an :class:`~reid_core.data.image_dataset.ImageDataset` built with ``preload=True``.
    """
    preloaded = getattr(dataset, "preloaded", None)
    if preloaded is None:
        raise ValueError("dataset holds no preloaded images: build it with preload=True")
    table = {path: image for (path, _, _), image in zip(dataset.items, preloaded)}

    def lookup(path: str) -> Tensor:
        try:
            return table[path]
        except KeyError:
            raise KeyError(f"image {path!r} is not among the dataset's preloaded images") from None

    return lookup


class GraphSamplingCallback:
    r"""Trainer callback: rebuild the GS class graph from the current model at each epoch start.

    Steps 1-4 of GS (Liao & Shao 2022): one random image per class, embedded by the current
    model in eval mode with the test transform; :math:`D_{ij} = -\mathrm{QAConv}(F_i, F_j)`
    (or the euclidean distance of ``feat`` for a plain model, ``matcher="euclidean"``); then
    ``sampler.update_graph(D)`` keeps each class's :math:`k = B/K - 1` nearest classes.

    The train/eval flag of *every* sub-module is restored afterwards (a frozen backbone stays
    frozen). The representatives change with the epoch (seed ``seed * 100003 + epoch``).

    Args:
        sampler: the :class:`GraphSampler` the training loader draws from.
        items: the training items ``(path, pid, camid)``, in the sampler's dataset order.
        transform: the test transform (image -> (3, H, W) float tensor).
        matcher: a :class:`QAConv` (scores) or ``"euclidean"``.
        image_loader: ``item[0] -> image`` for ``transform``; default: decode from disk. See
            :func:`preloaded_image_lookup`.
        start_epoch: first epoch with a graph; earlier epochs use the sampler's PK fallback
            (QAConv 2.0 used one PK epoch; 2.1 none).
        chunk_size: block size of the C x C matching (``None``: the matcher's default).
        seed: seeds the choice of representatives.

    Attributes:
        seconds: wall seconds of each rebuild.
        class_dist: the last (C, C) distance (CPU), for figures.
    """

    def __init__(self, sampler: GraphSampler, items: Sequence[Sequence[Any]], transform: Callable[[Any], Tensor],
                 matcher: nn.Module | str, image_loader: Callable[[Any], Any] | None = None, start_epoch: int = 0,
                 chunk_size: int | None = None, seed: int = 0) -> None:
        if not isinstance(sampler, GraphSampler):
            raise TypeError(f"sampler must be a GraphSampler, got {type(sampler).__name__}")
        if len(items) != len(sampler.pids):
            raise ValueError(f"items has {len(items)} entries but the sampler was built on {len(sampler.pids)} pids")
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        self.sampler, self.items, self.transform, self.matcher = sampler, items, transform, matcher
        self.image_loader = image_loader
        self.start_epoch, self.chunk_size, self.seed = start_epoch, chunk_size, seed
        self.seconds: list[float] = []
        self.class_dist: Tensor | None = None

    def rebuild(self, model: nn.Module, device: torch.device | str, epoch: int = 0) -> Tensor:
        """Compute the class distance with ``model`` and update the sampler's graph.

        Returns:
            (C, C) class distances (CPU float32).
        """
        start = time.perf_counter()
        modes = _training_flags(model, self.matcher)
        kwargs: dict[str, Any] = {} if self.image_loader is None else {"loader": self.image_loader}
        try:
            dist = build_class_distance(model, self.items, self.transform, self.matcher, device=device,
                                        seed=self.seed * 100003 + epoch, chunk_size=self.chunk_size,
                                        progress=False, **kwargs)  # (C, C)
        finally:
            _restore_training_flags(modes)  # build_class_distance restores only the top-level flag
        self.sampler.update_graph(dist)
        self.class_dist = dist.detach().float().cpu()
        self.seconds.append(time.perf_counter() - start)
        return self.class_dist

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        if epoch >= self.start_epoch:
            self.rebuild(trainer.model, trainer.device, epoch)


# --------------------------------------------------------------------------- evaluation and curves
def evaluate_qaconv(model: nn.Module, matcher: QAConv, query_loader: Any, gallery_loader: Any,
                    device: torch.device | str | None = None, flip: bool = False, chunk: int | None = None,
                    progress: bool = False) -> EvalResult:
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
    """
    def distance(q: Tensor, g: Tensor) -> Tensor:
        return -matcher.match_all(q, g, chunk=chunk, out_device="cpu", progress=progress)  # (Q, G)

    return evaluate_reid(model, query_loader, gallery_loader, flip=flip, field="feature_map", distance_fn=distance,
                         device=device, progress=progress)


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

    def continued(self, evaluate: Callable[[nn.Module], EvalResult] | None = None,
                  every: int | None = None) -> "LearningCurve":
        """A new curve that starts where this one ends (same points and totals, copied).

        ``evaluate`` / ``every`` left ``None`` keep this curve's.
        """
        return LearningCurve(evaluate=evaluate if evaluate is not None else self.evaluate,
                             every=every if every is not None else self.every, points=list(self.points),
                             train_seconds=self.train_seconds, images=self.images, iterations=self.iterations,
                             epochs=self.epochs)

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
            self.points.append(CurvePoint(self.epochs, self.iterations, self.images, self.train_seconds,
                                          result.metrics["rank1"], result.metrics["mAP"]))


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


# --------------------------------------------------------------------------- batch hardness
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
def batch_hardness(model: nn.Module, matcher: QAConv, dataset: Any, batches: np.ndarray,
                   family_of: Mapping[int, int] | None = None, device: torch.device | str | None = None,
                   transform: Callable[[Any], Tensor] | None = None) -> dict[str, float]:
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
    modes = _training_flags(model, matcher)
    model.eval()
    matcher.eval()
    rows: list[dict[str, float]] = []
    try:
        for batch in batches:
            if transform is not None:
                images = torch.stack([transform(dataset.preloaded[int(i)]) for i in batch])  # (B, 3, H, W)
            else:
                images = torch.stack([dataset[int(i)][0] for i in batch])  # (B, 3, H, W)
            labels = torch.as_tensor([dataset.items[int(i)][1] for i in batch], device=device)  # (B,)
            scores = matcher.pairwise(model(images.to(device)).feature_map).float()  # (B, B)
            stats = _score_stats(scores, labels)
            rows.append({
                "neg_dist": -stats["mean_neg"],
                "hardest_neg_dist": -stats["hardest_neg"],
                "hardest_pos_dist": -stats["hardest_pos"],
                "same_family": same_family_fraction(labels.cpu().numpy(), family_of) if family_of else float("nan"),
            })
    finally:
        _restore_training_flags(modes)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


# --------------------------------------------------------------------------- epoch time
def measure_graph_seconds(model: nn.Module, matcher: nn.Module | str, items: Sequence[Sequence[Any]],
                          transform: Callable[[Any], Tensor], num_classes: Sequence[int],
                          image_loader: Callable[[Any], Any] | None = None, device: torch.device | str | None = None,
                          chunk_size: int | None = None, seed: int = 0) -> list[float]:
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
        build_class_distance(model, subset, transform, matcher, device=device, seed=seed, chunk_size=chunk_size,
                             progress=False, **kwargs)
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


def epoch_seconds(num_ids: int | np.ndarray, images_per_id: float, batch_size: int, iteration_seconds: float,
                  graph_cost: tuple[float, float] = (0.0, 0.0)) -> dict[str, np.ndarray]:
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
    return {"pk": np.floor(c * images_per_id / batch_size) * iteration_seconds,
            "gs": c * iteration_seconds + graph, "gs_graph": graph}


# --------------------------------------------------------------------------- figures
def one_image_per_identity(batch: Sequence[int] | np.ndarray, items: Sequence[Sequence[Any]],
                           family_of: Mapping[int, int] | None = None, limit: int = 8) -> tuple[list[str], list[str]]:
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


def plot_pk_vs_gs_batches(pk_batch: Sequence[int] | np.ndarray, gs_batch: Sequence[int] | np.ndarray,
                          items: Sequence[Sequence[Any]], family_of: Mapping[int, int] | None = None,
                          limit: int = 8) -> Figure:
    """Two rows: ``limit`` identities of a PK batch above those of a GS batch (one image each).

    Args:
        pk_batch, gs_batch: (B,) dataset indices of one batch of each sampler.
        items: the dataset's ``(path, pid, camid)`` items.
        family_of: pid -> family, for the titles.
        limit: identities per row (the GS row: the seed, then its nearest classes in order).
    """
    rows = [("PK batch", *one_image_per_identity(pk_batch, items, family_of, limit)),
            ("GS batch", *one_image_per_identity(gs_batch, items, family_of, limit))]
    ncols = max(max(len(r[1]) for r in rows), 1)
    fig, axes = plt.subplots(2, ncols, figsize=(1.05 * ncols, 4.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (name, paths, titles) in enumerate(rows):
        for j, (path, title) in enumerate(zip(paths, titles)):
            axes[row, j].imshow(load_image(path))
            axes[row, j].set_title(title, fontsize=7)
        axes[row, 0].text(-0.15, 0.5, name, transform=axes[row, 0].transAxes, rotation=90, va="center",
                          ha="right", fontsize=10)
    fig.tight_layout()
    return fig


def plot_batch_log(logs: Mapping[str, Sequence[Mapping[str, float]]], key: str = "hardest_neg",
                   points: int = 30) -> Figure:
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
    labels = {"hardest_neg": "mean hardest-negative score", "mean_neg": "mean negative score",
              "hardest_pos": "mean hardest-positive score", "accuracy": "in-batch matching accuracy"}
    ax.set_xlabel("iteration")
    ax.set_ylabel(labels.get(key, key))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_learning_curves(curves: Mapping[str, Sequence[CurvePoint]], target: float | None = None,
                         branch: CurvePoint | None = None) -> Figure:
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


def plot_epoch_time(num_ids: np.ndarray, times: Mapping[str, np.ndarray],
                    measured: tuple[Sequence[int], Sequence[float]] | None = None) -> Figure:
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
