"""DataLoaders for training and testing, built from a dataset reader's ``(path, pid, camid)`` lists.

Training batches come from a flat identity sampler (PK or graph): the loader takes
``batch_size`` consecutive indices as one batch, so it must not shuffle or drop on its own
beyond what the sampler decides. Test loaders keep the dataset order.

On a 2-core machine decoding JPEGs every epoch costs as much as the network; ``preload=True``
decodes every image once into memory and the transforms run on uint8 tensors.

``batch_augment=True`` moves the training augmentation from the loader's per-sample transform
to :class:`~reid_core.data.batch_transforms.BatchAugment`, applied to each collated uint8 batch
on the training device (same distribution; see that module). The loader's dataset then resizes
each image once when decoding and yields uint8 images; the returned
:class:`~reid_core.data.batch_transforms.AugmentedLoader` moves every batch to ``device`` and
augments it there, so the trainer receives float batches either way and needs no option.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from reid_core.data.batch_transforms import AugmentedLoader, BatchAugment, NormalizingCollate
from reid_core.data.image_dataset import ImageDataset
from reid_core.data.transforms import build_transforms
from reid_core.engine.trainer import default_device
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
    batch_augment: bool = False,
    device: torch.device | str | None = None,
    **transform_kwargs: object,
) -> DataLoader | AugmentedLoader:
    """A training loader with PK sampling (``batch_size / num_instances`` ids x ``num_instances``).

    Args:
        items: the reader's ``train`` list.
        height, width: input size.
        batch_size, num_instances: P x K.
        sampler: a flat identity sampler to use instead of PK (e.g. a ``GraphSampler``).
        preload: decode all images once into memory.
        workers: loader processes (default :func:`default_workers`).
        seed: the PK sampler's seed.
        batch_augment: augment whole batches on ``device`` (:class:`BatchAugment`) instead of
            each image in the loader; the random draws come from ``device``'s global generator.
        device: where the batched augmentation runs (default: CUDA when available, as the
            trainer); unused without ``batch_augment``.
        **transform_kwargs: passed to :func:`~reid_core.data.transforms.build_transforms` (or to
            :class:`BatchAugment`, which takes the same keywords except ``color_jitter=True``).

    Returns:
        A ``DataLoader`` of float batches, or with ``batch_augment`` an :class:`AugmentedLoader`
        yielding the same ``(images, pids, camids, indices)`` with images already on ``device``.
    """
    if sampler is None:
        sampler = RandomIdentitySampler([pid for _, pid, _ in items], batch_size, num_instances, seed=seed)
    workers = default_workers() if workers is None else workers
    if batch_augment:
        augment = BatchAugment(height, width, **transform_kwargs)  # type: ignore[arg-type]
        dataset = ImageDataset(items, transform=None, preload=preload, size=(height, width))
    else:
        dataset = ImageDataset(
            items, transform=build_transforms(height, width, is_train=True, **transform_kwargs), preload=preload
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
    if not batch_augment:
        return loader
    return AugmentedLoader(loader, augment, device if device is not None else default_device())


def build_test_loader(
    items: Sequence[Item],
    height: int,
    width: int,
    batch_size: int = 128,
    preload: bool = False,
    workers: int | None = None,
    **transform_kwargs: object,
) -> DataLoader:
    """A loader over ``items`` in order, with the test transform (resize + normalise).

    Each image is resized when it is decoded (once, with ``preload``) and kept as uint8; the
    batch is scaled and normalised at once by :class:`~reid_core.data.NormalizingCollate`: the
    same numbers as :func:`~reid_core.data.transforms.build_transforms` (``is_train=False``)
    applied image by image, without its per-image overhead.

    Args:
        items: ``(path, pid, camid)`` triples, e.g. a reader's ``query`` or ``gallery``.
        height, width: input size.
        batch_size: images per batch.
        preload: decode every image once into memory.
        workers: loader processes (default :func:`default_workers`).
        **transform_kwargs: ``mean`` and ``std`` of the normalisation.

    Raises:
        ValueError: a keyword other than ``mean`` and ``std``, or a bad size, mean or std.
    """
    unknown = sorted(set(transform_kwargs) - {"mean", "std"})
    if unknown:
        raise ValueError(f"build_test_loader: unknown keyword(s) {unknown}; the test transform takes mean and std")
    collate = NormalizingCollate(**transform_kwargs)  # type: ignore[arg-type]
    dataset = ImageDataset(items, transform=None, preload=preload, size=(height, width))
    workers = default_workers() if workers is None else workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
    )
