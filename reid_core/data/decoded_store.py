"""Decoded images kept on disk, so that another process (or another day) does not decode them again.

A chapter's worker processes, the next chapter's, and a reader's restarted kernel all preload
the same SynthReID worlds at the same size. Decoding and resizing a 128x64 JPEG takes about
0.6 ms on one core: tens of seconds per world and process. :class:`DecodedImageStore` keeps the
decoded, resized ``uint8`` images of one image folder at one size in one ``.npz`` file (names,
modification times, file sizes and pixels), written atomically; an image is taken from it only
when its file's modification time and size are still those recorded, so a rewritten image is
decoded afresh (and the file updated). Only resized preloads are stored (one shape per file).

Where: ``$REID_CORE_CACHE/decoded`` when ``REID_CORE_CACHE`` is set (``off`` switches the store
off), else ``$XDG_CACHE_HOME/reid_core/decoded`` (default ``~/.cache/reid_core/decoded``).
Deleting the folder is always safe.

Chapter: 01 (the data pipeline).
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from reid_core.files import atomic_write

__all__ = ["CACHE_ENV", "DecodedImageStore", "default_store"]

CACHE_ENV = "REID_CORE_CACHE"
"""Environment variable: the cache folder of ``reid_core`` (``off``: no decoded-image store)."""


def default_store() -> DecodedImageStore | None:
    """The store under :data:`CACHE_ENV` (or the XDG cache folder); ``None`` when switched off."""
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() == "off":
        return None
    if setting:
        root = Path(setting).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reid_core"
    return DecodedImageStore(root / "decoded")


class DecodedImageStore:
    """One ``.npz`` file per (image folder, size) holding that folder's decoded, resized images.

    Args:
        root: the folder of the store's files (created on the first save).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def file_for(self, folder: str, size: tuple[int, int]) -> Path:
        """The store's file for the images of ``folder`` (an absolute path) at ``size``."""
        digest = hashlib.sha256(folder.encode()).hexdigest()[:16]
        return self.root / f"{Path(folder).name or 'root'}-{digest}-{size[0]}x{size[1]}.npz"

    def load(
        self, paths: Sequence[str], signatures: Sequence[tuple[int, int]], size: tuple[int, int]
    ) -> list[Tensor | None]:
        """The stored image of every path whose file is unchanged; ``None`` for the others.

        Args:
            paths: image files.
            signatures: each file's ``(st_mtime_ns, st_size)`` now (what the stored entry must match).
            size: (height, width) the images were resized to.

        Returns:
            One (3, height, width) uint8 tensor or ``None`` per path. A store file that cannot be
            read counts as empty (it is rewritten by the next :meth:`save`).
        """
        found: list[Tensor | None] = [None] * len(paths)
        for folder, indices in _by_folder(paths).items():
            entries = self._read(self.file_for(folder, size), size)
            for i in indices:
                entry = entries.get(os.path.basename(paths[i]))
                if entry is not None and entry[:2] == tuple(signatures[i]):
                    found[i] = entry[2]
        return found

    def save(
        self,
        paths: Sequence[str],
        signatures: Sequence[tuple[int, int]],
        size: tuple[int, int],
        images: Sequence[Tensor],
    ) -> None:
        """Add (or replace) these decoded images in their folders' files, keeping the other entries.

        ``signatures``: each file's ``(st_mtime_ns, st_size)`` when it was decoded."""
        for folder, indices in _by_folder(paths).items():
            target = self.file_for(folder, size)
            entries = self._read(target, size)
            for i in indices:
                if tuple(images[i].shape) != (3, *size) or images[i].dtype != torch.uint8:
                    got = f"{images[i].dtype} {tuple(images[i].shape)}"
                    raise ValueError(f"{paths[i]}: expected a (3, {size[0]}, {size[1]}) uint8 image, got {got}")
                mtime, nbytes = signatures[i]
                entries[os.path.basename(paths[i])] = (mtime, nbytes, images[i])
            names = sorted(entries)
            arrays = {
                "names": np.array(names),
                "mtimes": np.array([entries[n][0] for n in names], dtype=np.int64),
                "sizes": np.array([entries[n][1] for n in names], dtype=np.int64),
                "pixels": torch.stack([entries[n][2] for n in names]).numpy(),  # (N, 3, height, width) uint8
            }
            atomic_write(target, lambda handle, arrays=arrays: np.savez(handle, **arrays))

    @staticmethod
    def _read(path: Path, size: tuple[int, int]) -> dict[str, tuple[int, int, Tensor]]:
        """name -> (mtime_ns, file size, image) from one store file; empty when missing or unreadable."""
        try:
            with np.load(path, allow_pickle=False) as data:
                names, mtimes, sizes, pixels = data["names"], data["mtimes"], data["sizes"], data["pixels"]
        except (OSError, ValueError, KeyError):  # missing, truncated by a crash elsewhere, or another layout
            return {}
        if pixels.dtype != np.uint8 or pixels.shape[1:] != (3, *size) or not len(names) == len(mtimes) == len(pixels):
            return {}
        images = torch.from_numpy(pixels)  # (N, 3, height, width)
        return {str(n): (int(m), int(s), images[i]) for i, (n, m, s) in enumerate(zip(names, mtimes, sizes))}


def _by_folder(paths: Sequence[str]) -> dict[str, list[int]]:
    """Indices of ``paths`` grouped by absolute parent folder."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        groups[os.path.dirname(os.path.abspath(path))].append(i)
    return groups
