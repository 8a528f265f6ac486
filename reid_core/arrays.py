"""Array inputs the library accepts (numpy or torch) and their checked conversion.

The ground floor of the package: imports nothing of ``reid_core``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
from torch import Tensor

__all__ = ["ArrayLike", "as_pid_array"]

ArrayLike = Union[np.ndarray, Tensor]
"""A numpy array or a torch tensor: every evaluation function takes either."""


def as_pid_array(pids: Sequence[int] | np.ndarray | Tensor) -> np.ndarray:
    """``pids`` (one identity per sample) as a 1-D int64 numpy array, with a clear error otherwise.

    Raises:
        ValueError: ``pids`` is empty, not 1-D, or not integers.
    """
    if isinstance(pids, Tensor):
        pids = pids.detach().cpu().numpy()
    array = np.asarray(pids)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"pids must be a non-empty 1-D sequence (one pid per sample), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"pids must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)
