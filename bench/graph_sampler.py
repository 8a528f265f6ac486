"""Benchmark Graph Sampling and all-pairs QAConv scoring (issue 7).

Two timings, each against a straightforward implementation run in the same process on the
same data:

(i) **Graph Sampling**, 8,000 classes (RandPerson's size in the paper), about 16 images each,
    B = 64, K = 2 (QAConv 2.1): given a random (C, C) class distance,
    * ours: ``GraphSampler.update_graph`` (one ``topk``) and one epoch of batches
      (``sample_epoch``: all pointers resolved at once);
    * reference: Python loops the way the paper's code reads: per class, sort its row and
      keep the k nearest; then per batch and per class, a pointer walking a shuffled list,
      reshuffled when it wraps; then the batches shuffled.
    Check: identical neighbour distances, rank by rank (tied columns may come in another
    order); both epochs are valid (each batch = seed + its kNN with
    K images each, every class seeds once, each class's images used evenly).

(ii) **QAConv all-pairs scoring** of N x N feature maps (24 x 8 positions, 128-d: the paper's
    384 x 128 input), eval mode:
    * ours: ``QAConv.match_all`` (blocks of chunk x chunk pairs; fp16 autocast on CUDA);
    * reference: a per-PAIR loop (one (hw, d) @ (d, hw) product, two max-poolings, BN, FC,
      BN per pair) over a subset of the pairs, its time EXTRAPOLATED linearly to all N x N.
    Check: the subset's scores agree with ours.

Timings are wall-clock: for (i) the median of ``--repeats`` runs of ours and of the reference
epoch, one run of the reference graph (seconds long); for (ii) one run each after a warm-up.
They include whatever else the machine is doing.

Usage:
    python bench/graph_sampler.py              # 8,000 classes; 1,000 x 1,000 maps
    python bench/graph_sampler.py --quick      # 1,000 classes; 100 x 100 maps
    python bench/graph_sampler.py --only qaconv --device cuda
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from reid_core.models.qaconv import QAConv
from reid_core.samplers.graph_sampler import GraphSampler


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------- (i) sampler


def reference_graph(dist: np.ndarray, k: int) -> list[list[int]]:
    """Per class: sort its row (diagonal excluded), keep the k nearest."""
    neighbors = []
    for c in tqdm(range(dist.shape[0]), desc="reference graph", leave=False, mininterval=1.0):
        row = dist[c].copy()
        row[c] = np.inf
        neighbors.append([int(j) for j in np.argsort(row, kind="stable")[:k]])
    return neighbors


def reference_epoch(
    neighbors: list[list[int]], members: list[list[int]], num_instances: int, seed: int
) -> list[list[int]]:
    """One epoch by pointer loops: per seed class, per class of its batch, walk the pointer."""
    rnd = random.Random(seed)
    lists = [rnd.sample(m, len(m)) for m in members]
    pointer = [0] * len(members)
    batches = []
    for seed_class in tqdm(range(len(neighbors)), desc="reference epoch", leave=False, mininterval=1.0):
        batch = []
        for c in [seed_class] + neighbors[seed_class]:
            remain = num_instances
            while remain > 0:
                end = pointer[c] + remain
                taken = lists[c][pointer[c] : end]
                batch.extend(taken)
                remain -= len(taken)
                pointer[c] = end
                if end >= len(lists[c]):
                    rnd.shuffle(lists[c])
                    pointer[c] = 0
        batches.append(batch)
    rnd.shuffle(batches)
    return batches


def check_epoch(batches: np.ndarray, neighbors: np.ndarray, class_of: np.ndarray, k_inst: int) -> None:
    """Assert the GS invariants for one epoch (C, B) of batches."""
    num_classes = neighbors.shape[0]
    seeds = []
    for row in batches:
        blocks = class_of[row].reshape(-1, k_inst)  # (P, K)
        assert (blocks == blocks[:, :1]).all(), "a block of K images mixes classes"
        seed = int(blocks[0, 0])
        assert (blocks[1:, 0] == neighbors[seed]).all(), "batch is not seed + kNN"
        seeds.append(seed)
    assert sorted(seeds) == list(range(num_classes)), "every class must seed exactly one batch"
    usage = Counter(batches.reshape(-1).tolist())
    per_class: dict[int, list[int]] = {}
    for index in range(len(class_of)):
        per_class.setdefault(int(class_of[index]), []).append(usage.get(index, 0))
    assert all(max(u) - min(u) <= 1 for u in per_class.values()), "images must cycle before repeating"


def bench_sampler(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    num_classes = args.num_classes
    counts = rng.integers(args.images_per_class // 2, args.images_per_class * 3 // 2 + 1, size=num_classes)
    pids = rng.permutation(np.repeat(np.arange(num_classes), counts))  # (N,) dataset order
    dist_t = torch.rand(num_classes, num_classes, generator=torch.Generator().manual_seed(args.seed))  # (C, C)
    dist_np = dist_t.numpy()
    k = args.batch_size // args.num_instances - 1
    print(
        f"\n(i) Graph Sampling: {num_classes} classes, {len(pids)} images, B={args.batch_size}, "
        f"K={args.num_instances}, k={k} neighbours"
    )

    sampler = GraphSampler(pids, args.batch_size, args.num_instances, seed=args.seed)
    graph_times, epoch_times, epochs = [], [], []
    for _ in range(args.repeats):  # ours is cheap: median of a few runs
        t0 = time.perf_counter()
        sampler.update_graph(dist_t)
        graph_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        epochs.append(sampler.sample_epoch())  # (C, B)
        epoch_times.append(time.perf_counter() - t0)
    t_graph, t_epoch = float(np.median(graph_times)), float(np.median(epoch_times))
    ours = epochs[0]  # the epoch drawn from the fresh state: its usage must be even

    members = [[] for _ in range(num_classes)]
    for index, pid in enumerate(pids.tolist()):
        members[pid].append(index)
    t0 = time.perf_counter()
    ref_neighbors = reference_graph(dist_np, k)  # one run: it takes seconds
    t_ref_graph = time.perf_counter() - t0
    ref_epoch_times = []
    ref_batches = None  # the first repeat's batches, compared with ours below
    for r in range(args.repeats):
        t0 = time.perf_counter()
        batches = reference_epoch(ref_neighbors, members, args.num_instances, args.seed + r)
        ref_epoch_times.append(time.perf_counter() - t0)
        if r == 0:
            ref_batches = batches
    t_ref_epoch = float(np.median(ref_epoch_times))

    assert sampler.neighbors is not None
    ref_nb = np.asarray(ref_neighbors)  # (C, k)
    rows = np.arange(num_classes)[:, None]
    # float32 ties occur among 64M random values, and topk and argsort may order tied
    # columns differently: compare the distances of the chosen neighbours, rank by rank.
    same = (dist_np[rows, sampler.neighbors] == dist_np[rows, ref_nb]).all()
    tied_rows = int((sampler.neighbors != ref_nb).any(axis=1).sum())
    check_epoch(ours, sampler.neighbors, pids, args.num_instances)
    check_epoch(np.asarray(ref_batches), np.asarray(ref_neighbors), pids, args.num_instances)
    print(f"  {'':24s}{'ours':>10s}{'loops':>10s}{'speed-up':>10s}")
    for name, a, b in (
        ("graph (kNN of C rows)", t_graph, t_ref_graph),
        ("one epoch of batches", t_epoch, t_ref_epoch),
        ("graph + epoch", t_graph + t_epoch, t_ref_graph + t_ref_epoch),
    ):
        print(f"  {name:24s}{a:9.3f}s{b:9.3f}s{b / a:9.1f}x")
    print(
        f"  neighbour distances identical: {bool(same)} (index order differs only among ties, "
        f"in {tied_rows} rows); both epochs pass the GS checks"
    )
    assert same, "neighbour lists differ from the reference"


# ------------------------------------------------------------------------- (ii) QAConv


@torch.no_grad()
def make_matcher(dim: int, height: int, width: int, seed: int, calib: tuple[torch.Tensor, torch.Tensor]) -> QAConv:
    """A QAConv with perturbed FC weights and BN running statistics measured on the pairs of
    ``calib`` (two sets of (n, d, h, w) maps), so eval scores have about unit variance."""
    gen = torch.Generator().manual_seed(seed)
    m = QAConv(dim, height, width).to(calib[0].device)
    m.fc.weight.mul_(1.0 + 0.5 * torch.randn(m.fc.weight.shape, generator=gen).to(calib[0].device))
    for bn in (m.bn, m.logit_bn):
        bn.momentum = None  # cumulative average: one train-mode pass sets the batch statistics
    m.train()(*calib)
    return m.eval()


@torch.no_grad()
def reference_pair_scores(
    m: QAConv, probe: torch.Tensor, gallery: torch.Tensor, pairs: list[tuple[int, int]]
) -> list[float]:
    """Score each listed pair on its own: the straightforward per-pair computation, fp32."""
    p_pos = probe.flatten(2).transpose(1, 2).float()  # (N, hw, d)
    g_pos = gallery.flatten(2).transpose(1, 2).float()  # (N, hw, d)
    w, bias = m.fc.weight[0], m.fc.bias[0]
    bn, lbn = m.bn, m.logit_bn
    scale1 = bn.weight[0] / torch.sqrt(bn.running_var[0] + bn.eps)
    scale2 = lbn.weight[0] / torch.sqrt(lbn.running_var[0] + lbn.eps)
    out = []
    for i, j in tqdm(pairs, desc="reference per-pair loop", leave=False, mininterval=1.0):
        sim = p_pos[i] @ g_pos[j].T  # (hw, hw)
        a, b = sim.max(dim=1).values, sim.max(dim=0).values  # (hw,), (hw,)
        a = (a - bn.running_mean[0]) * scale1 + bn.bias[0]
        b = (b - bn.running_mean[0]) * scale1 + bn.bias[0]
        logit = (w @ a + bias) + (w @ b + bias)
        out.append(float((logit - lbn.running_mean[0]) * scale2 + lbn.bias[0]))
    return out


def bench_qaconv(args: argparse.Namespace, device: torch.device) -> None:
    n, d, h, w = args.maps, args.dim, args.height, args.width
    chunk = args.chunk or (128 if device.type == "cuda" else 32)  # match_all's defaults
    print(
        f"\n(ii) QAConv all-pairs scoring: {n} x {n} maps of {h}x{w} positions, {d}-d, on {device} "
        f"(chunk {chunk}{', fp16 autocast' if device.type == 'cuda' else ', fp32'})"
    )
    gen = torch.Generator().manual_seed(args.seed)
    probe = F.normalize(torch.randn(n, d, h, w, generator=gen), dim=1).to(device)  # (N, d, h, w)
    gallery = F.normalize(torch.randn(n, d, h, w, generator=gen), dim=1).to(device)  # (N, d, h, w)
    m = make_matcher(d, h, w, args.seed, calib=(probe[:16], gallery[:16]))

    m.match_all(probe[:2], gallery[:2], chunk=chunk, progress=False)  # warm-up (CUDA init, kernels)
    sync(device)
    t0 = time.perf_counter()
    scores = m.match_all(probe, gallery, chunk=chunk)  # (N, N)
    sync(device)
    t_ours = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed)
    num_pairs = min(args.loop_pairs, n * n)
    flat = rng.choice(n * n, size=num_pairs, replace=False)
    pairs = [(int(f) // n, int(f) % n) for f in flat]
    reference_pair_scores(m, probe, gallery, pairs[:5])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    ref = reference_pair_scores(m, probe, gallery, pairs)
    sync(device)
    t_loop = time.perf_counter() - t0
    t_loop_all = t_loop / num_pairs * n * n

    ours_sub = scores[[i for i, _ in pairs], [j for _, j in pairs]].cpu().numpy()
    err = float(np.max(np.abs(ours_sub - np.asarray(ref))))
    spread = float(np.std(ref))
    tol = (0.05 if device.type == "cuda" else 1e-3) * max(spread, 1.0)
    print(f"  ours (match_all, all {n * n} pairs):       {t_ours:9.3f}s  ({n * n / t_ours:,.0f} pairs/s)")
    print(
        f"  per-pair loop ({num_pairs} random pairs):   {t_loop:9.3f}s  "
        f"-> extrapolated to {n * n} pairs: {t_loop_all:9.1f}s"
    )
    print(f"  speed-up (extrapolated loop / ours): {t_loop_all / t_ours:,.1f}x")
    print(f"  agreement on the {num_pairs} pairs: max |diff| = {err:.2e} (score std {spread:.2f}, tol {tol:.2e})")
    assert err <= tol, "QAConv scores disagree with the per-pair reference"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run: 1,000 classes, 100 x 100 maps")
    parser.add_argument("--only", choices=("all", "sampler", "qaconv"), default="all", help="which part to run")
    parser.add_argument("--num-classes", type=int, default=8000, help="classes for the sampler (8,000)")
    parser.add_argument("--images-per-class", type=int, default=16, help="mean images per class (16)")
    parser.add_argument("--batch-size", type=int, default=64, help="B (64)")
    parser.add_argument("--num-instances", type=int, default=2, help="K (2, QAConv 2.1)")
    parser.add_argument("--maps", type=int, default=1000, help="N for the N x N QAConv scoring (1,000)")
    parser.add_argument("--height", type=int, default=24, help="map height (24)")
    parser.add_argument("--width", type=int, default=8, help="map width (8)")
    parser.add_argument("--dim", type=int, default=128, help="map channels d (128)")
    parser.add_argument(
        "--chunk", type=int, default=0, help="match_all block size (0: its default, 128 on CUDA, 32 on CPU)"
    )
    parser.add_argument("--loop-pairs", type=int, default=2000, help="pairs timed in the per-pair loop (2,000)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device for (ii)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of ours and of the reference epoch, median reported (3); the reference graph runs once",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.num_classes, args.maps, args.loop_pairs = 1000, 100, 300
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device for (ii): {device}")
    if args.only in ("all", "sampler"):
        bench_sampler(args)
    if args.only in ("all", "qaconv"):
        bench_qaconv(args, device)


if __name__ == "__main__":
    main()
