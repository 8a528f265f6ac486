"""The metric-learning chapter's experiment: training glue, retrieval, angles, head sizes.

* :func:`make_pk_loader` / :func:`train_embedding`: train any embedding network with any
  criterion of :mod:`reid_core.losses.metric_criterion` through the book's
  :class:`~reid_core.engine.trainer.Trainer`, with P x K batches so that the pair losses find
  positives in every batch (the same batches for every loss).
* :func:`embed` and :func:`leave_one_out_retrieval`: each test image queries all the others;
  rank-1 and mAP with :func:`~reid_core.evaluation.evaluate_rank`.
* :func:`head_parameter_count`: the size of a class-weight head (C x D, +C for a bias), counted
  on the ``meta`` device so that a head for a million classes costs no memory.

Chapter: ``notebooks/02_metric_learning.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from reid_core.engine.trainer import TrainConfig, Trainer
from reid_core.evaluation.distance import Metric, compute_distance_matrix
from reid_core.evaluation.rank import evaluate_rank
from reid_core.losses.metric_criterion import MetricCriterion, build_metric_criterion
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
