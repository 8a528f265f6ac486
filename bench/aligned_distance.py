"""Benchmark ``reid_core.alignment.aligned_distance`` (issue 5).

Times, in one process and on the same random local features:

* **ours**: ``aligned_distance(x, y)`` for N queries x M gallery images, S stripes of D dims;
* **(a) reference**: a batched numpy implementation in the style of the public AlignedReID
  re-production: numpy over all pairs, Python loops over the S x S cells of the DP, chunked
  over the queries so its memory stays bounded (written here from the paper's formulas);
* **(b) floor**: the one matrix product ``(N*S, D) @ (D, M*S)`` that computes every
  stripe-to-stripe dot product, timed twice: allocating its (N*S, M*S) output as a plain
  ``torch.mm`` call does, and writing into a preallocated output.

Targets (issue 5): ours >= 3x faster than (a), and within 1.5x of (b). Prints the times, the
ratios and met / not met, and asserts that ours agrees with (a).

Usage:
    python bench/aligned_distance.py            # 1,000 x 5,000 pairs, 8 stripes of 128-d
    python bench/aligned_distance.py --quick    # 100 x 500 pairs, seconds
    python bench/aligned_distance.py --device cuda
    python bench/aligned_distance.py --threads 1   # steadier on a busy machine

On a machine shared with other jobs, many short multi-threaded ops (ours) suffer more from
descheduled OpenMP threads than one long matrix product (the floor); compare with --threads 1.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from reid_core.alignment import aligned_distance


def reference_numpy(x: np.ndarray, y: np.ndarray, query_chunk: int = 100) -> np.ndarray:
    """Aligned distances the way the re-production computes them: numpy over pairs, loops over cells.

    Args:
        x: (N, S, D) float32 query stripes; y: (M, S, D) float32 gallery stripes.
        query_chunk: queries per chunk (memory: about 4 * query_chunk * M * S * S floats).

    Returns:
        (N, M) float32 distances.
    """
    n_total, s, d = x.shape
    m_total = y.shape[0]
    y_flat = y.reshape(m_total * s, d)  # (M S, D)
    y_sq = (y_flat**2).sum(axis=1)[None, :]  # (1, M S)
    out = np.empty((n_total, m_total), dtype=np.float32)
    for start in tqdm(range(0, n_total, query_chunk), desc="reference (a)", leave=False, mininterval=1.0):
        xc = x[start : start + query_chunk]
        n = xc.shape[0]
        x_flat = xc.reshape(n * s, d)  # (n S, D)
        x_sq = (x_flat**2).sum(axis=1)[:, None]  # (n S, 1)
        dist = np.sqrt(np.maximum(x_sq + y_sq - 2.0 * x_flat @ y_flat.T, 0.0))  # (n S, M S)
        dist = (np.exp(dist) - 1.0) / (np.exp(dist) + 1.0)  # element-wise normalisation
        cost = dist.reshape(n, s, m_total, s).transpose(1, 3, 0, 2)  # (S, S, n, M)
        acc = [[None] * s for _ in range(s)]
        for i in range(s):  # Python loops over the cells, numpy over the n x M pairs
            for j in range(s):
                if i == 0 and j == 0:
                    acc[i][j] = cost[i, j]
                elif i == 0:
                    acc[i][j] = acc[i][j - 1] + cost[i, j]
                elif j == 0:
                    acc[i][j] = acc[i - 1][j] + cost[i, j]
                else:
                    acc[i][j] = np.minimum(acc[i - 1][j], acc[i][j - 1]) + cost[i, j]
        out[start : start + n] = acc[-1][-1]
    return out


def best_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call), synchronising CUDA."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-query", type=int, default=1000, help="N queries (default 1000)")
    parser.add_argument("--num-gallery", type=int, default=5000, help="M gallery images (default 5000)")
    parser.add_argument("--stripes", type=int, default=8, help="S stripes per image (default 8)")
    parser.add_argument("--dim", type=int, default=128, help="D channels per stripe (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours and of the floor; the best counts")
    parser.add_argument("--chunk-size", type=int, default=None, help="pairs per block for ours (default: library's)")
    parser.add_argument("--device", default="cpu", help="device for ours and the floor (the reference is numpy)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="small run: 100 x 500 pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.num_query, args.num_gallery = 100, 500
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n, m, s, d = args.num_query, args.num_gallery, args.stripes, args.dim

    gen = torch.Generator().manual_seed(args.seed)
    # Post-ReLU-like local features of moderate norm, so the distances spread over tanh's range.
    x_cpu = torch.randn(n, s, d, generator=gen).relu_() * 0.15  # (N, S, D)
    y_cpu = torch.randn(m, s, d, generator=gen).relu_() * 0.15  # (M, S, D)
    x, y = x_cpu.to(device), y_cpu.to(device)
    print(
        f"aligned distance: {n} x {m} pairs, {s} stripes of {d}-d, float32, device {device}, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )

    start = time.perf_counter()
    ref = reference_numpy(x_cpu.numpy(), y_cpu.numpy())
    t_ref = time.perf_counter() - start

    with torch.no_grad():
        t_ours = best_time(lambda: aligned_distance(x, y, chunk_size=args.chunk_size), args.repeats, device)
        ours = aligned_distance(x, y, chunk_size=args.chunk_size).cpu().numpy()

        lhs = x.reshape(n * s, d)  # (N S, D)
        rhs = y.reshape(m * s, d).T.contiguous()  # (D, M S)
        t_floor_alloc = best_time(lambda: torch.mm(lhs, rhs), args.repeats, device)
        product = torch.empty(n * s, m * s, device=device)  # (N S, M S)
        t_floor_out = best_time(lambda: torch.mm(lhs, rhs, out=product), args.repeats, device)
        product = None  # free the (N S, M S) buffer

    err = float(np.abs(ours - ref).max())
    print(f"max |ours - reference| = {err:.2e} (distances in [0, {2 * s - 1}); mean {ref.mean():.3f})")
    assert np.allclose(ours, ref, rtol=1e-4, atol=1e-4), f"ours and the reference disagree: max abs diff {err}"

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    speedup = t_ref / t_ours
    ratio_alloc, ratio_out = t_ours / t_floor_alloc, t_ours / t_floor_out
    print(f"(a) reference numpy (loops over cells) : {t_ref:8.3f} s (one run)")
    print(f"(b) floor, torch.mm allocating output  : {t_floor_alloc:8.3f} s (best of {args.repeats})")
    print(f"(b) floor, torch.mm into preallocated  : {t_floor_out:8.3f} s (best of {args.repeats})")
    print(f"ours aligned_distance                  : {t_ours:8.3f} s (best of {args.repeats})")
    print(f"speed-up over (a): {speedup:6.2f}x   target >= 3x   -> {verdict(speedup >= 3.0)}")
    print(f"ours / floor (allocating)   : {ratio_alloc:5.2f}   target <= 1.5 -> {verdict(ratio_alloc <= 1.5)}")
    print(f"ours / floor (preallocated) : {ratio_out:5.2f}   target <= 1.5 -> {verdict(ratio_out <= 1.5)}")


if __name__ == "__main__":
    main()
