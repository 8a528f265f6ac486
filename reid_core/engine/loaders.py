"""DataLoaders for training and testing, built from a dataset reader's ``(path, pid, camid)`` lists.

Training batches come from a flat identity sampler (PK or graph): the loader takes
``batch_size`` consecutive indices as one batch, so it must not shuffle or drop on its own
beyond what the sampler decides. Test loaders keep the dataset order.

On a 2-core machine decoding JPEGs every epoch costs as much as the network; ``preload=True``
decodes every image once into memory and the transforms run on uint8 tensors.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from reid_core.data.image_dataset import ImageDataset
from reid_core.data.transforms import build_transforms
from reid_core.samplers.random_identity import RandomIdentitySampler

__all__ = ["build_train_loader", "build_test_loader", "default_workers"]

Item = tuple[str, int, int]


def default_workers() -> int:
    """Loader workers: none on small machines (workers would steal the cores), else up to 8."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 4 else min(8, cpus // 2)


def build_train_loader(
    items: Sequence[Item],
    height: int,
    width: int,
    batch_size: int = 64,
    num_instances: int = 4,
    sampler: Sampler[int] | None = None,
    preload: bool = False,
    workers: int | None = None,
    seed: int = 0,
    **transform_kwargs: object,
) -> DataLoader:
    """A training loader with PK sampling (``batch_size / num_instances`` ids x ``num_instances``).

    Args:
        items: the reader's ``train`` list.
        height, width: input size.
        batch_size, num_instances: P x K.
        sampler: a flat identity sampler to use instead of PK (e.g. a ``GraphSampler``).
        preload: decode all images once into memory.
        workers: loader processes (default :func:`default_workers`).
        seed: the PK sampler's seed.
        **transform_kwargs: passed to :func:`~reid_core.data.transforms.build_transforms`.
    """
    transform = build_transforms(height, width, is_train=True, **transform_kwargs)
    dataset = ImageDataset(items, transform=transform, preload=preload)
    if sampler is None:
        sampler = RandomIdentitySampler([pid for _, pid, _ in items], batch_size, num_instances, seed=seed)
    workers = default_workers() if workers is None else workers
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)


def build_test_loader(
    items: Sequence[Item],
    height: int,
    width: int,
    batch_size: int = 128,
    preload: bool = False,
    workers: int | None = None,
    **transform_kwargs: object,
) -> DataLoader:
    """A loader over ``items`` in order, with the test transform (resize + normalise)."""
    transform = build_transforms(height, width, is_train=False, **transform_kwargs)
    dataset = ImageDataset(items, transform=transform, preload=preload)
    workers = default_workers() if workers is None else workers
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=torch.cuda.is_available())
