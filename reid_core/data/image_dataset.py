"""A torch ``Dataset`` over ``(path, pid, camid)`` items, optionally decoded once into memory.

Every image is decoded with Pillow into an RGB ``uint8`` tensor of shape (3, H, W), whether it
is read from disk at each access or kept in memory (``preload=True``), so a transform sees
the same input either way and the two modes give identical samples. On a 2-core machine
JPEG decoding each epoch is the bottleneck of a small model's training; preloading pays it
once (Market-1501's 12,936 training images at 128x64 take about 320 MB).

Chapter: 01 (the data pipeline).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from reid_core.collectives import is_main_process
from reid_core.data.base import Item
from reid_core.data.decoded_store import default_store

__all__ = ["ImageDataset", "ImageLoadError", "read_image"]


class ImageLoadError(OSError):
    """An image file is missing, unreadable or corrupt; the message names the file."""


def read_image(path: str) -> Tensor:
    """Decode an image file to an RGB tensor.

    Args:
        path: the image file.

    Returns:
        (3, H, W) ``torch.uint8``.

    Raises:
        ImageLoadError: the file is missing, not an image, or truncated.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")  # forces a full decode: a truncated file fails here
    except Exception as error:  # Pillow raises OSError, ValueError, SyntaxError... for bad data
        raise ImageLoadError(f"cannot load image '{path}': {type(error).__name__}: {error}") from error
    array = np.asarray(rgb)  # (H, W, 3) uint8
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (3, H, W)


def _validate_items(items: Sequence[Item]) -> list[Item]:
    """Check that every item is ``(str path, int pid, int camid)``."""
    checked: list[Item] = []
    for index, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 3):
            raise ValueError(f"items[{index}] must be (path, pid, camid), got {item!r}")
        path, pid, camid = item
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"items[{index}]: path must be a str, got {type(path).__name__}")
        checked.append((os.fspath(path), int(pid), int(camid)))
    return checked


class _DecodedImages:
    """The preloaded images of recent datasets in this process, reused by the next dataset of the same files.

    A chapter trains many runs on one world; in a worker process that runs them one after another
    (:func:`~reid_core.engine.run_side_by_side`) each run would decode the same thousands of
    images again. The key is every file's path, modification time and size, and the resize
    target, so a file rewritten on disk is decoded afresh. The tensors are never written to
    (:meth:`ImageDataset.__getitem__` returns copies). Least recently used entries are dropped
    past :attr:`max_bytes`.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Any, ...], list[Tensor]] = OrderedDict()

    @staticmethod
    def _key(items: Sequence[Item], size: tuple[int, int] | None) -> tuple[Any, ...]:
        files = []
        for path, _, _ in items:
            try:
                stat = os.stat(path)
            except OSError as error:
                raise ImageLoadError(f"cannot load image '{path}': {type(error).__name__}: {error}") from error
            files.append((path, stat.st_mtime_ns, stat.st_size))
        return (size, tuple(files))

    def get_or_decode(
        self,
        items: Sequence[Item],
        size: tuple[int, int] | None,
        decode: Callable[[list[tuple[int, int]]], list[Tensor]],
    ) -> list[Tensor]:
        """The decoded images of ``items`` (resized to ``size``): cached, or ``decode(signatures)`` and cached.

        ``signatures`` are the ``(modification time in ns, size in bytes)`` of each file, as read for the key.
        """
        key = self._key(items, size)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        images = decode([(mtime, nbytes) for _, mtime, nbytes in key[1]])
        self._entries[key] = images
        while len(self._entries) > 1 and self._bytes() > self.max_bytes:
            self._entries.popitem(last=False)
        return images

    def _bytes(self) -> int:
        return sum(image.numel() * image.element_size() for images in self._entries.values() for image in images)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()


_DECODED = _DecodedImages()


class ImageDataset(Dataset):
    """Images of ``(path, pid, camid)`` items, returned as ``(image, pid, camid, index)``.

    Args:
        items: e.g. ``Market1501(root).train``.
        transform: applied to the (3, H, W) uint8 image (e.g. ``build_transforms(...)``);
            ``None`` returns the uint8 tensor.
        preload: decode every image once (a tqdm bar shows progress) and keep the uint8
            tensors in memory; the transform still runs at each access. A later dataset of the
            same unchanged files and size in this process reuses them (no second decode); with a
            ``size``, other processes reuse them too, through the on-disk store of
            :mod:`reid_core.data.decoded_store`.
        size: ``(height, width)`` to resize every image to as soon as it is decoded (once, with
            ``preload``), with the antialiased bilinear resize of
            :func:`~reid_core.data.transforms.build_transforms`, whose own resize then leaves it
            unchanged; ``None`` keeps the decoded size. The batched augmentation needs it: a batch
            is one tensor, so its images must share a size.

    Raises:
        ValueError: an item that is not ``(path, pid, camid)``, or a ``size`` that is not two positive ints.
        ImageLoadError: an unreadable image, when it is loaded (at access, or while preloading).

    Example:
        >>> data = ImageDataset(Market1501("data").train, build_transforms(256, 128, True))  # doctest: +SKIP
        >>> image, pid, camid, index = data[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        items: Sequence[Item],
        transform: Callable[[Tensor], Any] | None = None,
        preload: bool = False,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.items = _validate_items(items)
        self.transform = transform
        if size is not None and not (len(size) == 2 and all(isinstance(v, int) and v >= 1 for v in size)):
            raise ValueError(f"size must be (height, width) of positive ints, got {size!r}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.preloaded: list[Tensor] | None = None
        if preload:
            self.preloaded = _DECODED.get_or_decode(self.items, self.size, self._decode_all)

    def _decode_all(self, signatures: list[tuple[int, int]]) -> list[Tensor]:
        """Every image: from the on-disk store when unchanged there, else decoded (and stored).

        ``signatures``: each file's ``(mtime_ns, size)``, checked against the store's record.

        Pillow releases the GIL while decoding, so threads help. The store
        (:func:`~reid_core.data.decoded_store.default_store`) only holds resized images.
        """
        from tqdm import tqdm

        paths = [path for path, _, _ in self.items]
        store = default_store() if self.size is not None else None
        images: list[Tensor | None] = (
            store.load(paths, signatures, self.size) if store is not None else [None] * len(paths)
        )
        missing = [i for i, image in enumerate(images) if image is None]
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            bar = tqdm(
                pool.map(self._load, [paths[i] for i in missing]),
                total=len(missing),
                desc="preload images",
                unit="img",
                disable=not is_main_process() or not missing,
            )  # under torchrun: one bar, rank 0's
            for i, image in zip(missing, bar):
                images[i] = image
        if store is not None and missing:
            try:
                decoded = [images[i] for i in missing]
                store.save([paths[i] for i in missing], [signatures[i] for i in missing], self.size, decoded)
            except OSError as error:  # a full or read-only disk: the images are decoded, only not kept
                warnings.warn(f"could not keep decoded images in {store.root}: {error}", stacklevel=3)
        return images  # type: ignore[return-value]  # every None was filled above

    def _load(self, path: str) -> Tensor:
        """Decode ``path``, resized to :attr:`size` when one is set. Returns: (3, H, W) uint8."""
        image = read_image(path)  # (3, H, W)
        if self.size is not None and tuple(image.shape[1:]) != self.size:
            image = TF.resize(image, list(self.size), antialias=True)  # (3, height, width)
        return image

    @property
    def pids(self) -> list[int]:
        """The pid of each item, in order (what the samplers take)."""
        return [pid for _, pid, _ in self.items]

    @property
    def camids(self) -> list[int]:
        """The camid of each item, in order."""
        return [camid for _, _, camid in self.items]

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the preloaded images (0 without preload)."""
        if self.preloaded is None:
            return 0
        return sum(image.numel() * image.element_size() for image in self.preloaded)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, int, int, int]:
        """Returns: ``(image, pid, camid, index)``; image (3, H, W) uint8 or the transform's output."""
        path, pid, camid = self.items[index]
        if self.preloaded is not None:
            image = self.preloaded[index].clone()  # (3, H, W); a copy, so no transform can alter the cache
        else:
            image = self._load(path)  # (3, H, W)
        if self.transform is not None:
            image = self.transform(image)
        return image, pid, camid, index

    def __repr__(self) -> str:
        if self.preloaded is None:
            memory = "not preloaded"
        else:
            memory = f"preloaded, {self.memory_bytes / 2**20:.1f} MiB in memory"
        transform = "None" if self.transform is None else type(self.transform).__name__
        return f"ImageDataset({len(self)} images, {len(set(self.pids))} ids, {memory}, transform={transform})"
