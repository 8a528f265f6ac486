r"""What a random ranking scores: the chance level of CMC under the Market-1501 protocol.

For a query whose filtered gallery (same identity and camera removed, junk removed) holds
:math:`N` images of which :math:`n` match, a ranking drawn uniformly at random puts no match in
its top :math:`k` with probability :math:`\binom{N-n}{k} / \binom{N}{k}`, so

.. math::
    \mathrm{CMC}_{\text{chance}}(k) = \frac1{|Q|} \sum_q \Big(1 - \prod_{i=0}^{k-1} \frac{N_q - n_q - i}{N_q - i}\Big),

over the queries with at least one match (the others are skipped, as the protocol skips them).
A matcher below this line is worse than guessing: it ranks wrong images first on purpose, for
example the query camera's other people, whose colours share the camera's cast.

Chapter: 01 (the colour-histogram matcher against chance).
"""

from __future__ import annotations

import numpy as np

from reid_core.arrays import ArrayLike

__all__ = ["chance_cmc"]


def chance_cmc(
    q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike, g_camids: ArrayLike, max_rank: int = 20
) -> np.ndarray:
    """The expected CMC (fractions, ranks 1..max_rank) of a uniformly random ranking.

    Raises:
        ValueError: no query has a valid match (the protocol would have nothing to score), or
            ``max_rank < 1``.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)  # (Q,), (G,)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    valid = ~((q_pids[:, None] == g_pids[None, :]) & (q_camids[:, None] == g_camids[None, :]))  # (Q, G)
    valid &= g_pids[None, :] != -1
    total = valid.sum(axis=1).astype(float)  # N_q
    matches = (valid & (q_pids[:, None] == g_pids[None, :])).sum(axis=1).astype(float)  # n_q
    keep = matches > 0
    if not keep.any():
        raise ValueError("chance_cmc: no query has a match in the gallery under the protocol")
    total, matches = total[keep], matches[keep]
    i = np.arange(max_rank, dtype=float)[None, :]  # (1, K)
    factors = np.clip(
        (total[:, None] - matches[:, None] - i) / np.maximum(total[:, None] - i, 1.0), 0.0, 1.0
    )  # (Q', K)
    miss = np.cumprod(factors, axis=1)  # P(no match in the top k)
    return (1.0 - miss).mean(axis=0)
