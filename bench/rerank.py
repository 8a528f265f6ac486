"""Benchmark k-reciprocal re-ranking at Market-1501 size against the common numpy way.

Issue 5 (bench/rerank.py) and issue 8 (the memory plot). On Gaussian-cluster features shaped
like Market-1501's test set (3,368 queries, 15,913 gallery images), three methods run, each
in its own spawned process so that their peak memories do not mix:

* ``numpy baseline``: bench/_rerank_reference.py, the common implementation's steps with
  dense (Q+G)^2 matrices (the issue quotes ~80 s and 8.6 GB for it on this machine);
* ``re_ranking``: reid_core's chunked, sparse version, on the same three distance matrices;
* ``re_ranking_from_features``: from the features, without any (Q+G)^2 or G^2 matrix; it
  computes its own distances, so it is compared with (distance matrices + baseline).

It prints seconds, peak resident memory (ru_maxrss of the child, inputs included), the
largest difference between the outputs, a ratio line per method and "met / not met" for the
targets (>= 10x faster, < 4 GB peak). ``--figure PNG`` also sweeps gallery sizes and plots
peak memory against gallery size (the dense methods only where they fit).

Timings on a shared machine are noisy: run the full size once, with nothing else heavy.

Examples:
    python bench/rerank.py --quick
    python bench/rerank.py                       # Market-1501 size, 2048-d (baseline: ~9 GB)
    python bench/rerank.py --figure book/figures/rerank_memory.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _gaussian_clusters import MARKET, gaussian_cluster_features  # noqa: E402
from _measure import current_rss_bytes, run_isolated  # noqa: E402

GB = 1e9
SPEED_TARGET = 10.0
MEMORY_TARGET_GB = 4.0


# ----------------------------------------------------------------------------- child cases
def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _features(num_query: int, num_gallery: int, dim: int, seed: int) -> Any:
    num_ids = max(10, round(MARKET[2] * (num_query + num_gallery) / (MARKET[0] + MARKET[1])))
    return gaussian_cluster_features(num_query, num_gallery, dim, num_ids=num_ids, num_cameras=MARKET[3], seed=seed)


def _distance_blocks(feats: Any) -> tuple[Any, Any, Any, float]:
    from reid_core.evaluation.distance import compute_distance_matrix

    start = time.perf_counter()
    q_g = compute_distance_matrix(feats.qf, feats.gf)
    q_q = compute_distance_matrix(feats.qf, feats.qf)
    g_g = compute_distance_matrix(feats.gf, feats.gf)
    return q_g, q_q, g_g, time.perf_counter() - start


def case_numpy_baseline(
    num_query: int, num_gallery: int, dim: int, seed: int, out_path: str, threads: int
) -> dict[str, Any]:
    """The common implementation's steps on numpy distance matrices."""
    from _rerank_reference import numpy_re_ranking

    _set_threads(threads)
    q_g, q_q, g_g, dist_seconds = _distance_blocks(_features(num_query, num_gallery, dim, seed))
    q_g, q_q, g_g = q_g.numpy(), q_q.numpy(), g_g.numpy()
    inputs = current_rss_bytes()
    start = time.perf_counter()
    result = numpy_re_ranking(q_g, q_q, g_g, progress=True)
    seconds = time.perf_counter() - start
    np.save(out_path, result)
    return {"seconds": seconds, "distance_seconds": dist_seconds, "inputs_bytes": inputs}


def case_re_ranking(
    num_query: int, num_gallery: int, dim: int, seed: int, out_path: str, threads: int
) -> dict[str, Any]:
    """reid_core.evaluation.rerank.re_ranking on the same distance matrices (torch)."""
    from reid_core.evaluation.rerank.k_reciprocal import re_ranking

    _set_threads(threads)
    q_g, q_q, g_g, dist_seconds = _distance_blocks(_features(num_query, num_gallery, dim, seed))
    inputs = current_rss_bytes()
    start = time.perf_counter()
    result = re_ranking(q_g, q_q, g_g, progress=True)
    seconds = time.perf_counter() - start
    np.save(out_path, result.numpy())
    return {"seconds": seconds, "distance_seconds": dist_seconds, "inputs_bytes": inputs}


def case_from_features(
    num_query: int, num_gallery: int, dim: int, seed: int, out_path: str, threads: int
) -> dict[str, Any]:
    """reid_core.evaluation.rerank.re_ranking_from_features on the features."""
    from reid_core.evaluation.rerank.k_reciprocal import re_ranking_from_features

    _set_threads(threads)
    feats = _features(num_query, num_gallery, dim, seed)
    inputs = current_rss_bytes()
    start = time.perf_counter()
    result = re_ranking_from_features(feats.qf, feats.gf, progress=True)
    seconds = time.perf_counter() - start
    if out_path:
        np.save(out_path, result.numpy())
    return {"seconds": seconds, "inputs_bytes": inputs}


CASES = {
    "numpy baseline": case_numpy_baseline,
    "re_ranking": case_re_ranking,
    "re_ranking_from_features": case_from_features,
}


# ----------------------------------------------------------------------------- parent
def _compare(path_a: str, path_b: str) -> tuple[float, float]:
    """Largest absolute difference, and the share of queries with any difference > 1e-5."""
    a, b = np.load(path_a, mmap_mode="r"), np.load(path_b, mmap_mode="r")
    worst, rows = 0.0, 0
    for start in range(0, a.shape[0], 512):
        diff = np.abs(a[start : start + 512] - b[start : start + 512])
        worst = max(worst, float(diff.max()))
        rows += int((diff > 1e-5).any(axis=1).sum())
    return worst, rows / a.shape[0]


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def compare_at(
    num_query: int, num_gallery: int, dim: int, seed: int, methods: list[str], threads: int
) -> dict[str, dict[str, Any]]:
    """Run the listed methods at one size, each in its own process; print and return results."""
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rerank_bench_") as tmp:
        paths = {name: os.path.join(tmp, f"{i}.npy") for i, name in enumerate(methods)}
        for name in methods:
            print(f"  running {name} ({num_query} x {num_gallery}, {dim}-d) ...", flush=True)
            res = run_isolated(
                CASES[name],
                num_query=num_query,
                num_gallery=num_gallery,
                dim=dim,
                seed=seed,
                out_path=paths[name],
                threads=threads,
            )
            if "error" in res:
                print(f"    failed: {res['error']}")
            else:
                extra = f", distance matrices {res['distance_seconds']:.1f} s" if "distance_seconds" in res else ""
                print(
                    f"    {res['seconds']:.2f} s{extra}; peak {res['peak_bytes'] / GB:.2f} GB "
                    f"(inputs and runtime {res['inputs_bytes'] / GB:.2f} GB)",
                    flush=True,
                )
            results[name] = res
        ok = [m for m in methods if "error" not in results[m]]
        for a, b in (("re_ranking", "numpy baseline"), ("re_ranking_from_features", "re_ranking")):
            if a in ok and b in ok:
                worst, share = _compare(paths[a], paths[b])
                results[a][f"max_diff_vs_{b}"] = worst
                results[a][f"queries_differing_vs_{b}"] = share
                print(f"  {a} vs {b}: max |diff| {worst:.2e}, queries with a difference > 1e-5: {100 * share:.2f}%")
    return results


def report(results: dict[str, dict[str, Any]]) -> None:
    """Ratio lines and targets for the Market-size comparison."""
    base = results.get("numpy baseline", {})
    print("\nTargets (issue 5): >= 10x faster than the numpy baseline, < 4 GB peak")
    for name in ("re_ranking", "re_ranking_from_features"):
        res = results.get(name, {})
        if "seconds" not in res:
            print(f"  {name}: no result")
            continue
        peak = res["peak_bytes"] / GB
        if "seconds" in base:
            if name == "re_ranking":
                ratio, what = base["seconds"] / res["seconds"], "numpy baseline on the same distance matrices"
            else:
                ratio = (base["seconds"] + base["distance_seconds"]) / res["seconds"]
                what = "distance matrices + numpy baseline, from the same features"
            print(f"  {name}: {ratio:.1f}x faster than {what} -> speed target {_verdict(ratio >= SPEED_TARGET)}")
        print(f"  {name}: peak {peak:.2f} GB -> memory target {_verdict(peak < MEMORY_TARGET_GB)}")
    if "peak_bytes" in base:
        print(f"  (numpy baseline: {base['seconds']:.1f} s, peak {base['peak_bytes'] / GB:.2f} GB)")


def sweep(args: argparse.Namespace, market: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Peak memory against gallery size for the figure.

    At the main run's gallery size its numbers are reused instead of running the baseline
    again: the peaks of the numpy baseline and of ``re_ranking`` come from the distance
    matrices, whatever the feature dimension.
    """
    points: dict[str, list[tuple[int, float, float]]] = {name: [] for name in CASES}
    for num_gallery in args.figure_sizes:
        methods = ["re_ranking_from_features"]
        if num_gallery <= args.dense_max_gallery:
            methods.insert(0, "re_ranking")
        if num_gallery <= args.baseline_max_gallery:
            methods.insert(0, "numpy baseline")
        res: dict[str, dict[str, Any]] = {}
        if num_gallery == args.gallery and market:
            res = {name: market[name] for name in ("numpy baseline", "re_ranking") if name in market}
            if args.figure_dim == args.dim and "re_ranking_from_features" in market:
                res["re_ranking_from_features"] = market["re_ranking_from_features"]
            methods = list(res) + ([] if "re_ranking_from_features" in res else ["re_ranking_from_features"])
        todo = [m for m in methods if m not in res]
        if todo:
            res.update(compare_at(args.queries, num_gallery, args.figure_dim, args.seed, todo, args.threads))
        for name in methods:
            if name in res and "peak_bytes" in res[name]:
                points[name].append((num_gallery, res[name]["peak_bytes"] / GB, res[name]["seconds"]))
    return {
        "queries": args.queries,
        "dim": args.figure_dim,
        "main_dim": args.dim,
        "main_gallery": args.gallery,
        "points": points,
    }


def plot(data: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {
        "numpy baseline": ("o-", "common numpy implementation"),
        "re_ranking": ("s-", "re_ranking (distance matrices in)"),
        "re_ranking_from_features": ("^-", "re_ranking_from_features"),
    }
    for name, pts in data["points"].items():
        if pts:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, styles[name][0], label=styles[name][1])
    sizes = np.array(sorted({p[0] for pts in data["points"].values() for p in pts}), dtype=float)
    ax.plot(sizes, (data["queries"] + sizes) ** 2 * 4 / GB, "k:", label="one (Q+G)$^2$ float32 matrix")
    ax.axhline(24, color="grey", lw=0.8, ls="--")
    ax.text(sizes[0], 24 * 1.08, "machine RAM (24 GB)", color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s / 1000:g}k" for s in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    label = f"gallery size G (Q = {data['queries']} queries; {data['dim']}-d features)"
    if data.get("main_dim", data["dim"]) != data["dim"]:
        label += (
            f"\nnumpy baseline and re_ranking at G = {data['main_gallery']:,} from the {data['main_dim']}-d main run"
        )
    ax.set_xlabel(label, fontsize=9)
    ax.set_ylabel("peak resident memory (GB)")
    ax.set_title("k-reciprocal re-ranking: memory against gallery size")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"figure written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=MARKET[0], help="Q (default: Market-1501's 3,368)")
    parser.add_argument("--gallery", type=int, default=MARKET[1], help="G (default: Market-1501's 15,913)")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension (default 2048)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a small run: 500 x 2,500, 256-d")
    parser.add_argument(
        "--skip-baseline", action="store_true", help="do not run the numpy baseline (it needs ~9 GB at full size)"
    )
    parser.add_argument(
        "--figure", metavar="PNG", help="also sweep gallery sizes and plot peak memory to PNG (+ .json)"
    )
    parser.add_argument("--figure-sizes", type=int, nargs="+", default=[2000, 4000, 8000, 15913, 32000, 64000])
    parser.add_argument(
        "--figure-dim",
        type=int,
        default=512,
        help="feature dimension of the sweep (default 512: memory hardly depends on it, time does)",
    )
    parser.add_argument(
        "--dense-max-gallery",
        type=int,
        default=15913,
        help="largest G for re_ranking in the sweep (its G x G input must fit)",
    )
    parser.add_argument(
        "--baseline-max-gallery",
        type=int,
        default=8000,
        help="largest G for the numpy baseline in the sweep (besides the main run)",
    )
    parser.add_argument("--json", metavar="PATH", help="write all measured figures to PATH")
    parser.add_argument(
        "--from-json",
        metavar="JSON",
        help="only redraw --figure from the .json a previous --figure run wrote (no measurement)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in every child (default 1: the numpy baseline is single-threaded, and on a "
        "machine shared by several jobs OpenMP waits make 2 threads slower than 1)",
    )
    args = parser.parse_args()
    if args.quick:
        args.queries, args.gallery, args.dim = 500, 2500, 256
        args.figure_sizes = [1000, 2500, 5000]
        args.dense_max_gallery, args.baseline_max_gallery = 2500, 2500
    if args.quick:
        args.figure_dim = args.dim
    if args.from_json:
        if not args.figure:
            parser.error("--from-json needs --figure PNG")
        with open(args.from_json) as handle:
            saved = json.load(handle)
        saved["sweep"].setdefault("main_gallery", saved["market"]["gallery"])
        plot(saved["sweep"], args.figure)
        return

    import torch

    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} torch thread(s) per "
        "run; timings are noisy on a shared machine"
    )
    print(f"Market-1501-shaped run: {args.queries} queries x {args.gallery} gallery, {args.dim}-d Gaussian clusters")
    methods = list(CASES) if not args.skip_baseline else ["re_ranking", "re_ranking_from_features"]
    market = compare_at(args.queries, args.gallery, args.dim, args.seed, methods, args.threads)
    report(market)
    output: dict[str, Any] = {
        "market": {"queries": args.queries, "gallery": args.gallery, "dim": args.dim, "results": market}
    }
    if args.figure:
        print("\nMemory sweep for the figure")
        output["sweep"] = sweep(args, market)
        plot(output["sweep"], args.figure)
        with open(os.path.splitext(args.figure)[0] + ".json", "w") as handle:
            json.dump(output, handle, indent=1, default=str)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(output, handle, indent=1, default=str)


if __name__ == "__main__":
    main()
