"""Files written atomically: the whole new content or the old file, never half of either.

The ground floor of the package: imports nothing of ``reid_core``. Every writer of the library
(checkpoints, results and claims JSONs, the pretrained backbone's record, SynthReID's
``synthreid.json``, the CLI's outputs, the ranked-list page) goes through :func:`atomic_write`:
the content goes to a temporary file in the target's folder, which is then renamed over the
target (``os.replace`` is atomic on POSIX), so a crash or an interrupt mid-write leaves the old
file (or none) and no partial one, and a temporary file is removed when the write fails.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[BinaryIO], None],
    sync: bool = False,
    temp_prefix: str | None = None,
    temp_suffix: str = ".tmp",
) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, then rename it over ``path``.

    Args:
        path: the target file; its folder is created if missing.
        write: writes the content to the binary handle it is given.
        sync: flush the file to the disk before the rename (checkpoints: survive a power cut).
        temp_prefix, temp_suffix: the temporary file's name parts (default prefix ``.<name>.``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}." if temp_prefix is None else temp_prefix
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=temp_suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))
