"""The baseline for bench/rerank.py: k-reciprocal re-ranking as the common python code does it.

Written for this project from the paper's steps (Zhong et al., CVPR 2017) following the
common implementation's structure (Zhong et al. 2017, ``zhong2017reranking``), so that its time and memory stand for
what users of that code pay: the three blocks are stacked into one dense (Q+G)^2 float64
matrix, squared into float32, normalised by column and transposed; every row is fully
argsorted; V and its query expansion are dense (Q+G)^2 float32 matrices; the Jaccard
distance walks an inverted index built from V's columns. One Python loop iteration per image.

Do not use it beyond Market-1501 size: at 3,368 x 15,913 it peaks near 9 GB.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

__all__ = ["numpy_re_ranking"]


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): the members of i's top-(k+1) list whose top-(k+1) list holds i."""
    forward = rank[i, : k + 1]  # (k+1,)
    backward = rank[forward, : k + 1]  # (k+1, k+1)
    return forward[np.where(backward == i)[0]]


def numpy_re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    progress: bool = False,
) -> np.ndarray:
    """Dense k-reciprocal re-ranking: (Q, G) float32.

    Args:
        q_g_dist: (Q, G), q_q_dist: (Q, Q), g_g_dist: (G, G) distances.
        k1, k2, lambda_value: the paper's hyperparameters (20, 6, 0.3).
        progress: show tqdm bars over the per-image loops.

    Returns:
        (Q, G) float32 re-ranked distances.
    """
    num_query = q_g_dist.shape[0]
    stacked = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0
    )  # (N, N) in the inputs' dtype
    original = np.power(stacked, 2).astype(np.float32)
    del stacked
    original = np.transpose(original / np.max(original, axis=0))  # (N, N) column-normalised
    total = original.shape[0]
    encoding = np.zeros_like(original, dtype=np.float32)  # (N, N) V
    rank = np.argsort(original, axis=1, kind="stable").astype(np.int32)  # (N, N)
    half = int(np.around(k1 / 2.0))
    for i in tqdm(range(total), desc="baseline: encoding", disable=not progress, leave=False):
        base = _reciprocal(rank, i, k1)
        expanded = base
        for candidate in base:
            cand = _reciprocal(rank, candidate, half)
            if len(np.intersect1d(cand, base)) > 2.0 / 3.0 * len(cand):
                expanded = np.append(expanded, cand)
        expanded = np.unique(expanded)
        weight = np.exp(-original[i, expanded])
        encoding[i, expanded] = weight / np.sum(weight)
    original = original[:num_query]  # (Q, N)
    if k2 != 1:
        expanded_encoding = np.zeros_like(encoding, dtype=np.float32)
        for i in tqdm(range(total), desc="baseline: query expansion", disable=not progress, leave=False):
            expanded_encoding[i] = np.mean(encoding[rank[i, :k2]], axis=0)
        encoding = expanded_encoding
        del expanded_encoding
    del rank
    inverted = [np.where(encoding[:, j] != 0)[0] for j in range(total)]  # images with V[., j] > 0
    jaccard = np.zeros_like(original, dtype=np.float32)  # (Q, N)
    for i in tqdm(range(num_query), desc="baseline: Jaccard", disable=not progress, leave=False):
        overlap = np.zeros(total, dtype=np.float32)
        nonzero = np.where(encoding[i] != 0)[0]
        for j in nonzero:
            images = inverted[j]
            overlap[images] += np.minimum(encoding[i, j], encoding[images, j])
        jaccard[i] = 1 - overlap / (2.0 - overlap)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:, num_query:]
