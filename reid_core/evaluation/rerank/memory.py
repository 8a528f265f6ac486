"""Memory estimates for k-reciprocal re-ranking, checked before anything big is allocated.

The common implementation needs several dense (Q+G) x (Q+G) matrices: at MSMT17 size
(11,659 queries, 82,161 gallery images) one of them is 35 GB in float32, so it is killed
rather than told. Here every stage's size is estimated up front and a :class:`MemoryError`
says how much is needed, how much is free, and which option makes it fit.

Chapter: the book page "Evaluation at scale".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from reid_core.evaluation import distance

__all__ = ["MemoryEstimate", "rerank_memory_estimate"]

_GIB = float(1 << 30)
# Pairs joined at once in the Jaccard step and bytes per pair of its temporaries.
JACCARD_MAX_PAIRS = 1 << 23
_BYTES_PER_PAIR = 48
# Largest (rows, G) float32 buffer of the final step; about four of them live at once.
FINAL_BUFFER_BYTES = 64 << 20


@dataclass
class MemoryEstimate:
    """Bytes needed by each part of a re-ranking run.

    Attributes:
        parts: name of the part -> bytes.
    """

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Sum of all parts, in bytes."""
        return sum(self.parts.values())

    def describe(self) -> str:
        """One line per part, in GiB, largest first."""
        items = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return "; ".join(f"{name} {size / _GIB:.2f} GiB" for name, size in items)

    def check(self, device: torch.device, max_memory: int | None, advice: str) -> None:
        """Raise :class:`MemoryError` before allocating when this estimate does not fit.

        Delegates to :func:`reid_core.evaluation.distance.check_memory`; the message lists the parts.

        Args:
            device: where the run will go.
            max_memory: a limit in bytes; ``None`` uses the memory available on ``device``.
            advice: what to change, appended to the message.

        Raises:
            MemoryError: the estimate exceeds the limit.
        """
        distance.check_memory(self.total, device, f"re-ranking ({self.describe()})", advice, limit=max_memory)


def rerank_memory_estimate(
    num_query: int,
    num_gallery: int,
    k1: int = 20,
    k2: int = 6,
    chunk_size: int = 4096,
    dim: int | None = None,
    topk: int | None = None,
    feature_bytes: int = 4,
) -> MemoryEstimate:
    """Estimate the working memory of a re-ranking run (inputs not counted).

    The sparse parts assume expanded k-reciprocal sets of about 2 (k1 + 1) members and a
    query expansion that at most multiplies them by k2; the run checks the real sizes again
    before it expands.

    Args:
        num_query: Q.
        num_gallery: G.
        k1: k of the k-reciprocal sets.
        k2: neighbours of the local query expansion.
        chunk_size: the rows (dense input) or block side (features) processed at once.
        dim: feature dimension D for :func:`re_ranking_from_features`; ``None`` for
            :func:`re_ranking` on distance matrices (rows of (Q+G) distances per chunk).
        topk: keep only this many gallery items per query instead of the dense (Q, G) output.
        feature_bytes: bytes per feature element (4 for float32).

    Returns:
        A :class:`MemoryEstimate`.
    """
    n = num_query + num_gallery
    width = max(k1 + 1, k2) + 4
    set_size = 2 * (k1 + 1)
    half = int(round(k1 / 2.0)) + 1
    parts: dict[str, int] = {}
    if dim is None:
        parts["distance rows (chunk x (Q+G), 2 copies)"] = 2 * min(chunk_size, n) * n * 4
    else:
        parts["stacked features (Q+G) x D"] = n * dim * feature_bytes
        parts["distance blocks (chunk x chunk, 3 copies)"] = 3 * min(chunk_size, n) ** 2 * 4
    parts["rank lists and candidates"] = n * width * 12 * 3
    sparse_chunk = min(chunk_size, n)
    parts["k-reciprocal sets (chunk temporaries)"] = sparse_chunk * (k1 + 1) * half * (k1 + 1 + 8 * 4)
    parts["encoding V (sparse)"] = n * set_size * 20
    parts["query expansion (sparse)"] = n * set_size * min(k2, 6) * 40 if k2 > 1 else 0
    parts["Jaccard join"] = JACCARD_MAX_PAIRS * _BYTES_PER_PAIR + 4 * FINAL_BUFFER_BYTES
    if topk is None:
        parts["output Q x G float32"] = num_query * num_gallery * 4
    else:
        parts[f"output top-{topk} per query"] = num_query * topk * 12
    return MemoryEstimate(parts)
