"""The metric-learning chapter's experiment: training glue, retrieval, angles, head sizes.

* :func:`make_pk_loader` / :func:`train_embedding`: train any embedding network with any
  criterion of :mod:`reid_core.losses.metric_criterion` through the book's
  :class:`~reid_core.engine.trainer.Trainer`, with P x K batches so that the pair losses find
  positives in every batch (the same batches for every loss).
* :func:`embed` and :func:`leave_one_out_retrieval`: each test image queries all the others;
  rank-1 and mAP with :func:`~reid_core.evaluation.evaluate_rank`.
* :func:`reid_run` / :func:`reid_runs`: one re-ID arm (a loss, or chapter 01's ID + triplet)
  with one seed, fine-tuned from the profile's starting backbone and evaluated; the notebook runs
  them side by side. :func:`unseen_classes_run`: one digits model trained on 0-4, tested on 5-9.
* :func:`head_parameter_count`: the size of a class-weight head (C x D, +C for a bias), counted
  on the ``meta`` device so that a head for a million classes costs no memory.

Chapter: ``notebooks/02_metric_learning.py``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from reid_core.book.pretrained import PretrainedBackbone, load_pretrained_backbone
from reid_core.data import SynthReID, build_dataset, carve_validation, load_digits_split, prepare_synthreid
from reid_core.engine import build_test_loader, build_train_loader, evaluate_reid
from reid_core.engine.trainer import TrainConfig, Trainer, seed_everything
from reid_core.evaluation.distance import Metric, compute_distance_matrix
from reid_core.evaluation.rank import evaluate_rank
from reid_core.losses import BaselineLoss
from reid_core.losses.metric_criterion import (
    DEFAULT_HPARAMS,
    LOSS_TITLES,
    METRIC_LOSSES,
    MetricCriterion,
    build_metric_criterion,
)
from reid_core.models import BaselineNet, DigitsConvNet, EmbeddingNet
from reid_core.models.parameters import count_parameters
from reid_core.modes import eval_mode
from reid_core.samplers.random_identity import RandomIdentitySampler

__all__ = [
    "relabel",
    "make_pk_loader",
    "TrainedEmbedding",
    "train_embedding",
    "embed",
    "leave_one_out_retrieval",
    "angular_statistics",
    "head_parameter_count",
    "REID_ARMS",
    "ARM_TITLES",
    "UNSEEN_LOSSES",
    "reid_run",
    "reid_runs",
    "unseen_classes_run",
]


def relabel(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Map arbitrary class labels to 0..C-1 (what a class-weight head indexes).

    Args:
        labels: (N,) integer labels.

    Returns:
        ``(contiguous, classes)``: (N,) labels in [0, C) and the (C,) sorted original labels.
    """
    classes, contiguous = torch.unique(labels, sorted=True, return_inverse=True)
    return contiguous, classes


def make_pk_loader(images: Tensor, labels: Tensor, batch_size: int, num_instances: int, seed: int = 0) -> DataLoader:
    """P x K batches (P = batch_size / K classes, K images each) of in-memory tensors.

    Args:
        images: (N, ...) inputs.
        labels: (N,) labels in [0, C).
        batch_size: P x K.
        num_instances: K.
        seed: the sampler's seed.

    Returns:
        A ``DataLoader`` yielding ``(images, labels)`` batches of exactly ``batch_size``.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images ({images.shape[0]}) and labels ({labels.shape[0]}) must have the same length")
    num_classes = int(labels.unique().numel())
    if batch_size // num_instances > num_classes:
        raise ValueError(
            f"batch_size / num_instances = {batch_size // num_instances} classes per batch, "
            f"but only {num_classes} classes exist"
        )
    sampler = RandomIdentitySampler(labels.tolist(), batch_size, num_instances, seed=seed)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, sampler=sampler, drop_last=True)


@dataclass
class TrainedEmbedding:
    """One trained model and what the chapter reports about it.

    Attributes:
        loss: the loss name.
        model: the trained network (returns a ``ReIDOutput``).
        criterion: the criterion, holding the head (class weights) when the loss has one.
        history: the trainer's per-epoch statistics.
        seconds: training wall time.
    """

    loss: str
    model: nn.Module
    criterion: MetricCriterion
    history: list[dict[str, float]]
    seconds: float


def train_embedding(
    model: nn.Module,
    loss: str,
    loader: Any,
    num_classes: int,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    embedding_dim: int | None = None,
    **hparams: Any,
) -> TrainedEmbedding:
    """Train ``model`` with one loss of :data:`~reid_core.losses.metric_criterion.METRIC_LOSSES`.

    Args:
        model: maps a batch to a ``ReIDOutput`` whose ``feat`` is the (B, D) embedding.
        loss: the loss name.
        loader: yields ``(images, labels, ...)`` with labels in [0, num_classes).
        num_classes: C, the number of training classes.
        config: the optimisation recipe.
        device: where to train.
        embedding_dim: D (default: ``model.embedding_dim``).
        **hparams: the loss's hyper-parameters (see :func:`build_metric_criterion`).

    Returns:
        The :class:`TrainedEmbedding`.
    """
    dim = embedding_dim if embedding_dim is not None else getattr(model, "embedding_dim", None)
    if dim is None:
        raise ValueError("embedding_dim is needed when the model has no embedding_dim attribute")
    torch.manual_seed(config.seed)  # the head's initial weights, as reproducible as the model's
    criterion = build_metric_criterion(loss, dim, num_classes, **hparams)
    start = time.perf_counter()
    history = Trainer(model, criterion, loader, config, device=device).fit()
    return TrainedEmbedding(loss, model, criterion, history, time.perf_counter() - start)


@torch.no_grad()
def embed(model: nn.Module, images: Tensor, batch_size: int = 1024, device: torch.device | str | None = None) -> Tensor:
    """Embeddings of in-memory images in eval mode.

    Args:
        model: returns a ``ReIDOutput`` (its ``feat`` is used).
        images: (N, ...) inputs.
        batch_size: images per forward pass.
        device: where to run (default: the model's device).

    Returns:
        (N, D) float32 embeddings on the CPU.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    with eval_mode(model):
        feats = [
            model(images[i : i + batch_size].to(device)).feat.float().cpu()  # (b, D)
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(feats)  # (N, D)


def leave_one_out_retrieval(
    features: Tensor, labels: Tensor | np.ndarray, metric: Metric = "cosine"
) -> dict[str, float]:
    """Each image queries all the others; rank-1 and mAP (percent) over all queries.

    Implemented with the re-ID protocol: every image gets its own "camera", so the Market-1501
    rule (drop gallery images of the query's identity *and* camera) drops exactly the query
    itself and nothing else.

    Args:
        features: (N, D) embeddings.
        labels: (N,) class labels.
        metric: ``"cosine"``, ``"euclidean"`` or ``"sqeuclidean"``.

    Returns:
        ``{"rank1": ..., "mAP": ...}`` in percent.
    """
    labels = np.asarray(labels)
    if features.dim() != 2 or features.shape[0] != len(labels):
        raise ValueError(f"features must be (N, D) with N = len(labels) = {len(labels)}, got {tuple(features.shape)}")
    dist = compute_distance_matrix(features, features, metric=metric)  # (N, N)
    cams = np.arange(len(labels))  # one camera per image: only the query itself is dropped
    cmc, mean_ap = evaluate_rank(dist, labels, labels, cams, cams, max_rank=1)
    return {"rank1": float(cmc[0]) * 100, "mAP": float(mean_ap) * 100}


def angular_statistics(features: Tensor, labels: Tensor | np.ndarray) -> dict[str, float]:
    r"""How tight the classes are and how far apart, measured by angles on the sphere (degrees).

    With :math:`\hat x_i` the unit embeddings and :math:`\mu_c` the normalised mean direction of
    class c:

    * ``intra``: the mean angle :math:`\angle(\hat x_i, \mu_{y_i})` of a sample to its class
      centre (small = compact classes);
    * ``inter``: the smallest angle :math:`\min_{c \ne c'} \angle(\mu_c, \mu_{c'})` between
      two class centres (large = well separated classes).

    Args:
        features: (N, D) embeddings (no zero rows).
        labels: (N,) class labels, at least two classes.

    Returns:
        ``{"intra": ..., "inter": ...}`` in degrees.
    """
    labels = torch.as_tensor(np.asarray(labels))
    classes = labels.unique()
    if features.dim() != 2 or features.shape[0] != len(labels):
        raise ValueError(f"features must be (N, D) with N = len(labels) = {len(labels)}, got {tuple(features.shape)}")
    if len(classes) < 2:
        raise ValueError("angular_statistics needs at least two classes")
    u = features.double() / features.double().norm(dim=1, keepdim=True)  # (N, D)
    centres = torch.stack([u[labels == c].mean(dim=0) for c in classes])  # (C, D)
    centres = centres / centres.norm(dim=1, keepdim=True)
    index = torch.searchsorted(classes, labels)  # (N,) row of each sample's centre
    intra = torch.rad2deg(torch.acos((u * centres[index]).sum(dim=1).clamp(-1, 1))).mean()
    cos_cc = (centres @ centres.T).clamp(-1, 1)  # (C, C)
    cos_cc.fill_diagonal_(-1.0)  # a centre is not its own neighbour
    inter = torch.rad2deg(torch.acos(cos_cc.max()))
    return {"intra": float(intra), "inter": float(inter)}


def head_parameter_count(loss: str, embedding_dim: int, num_classes: int, **hparams: Any) -> int:
    """Parameters the loss adds on top of the embedding network, for C classes and D dimensions.

    The criterion is built on the ``meta`` device (shapes only, no memory), so a 100k- or
    1M-class head can be counted on any machine. A margin head holds C x D weights (+C for the
    softmax or L2-softmax bias); contrastive and triplet losses hold none.

    Args:
        loss: a name of :data:`~reid_core.losses.metric_criterion.METRIC_LOSSES`.
        embedding_dim: D.
        num_classes: C.
        **hparams: passed to :func:`build_metric_criterion`.

    Returns:
        The parameter count.
    """
    with torch.device("meta"):
        criterion = build_metric_criterion(loss, embedding_dim, num_classes, **hparams)
    return count_parameters(criterion, trainable_only=True)


# ------------------------------------------------------------------ one run per (arm, seed)
REID_ARMS = ("softmax", "sphereface", "cosface", "arcface", "adacos", "triplet", "bot")
"""The re-ID arms: the plain softmax, the four margin heads, the batch-hard triplet loss, and the
strong baseline's ID + triplet with BNNeck (``bot``, chapter 01's recipe at this budget)."""

ARM_TITLES = {**LOSS_TITLES, "bot": "ID + triplet (BoT, BNNeck)"}
"""How tables and results name each arm."""

UNSEEN_LOSSES = ("softmax", "cosface", "arcface", "adacos", "contrastive", "triplet")
"""The losses of the unseen-classes test on the digits (heads and pair losses)."""


def _reid_items(data_root: str, preset: str | None, dataset: str, split: str) -> tuple[list, list, list, int, str]:
    """(train, query, gallery, number of training ids, name) of the re-ID data; ``split="validation"``
    holds out a fifth of the training identities as query and gallery (the test split stays unseen)."""
    if preset is None:
        data = build_dataset(dataset, data_root, verbose=False)
        name = dataset
    else:
        data = SynthReID(prepare_synthreid(data_root, preset, progress=False), verbose=False)
        name = f"synthreid/{preset}"
    if split == "test":
        return data.train, data.query, data.gallery, data.num_train_pids, name
    if split == "validation":
        val = carve_validation(data.train, fraction=0.2, seed=0)
        return val.train, val.query, val.gallery, val.num_train_pids, f"{name} (validation)"
    raise ValueError(f"split must be 'test' or 'validation', got {split!r}")


@functools.lru_cache(maxsize=2)
def _reid_data(
    data_root: str, preset: str | None, dataset: str, split: str, height: int, width: int, preload: bool
) -> tuple[list, Any, Any, int, str]:
    """The items and the test loaders, loaded once per process (test loaders draw nothing random)."""
    train, query, gallery, num_ids, name = _reid_items(data_root, preset, dataset, split)
    query_loader = build_test_loader(query, height, width, preload=preload)
    gallery_loader = build_test_loader(gallery, height, width, preload=preload)
    return train, query_loader, gallery_loader, num_ids, name


def reid_run(
    arm: str,
    seed: int,
    *,
    data_root: str,
    preset: str | None,
    dataset: str = "synthreid",
    split: str = "test",
    backbone: str = "resnet10",
    weights: PretrainedBackbone | None = None,
    imagenet: bool = False,
    last_stride: int = 1,
    embedding_dim: int | None = None,
    height: int = 64,
    width: int = 32,
    batch_size: int = 64,
    num_instances: int = 4,
    epochs: int = 2,
    max_iters: int | None = None,
    optimizer: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    scheduler: str = "cosine",
    decay_start: int | None = None,
    warmup_epochs: float = 0.0,
    train_flip_pad: bool = True,
    test_flip: bool = False,
    precision: str = "bf16",
    batch_augment: bool = True,
    hparams: dict[str, dict[str, Any]] | None = None,
    checkpoint_root: str | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train one arm of :data:`REID_ARMS` with one seed on re-ID data and evaluate it; renders nothing.

    Every arm sees the same P x K batches for a given seed (the sampler and the augmentation are
    seeded by it) and starts from the same backbone weights (``weights``, the cached SynthReID
    pretraining, or ImageNet with ``imagenet=True``); only the loss (and, for ``bot``, the
    BNNeck model of chapter 01) differs.

    Args:
        arm: a name of :data:`REID_ARMS`.
        seed: the run's seed (data order, augmentation, head initialisation).
        data_root, preset, dataset: SynthReID ``preset`` under ``data_root`` (``preset=None``: the
            registered ``dataset``).
        split: ``"test"`` or ``"validation"`` (a fifth of the training identities held out).
        backbone, weights, imagenet, last_stride, embedding_dim: the model.
        height, width, batch_size, num_instances: input size and P x K batches.
        epochs, max_iters, optimizer, lr, weight_decay, scheduler, decay_start, warmup_epochs: the recipe.
        train_flip_pad: SynthReID-sized augmentation (flip, pad 4 + crop); ``False``: the
            registered dataset's defaults.
        test_flip: flip-averaged test features.
        precision, batch_augment: the fast CPU path (bf16 autocast, whole-batch augmentation).
        hparams: per-loss hyper-parameters on top of :data:`DEFAULT_HPARAMS`.
        checkpoint_root: ``<root>/<arm>_seed<seed>`` keeps the trainer's checkpoints (resume).
        device: where to train.
        progress: show the trainer's bars.

    Returns:
        ``{"arm", "seed", "rank1", "rank5", "rank10", "mAP", "train_seconds", "final", "metric",
        "hparams", "num_train_pids", "dataset"}``, plus ``"scale_history"`` for AdaCos.
    """
    if arm not in REID_ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {REID_ARMS}")
    seed_everything(seed)
    train, query_loader, gallery_loader, num_ids, name = _reid_data(
        str(data_root), preset, dataset, split, height, width, preset is not None
    )
    loader = build_train_loader(
        train,
        height,
        width,
        batch_size=batch_size,
        num_instances=num_instances,
        preload=preset is not None,
        seed=seed,
        batch_augment=batch_augment,
        device=device,
        random_erasing_p=0.0,
        **({"pad": 4} if train_flip_pad else {}),
    )
    config = TrainConfig(
        epochs=epochs,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        scheduler=scheduler,
        decay_start=decay_start,
        warmup_epochs=warmup_epochs,
        max_iters_per_epoch=max_iters,
        seed=seed,
        progress=progress,
        precision=precision,
        checkpoint_dir=None if checkpoint_root is None else str(Path(checkpoint_root) / f"{arm}_seed{seed}"),
    )
    arm_hparams = dict((hparams or {}).get(arm, {}))
    torch.manual_seed(seed)  # the model's new layers and the head: the same draw for every arm of a seed
    if arm == "bot":
        model: nn.Module = BaselineNet(num_ids, backbone=backbone, pretrained=imagenet, last_stride=last_stride)
        if weights is not None:
            load_pretrained_backbone(model.backbone, weights)
        start = time.perf_counter()
        history = Trainer(model, BaselineLoss(**arm_hparams), loader, config, device=device).fit()
        seconds, metric, scale_history = time.perf_counter() - start, "cosine", None
        used = {"id_weight": 1.0, "triplet_weight": 1.0, "margin": 0.3, "label_smoothing": 0.1, **arm_hparams}
    else:
        model = EmbeddingNet(backbone, embedding_dim=embedding_dim, pretrained=imagenet, last_stride=last_stride)
        if weights is not None:
            load_pretrained_backbone(model.backbone, weights)
        run = train_embedding(model, arm, loader, num_ids, config, device=device, **arm_hparams)
        history, seconds = run.history, run.seconds
        metric = "cosine" if arm_hparams.get("normalize", True) else "euclidean"  # the space the loss shaped
        head = run.criterion.head
        scale_history = list(head.scale_history) if getattr(head, "scale_history", None) is not None else None
        used = {**DEFAULT_HPARAMS[arm], **arm_hparams}
    result = evaluate_reid(
        model,
        query_loader,
        gallery_loader,
        metric=metric,
        flip=test_flip,
        device=device,
        progress=False,
        precision=precision,
    )
    out: dict[str, Any] = {
        "arm": arm,
        "seed": seed,
        **result.metrics,
        "train_seconds": seconds,
        "final": {k: float(v) for k, v in history[-1].items()},
        "metric": metric,
        "hparams": used,
        "num_train_pids": num_ids,
        "dataset": name,
    }
    if scale_history is not None:
        out["scale_history"] = [float(s) for s in scale_history]
    return out


def reid_runs(arms: Sequence[str], seed: int, **shared: Any) -> list[dict[str, Any]]:
    """:func:`reid_run` for several arms of one seed in one process (the data are loaded once;
    each run seeds itself, so its result does not depend on the runs before it)."""
    return [reid_run(arm, seed, **shared) for arm in arms]


def unseen_classes_run(
    loss: str,
    seed: int,
    *,
    embedding_dim: int = 32,
    width: int = 32,
    epochs: int = 25,
    max_iters: int | None = None,
    lr: float = 3e-3,
    test_fraction: float = 0.3,
    seen_digits: Sequence[int] = (0, 1, 2, 3, 4),
    unseen_digits: Sequence[int] = (5, 6, 7, 8, 9),
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Train a digits embedding on ``seen_digits`` only, then retrieve seen and never-seen digits.

    The data split is fixed (seed 0); ``seed`` draws the model's initialisation and the batches.

    Returns:
        ``seen_rank1``, ``seen_mAP``, ``rank1``, ``mAP`` (the unseen digits, leave-one-out by
        cosine), and for heads ``accuracy`` (the classifier on seen test digits) and
        ``unseen_confidence`` (its mean top-1 softmax probability on unseen digits), NaN for
        pair losses; all in percent.
    """
    if loss not in METRIC_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid: {METRIC_LOSSES}")
    seed_everything(seed)
    digits = load_digits_split(test_fraction=test_fraction, seed=0)
    seen = digits.subset(train_classes=seen_digits, test_classes=seen_digits)
    unseen = digits.subset(train_classes=seen_digits, test_classes=unseen_digits)
    labels, classes = relabel(seen.train_labels)  # class indices 0..4 for the heads
    loader = make_pk_loader(seen.train_images, labels, 120, 24, seed=seed)
    config = TrainConfig(
        epochs=epochs,
        optimizer="adam",
        lr=lr,
        weight_decay=1e-4,
        scheduler="cosine",
        warmup_epochs=0,
        max_iters_per_epoch=max_iters,
        seed=seed,
        progress=False,
    )
    run = train_embedding(DigitsConvNet(embedding_dim, width=width), loss, loader, len(seen_digits), config, device)
    seen_feats, unseen_feats = embed(run.model, seen.test_images), embed(run.model, unseen.test_images)
    r_seen = leave_one_out_retrieval(seen_feats, seen.test_labels)
    r_unseen = leave_one_out_retrieval(unseen_feats, unseen.test_labels)
    accuracy = confidence = float("nan")
    if run.criterion.head is not None:  # the classifier view: the head's answers
        with torch.no_grad():
            predicted = classes[run.criterion.logits(seen_feats.to(device)).argmax(1).cpu()]  # (M,) digits
            accuracy = 100 * float((predicted == seen.test_labels).float().mean())
            probs = torch.softmax(run.criterion.logits(unseen_feats.to(device)), dim=1)  # (M', 5)
            confidence = 100 * float(probs.max(1).values.mean())
    return {
        "seen_rank1": r_seen["rank1"],
        "seen_mAP": r_seen["mAP"],
        "rank1": r_unseen["rank1"],
        "mAP": r_unseen["mAP"],
        "accuracy": accuracy,
        "unseen_confidence": confidence,
    }
