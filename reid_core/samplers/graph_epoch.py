r"""Graph Sampling's per-epoch step: rebuild the class graph from the current model.

Steps 1-4 of GS (Liao & Shao 2022): one random image per class, embedded by the current model;
:math:`D_{ij} = -\mathrm{QAConv}(F_i, F_j)` (or a euclidean distance); then
``sampler.update_graph(D)`` (:class:`~reid_core.samplers.graph_sampler.GraphSampler`).

Under ``torchrun`` the graph is built once per epoch, on rank 0, and broadcast: every process's
sampler must hold the same graph to draw the same global batches
(:class:`~reid_core.samplers.distributed.DistributedIdentitySampler`).

Chapter: 05 (Graph Sampling).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from reid_core.collectives import broadcast_from_main, is_distributed, is_main_process
from reid_core.modes import eval_mode
from reid_core.samplers.class_distance import build_class_distance
from reid_core.samplers.graph_sampler import GraphSampler

__all__ = ["preloaded_image_lookup", "GraphSamplingCallback"]


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
    Under ``torchrun`` rank 0 builds the graph and broadcasts it to the other processes.

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

    def __init__(
        self,
        sampler: GraphSampler,
        items: Sequence[Sequence[Any]],
        transform: Callable[[Any], Tensor],
        matcher: nn.Module | str,
        image_loader: Callable[[Any], Any] | None = None,
        start_epoch: int = 0,
        chunk_size: int | None = None,
        seed: int = 0,
    ) -> None:
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

    def rebuild(self, model: nn.Module, device: torch.device | str, epoch: int = 0) -> Tensor | None:
        """Compute the class distance with ``model`` and update the sampler's graph.

        Under ``torchrun`` every process calls it: rank 0 computes the distance and broadcasts
        the (C, k) graph; the others return ``None`` and keep :attr:`class_dist` at ``None``.

        Returns:
            (C, C) class distances (CPU float32), or ``None`` on the processes other than rank 0.
        """
        start = time.perf_counter()
        if is_main_process():  # the only process without a process group
            kwargs: dict[str, Any] = {} if self.image_loader is None else {"loader": self.image_loader}
            with eval_mode(model, self.matcher):  # build_class_distance alone restores only the top-level flag
                dist = build_class_distance(
                    model,
                    self.items,
                    self.transform,
                    self.matcher,
                    device=device,
                    seed=self.seed * 100003 + epoch,
                    chunk_size=self.chunk_size,
                    progress=False,
                    **kwargs,
                )  # (C, C)
            self.sampler.update_graph(dist)
            self.class_dist = dist.detach().float().cpu()
        if is_distributed():  # rank 0's graph to every process
            shape = (self.sampler.num_classes, self.sampler.num_neighbors)  # (C, k)
            mine = torch.from_numpy(self.sampler.neighbors) if is_main_process() else torch.zeros(shape).long()
            self.sampler.set_neighbors(broadcast_from_main(mine))  # (C, k)
        self.seconds.append(time.perf_counter() - start)
        return self.class_dist if is_main_process() else None

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        if epoch >= self.start_epoch:
            self.rebuild(trainer.model, trainer.device, epoch)
