r"""The class distance matrix that :class:`~reid_core.samplers.graph_sampler.GraphSampler` needs.

Graph Sampling (Liao & Shao, CVPR 2022, arXiv 2104.01546; QAConv 2.1 code) rebuilds its
class graph at the start of every epoch from the *current* model:

1. one random image per class (no class mean: one image is cheap and random enough);
2. these C images embedded by the model in eval mode with the test transform;
3. the C x C distances under the matcher the model is trained with: for QAConv
   :math:`D_{ij} = -\text{score}(x_i, x_j)`; for a plain global-feature model the euclidean
   distance between the ``feat`` vectors.

Cost: C forward passes plus C^2 matchings, done in blocks. Chapter:
``notebooks/05_graph_sampling.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from reid_core.evaluation.distance import compute_distance_matrix
from reid_core.modes import eval_mode

__all__ = ["build_class_distance", "pick_class_representatives", "load_rgb"]

Matcher = Callable[[Tensor, Tensor], Tensor]


def load_rgb(path: Any) -> Any:
    """Open an image file as an RGB PIL image (the default ``loader``)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as err:
        raise OSError(f"could not read image {path!r}: {err}") from err


def pick_class_representatives(
    dataset_items: Sequence[Sequence[Any]], seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One random sample of every class, classes in sorted pid order.

    Args:
        dataset_items: training items ``(path, pid, camid, ...)``; only ``item[1]`` is read.
        seed: seeds the choice; ``None`` draws fresh randomness.

    Returns:
        ``(pids, index)``: (C,) the sorted distinct pids and (C,) the index into
        ``dataset_items`` of each class's representative.
    """
    if len(dataset_items) == 0:
        raise ValueError("dataset_items is empty: need at least one (path, pid, camid) item")
    try:
        labels = np.asarray([int(item[1]) for item in dataset_items], dtype=np.int64)  # (N,)
    except (TypeError, ValueError, IndexError) as err:
        raise ValueError(f"dataset_items must be (path, pid, camid) tuples with integer pids: {err}") from err
    pids, inverse = np.unique(labels, return_inverse=True)  # (C,), (N,)
    rng = np.random.default_rng(seed)
    # A random key per sample; the smallest key of each class picks its representative.
    order = np.lexsort((rng.random(len(labels)), inverse))  # (N,) sorted by class, random inside
    first = np.concatenate(([0], np.cumsum(np.bincount(inverse))[:-1]))  # (C,)
    return pids, order[first]


@torch.no_grad()
def _embed(
    model: nn.Module,
    images: Sequence[Any],
    transform: Callable[[Any], Tensor],
    loader: Callable[[Any], Any],
    device: torch.device,
    batch_size: int,
    use_map: bool,
    progress: bool,
) -> Tensor:
    """Run ``model`` on the images in batches; return (C, ...) features on ``device``."""
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()
    )
    feats: list[Tensor] = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="GS: embedding classes", leave=False, disable=not progress):
        tensors = [transform(loader(x)) for x in images[start : start + batch_size]]
        if not all(isinstance(t, Tensor) and t.dim() == 3 for t in tensors):
            raise TypeError(f"transform must return (3, H, W) tensors, got {type(tensors[0]).__name__}")
        batch = torch.stack(tensors)  # (b, 3, H, W)
        with autocast:
            out = model(batch.to(device, non_blocking=True))
        if not hasattr(out, "feat"):
            raise TypeError(f"model must return a ReIDOutput (with .feat), got {type(out).__name__}")
        feat = out.feature_map if use_map and out.feature_map is not None else out.feat  # (b, ...)
        feats.append(feat)
    return torch.cat(feats)  # (C, ...)


def build_class_distance(
    model: nn.Module,
    dataset_items: Sequence[Sequence[Any]],
    transform: Callable[[Any], Tensor],
    matcher: Matcher | nn.Module | str = "euclidean",
    device: torch.device | str | None = None,
    seed: int | None = None,
    batch_size: int = 128,
    chunk_size: int | None = None,
    loader: Callable[[Any], Any] = load_rgb,
    progress: bool = True,
) -> Tensor:
    """(C, C) class distances for :meth:`GraphSampler.update_graph`, from the current model.

    The model (and a module matcher) run in eval mode; their train/eval modes are restored
    afterwards. On CUDA, embedding and matching run under fp16 autocast, as the paper's code.

    Args:
        model: returns a :class:`~reid_core.models.outputs.ReIDOutput` for (B, 3, H, W).
        dataset_items: training items ``(path, pid, camid, ...)`` (e.g. ``dataset.train``).
        transform: the *test* transform: ``loader(path)`` -> (3, H, W) tensor.
        matcher: ``"euclidean"``: distance between the ``feat`` vectors. A callable
            ``matcher(probe, gallery) -> (P, G) scores`` (higher = more alike; e.g. a
            :class:`~reid_core.models.qaconv.QAConv`): distance = -score; it receives the
            model's ``feature_map`` when it has one, else ``feat``. A matcher with a
            ``match_all`` method (QAConv) is called through it; otherwise it is called on
            ``chunk_size`` x ``chunk_size`` blocks.
        device: where to run; default: the device of the model's parameters.
        seed: seeds the choice of representatives.
        batch_size: images per forward pass.
        chunk_size: block size of the C x C matching; ``None``: ``match_all``'s own default
            (QAConv: 128 on CUDA, 32 on CPU), 64 for another callable matcher, 4096 rows for
            ``"euclidean"``.
        loader: turns ``item[0]`` into what ``transform`` takes (default: open as RGB PIL).
        progress: show tqdm bars.

    Returns:
        (C, C) float32 distances on ``device``, rows/columns in sorted pid order (the order
        :class:`~reid_core.samplers.graph_sampler.GraphSampler` uses). The diagonal is
        whatever the matcher gives; the sampler ignores it.
    """
    if isinstance(matcher, str) and matcher != "euclidean":
        raise ValueError(f"matcher must be 'euclidean' or a callable returning scores, got {matcher!r}")
    if not isinstance(matcher, str) and not callable(matcher):
        raise TypeError(f"matcher must be 'euclidean' or a callable, got {type(matcher).__name__}")
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    _, index = pick_class_representatives(dataset_items, seed)  # (C,)
    paths = [dataset_items[i][0] for i in index.tolist()]

    with eval_mode(model, matcher):
        use_map = not isinstance(matcher, str)
        feats = _embed(model, paths, transform, loader, device, batch_size, use_map, progress)  # (C, ...)
        if isinstance(matcher, str):
            flat = feats.float().flatten(1)  # (C, D)
            return compute_distance_matrix(flat, flat, "euclidean", chunk_size or 4096)
        return -_score_all(matcher, feats, chunk_size, device, progress)  # (C, C)


@torch.no_grad()
def _score_all(
    matcher: Matcher | nn.Module, feats: Tensor, chunk_size: int | None, device: torch.device, progress: bool
) -> Tensor:
    """(C, C) float32 scores of feats against themselves, block by block."""
    match_all = getattr(matcher, "match_all", None)
    if callable(match_all):
        return match_all(feats, feats, chunk=chunk_size, out_device=device, progress=progress).float()
    chunk_size = chunk_size or 64
    num = feats.shape[0]
    out = torch.empty(num, num, dtype=torch.float32, device=device)  # (C, C)
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()
    )
    with autocast:
        for p0 in tqdm(range(0, num, chunk_size), desc="GS: class distances", leave=False, disable=not progress):
            for g0 in range(0, num, chunk_size):
                block = matcher(feats[p0 : p0 + chunk_size], feats[g0 : g0 + chunk_size])  # (cp, cg)
                if block.shape != (min(chunk_size, num - p0), min(chunk_size, num - g0)):
                    raise ValueError(f"matcher must return a (P, G) score matrix, got shape {tuple(block.shape)}")
                out[p0 : p0 + block.shape[0], g0 : g0 + block.shape[1]] = block.float()
    return out
