"""AlignedReID's aligned local distance (Zhang et al. 2017): stripes matched by a shortest path.

* :mod:`~reid_core.alignment.recurrence`: the paper's recurrence for one pair, written to be
  read (and drawn by the chapter's figures);
* :mod:`~reid_core.alignment.batched`: the same distance for N x M pairs at once, fast and
  differentiable;
* :mod:`~reid_core.alignment.unaligned`: the control, stripe i against stripe i only.

Chapter: 03 (AlignedReID).
"""

from reid_core.alignment.batched import aligned_distance, paired_aligned_distance, pairwise_aligned_distance
from reid_core.alignment.recurrence import AlignedPath, aligned_path, shortest_path_table, stripe_distance_matrix
from reid_core.alignment.unaligned import paired_unaligned_distance, unaligned_local_distance

__all__ = [
    "AlignedPath",
    "aligned_distance",
    "aligned_path",
    "paired_aligned_distance",
    "paired_unaligned_distance",
    "pairwise_aligned_distance",
    "shortest_path_table",
    "stripe_distance_matrix",
    "unaligned_local_distance",
]
