"""Features shaped like a re-ID test set: one Gaussian cluster per identity.

Used by bench/rerank.py, bench/scale.py and bench/eval_speed.py to time retrieval at the
sizes of the real test sets (Market-1501: 3,368 queries x 15,913 gallery; MSMT17: 11,659 x
82,161) without the images. Every image is ``centre[pid] + camera_bias[cam] + noise``; the scales are set so
that the nearest neighbours are mostly, not always, of the same identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ClusterFeatures", "gaussian_cluster_features", "MARKET", "MSMT17"]

# (queries, gallery, identities, cameras) of the real test sets.
MARKET = (3368, 15913, 750, 6)
MSMT17 = (11659, 82161, 3060, 15)


@dataclass
class ClusterFeatures:
    """Query and gallery features with their identities and cameras.

    Attributes:
        qf: (Q, D) float32 query features.
        gf: (G, D) float32 gallery features.
        q_pids, g_pids: (Q,), (G,) int64 identities.
        q_camids, g_camids: (Q,), (G,) int64 cameras.
    """

    qf: Tensor
    gf: Tensor
    q_pids: Tensor
    g_pids: Tensor
    q_camids: Tensor
    g_camids: Tensor


def _draw(
    num: int, centres: Tensor, bias: Tensor, noise: float, gen: torch.Generator, chunk: int = 8192
) -> tuple[Tensor, Tensor, Tensor]:
    """``num`` images: random identity and camera, chunked to keep temporaries small."""
    pids = torch.randint(0, centres.shape[0], (num,), generator=gen)  # (n,)
    cams = torch.randint(0, bias.shape[0], (num,), generator=gen)  # (n,)
    feats = torch.empty(num, centres.shape[1])
    for start in range(0, num, chunk):
        stop = min(start + chunk, num)
        feats[start:stop] = torch.randn(stop - start, centres.shape[1], generator=gen).mul_(noise)
        feats[start:stop] += centres[pids[start:stop]] + bias[cams[start:stop]]
    return feats, pids, cams


def gaussian_cluster_features(
    num_query: int,
    num_gallery: int,
    dim: int = 2048,
    num_ids: int = 750,
    num_cameras: int = 6,
    seed: int = 0,
    noise: float = 1.0,
    camera_bias: float = 0.5,
    separation: float = 2.3,
    num_distractors: int = 0,
) -> ClusterFeatures:
    """Draw a synthetic test set of Gaussian clusters.

    The identity centres are N(0, s^2 I) with s = separation / D^(1/4): the gap between
    same-identity and other-identity squared distances then grows like the spread of the
    squared distances (both ~ sqrt(D)), so retrieval is equally hard at any D; the default
    gives a rank-1 around 0.9 at Market-1501 size, good but not perfect, as with a trained
    re-ID model.

    Args:
        num_query: Q.
        num_gallery: G.
        dim: D.
        num_ids: identities shared by query and gallery.
        num_cameras: cameras; each adds a fixed bias vector to its images.
        seed: random seed.
        noise: standard deviation of an image around its identity centre.
        camera_bias: standard deviation of the camera bias, relative to the centres' spread.
        separation: the identity centres' spread times D^(1/4).
        num_distractors: the last ``num_distractors`` gallery images show other people (their
            own identities, about 25 images each, never queried) and get pid 0, like
            Market-1501's distractors and its 500k extension. Real pids are 1..num_ids.

    Returns:
        A :class:`ClusterFeatures`.
    """
    gen = torch.Generator().manual_seed(seed)
    spread = separation / dim**0.25
    centres = torch.randn(num_ids, dim, generator=gen) * spread  # (P, D)
    bias = torch.randn(num_cameras, dim, generator=gen) * (camera_bias * spread)  # (C, D)
    if not 0 <= num_distractors <= num_gallery:
        raise ValueError(f"num_distractors must be in [0, num_gallery={num_gallery}], got {num_distractors}")
    qf, q_pids, q_camids = _draw(num_query, centres, bias, noise, gen)
    gf, g_pids, g_camids = _draw(num_gallery - num_distractors, centres, bias, noise, gen)
    q_pids, g_pids = q_pids + 1, g_pids + 1  # pid 0 is reserved for distractors
    if num_distractors:
        others = torch.randn(max(1, num_distractors // 25), dim, generator=gen) * spread  # (P', D)
        df, _, d_camids = _draw(num_distractors, others, bias, noise, gen)
        gf = torch.cat([gf, df])
        g_pids = torch.cat([g_pids, torch.zeros(num_distractors, dtype=torch.long)])
        g_camids = torch.cat([g_camids, d_camids])
    return ClusterFeatures(qf, gf, q_pids, g_pids, q_camids, g_camids)
