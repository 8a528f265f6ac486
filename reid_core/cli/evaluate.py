"""``reid evaluate``: CMC, mAP, mINP and MAP@R of a model on a dataset, after the protocol checks.

Example:
    reid evaluate --model baseline.pt --data data/market1501 --dataset market1501
    reid evaluate --model baseline.pt --data my/testset --dataset folder   # query/ + gallery/ of named crops
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from reid_core.cli.common import (
    FOLDER_DATASET,
    CLIError,
    add_model_arguments,
    atomic_write,
    embed_images,
    load_from_args,
    read_labelled_sets,
)
from reid_core.data import DATASETS
from reid_core.evaluation import RankResult, check_protocol, compute_distance_matrix, evaluate_rank_detailed, re_ranking

__all__ = ["add_parser", "run", "rank_metrics"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="CMC / mAP / mINP / MAP@R on a dataset, with protocol checks",
        description="Evaluate the model on the query and gallery of --dataset at --data (Market-1501 rule: "
        "same-identity same-camera gallery images and junk are left out of each query's list). "
        "Protocol checks run first: a severe finding (a query image in the gallery, identities shared "
        "with training, junk queries, no query with a match) stops the run unless "
        "--allow-protocol-errors.",
    )
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, metavar="ROOT", help="the dataset folder")
    parser.add_argument(
        "--dataset",
        required=True,
        metavar="NAME",
        help=f"one of {sorted(DATASETS)}, or '{FOLDER_DATASET}': ROOT holds query/ and gallery/ "
        "(optionally train/) of images named '{pid}_c{camera}...'",
    )
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al. 2017)")
    parser.add_argument(
        "--allow-protocol-errors", action="store_true", help="report severe protocol findings but evaluate anyway"
    )
    parser.add_argument(
        "--no-byte-check", action="store_true", help="compare files by path only, not by content (faster on huge sets)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the metrics and findings to this JSON file")


def rank_metrics(result: RankResult) -> dict[str, float | int]:
    """Rank-1/5/10, mAP, mINP, MAP@R, R-precision (percent) and query counts of a RankResult."""
    cmc = result.cmc
    metrics: dict[str, float | int] = {f"rank{k}": float(cmc[k - 1]) * 100 for k in (1, 5, 10) if len(cmc) >= k}
    for name in ("mAP", "mINP", "map_at_r", "r_precision"):
        metrics[name] = float(getattr(result, name)) * 100
    metrics["valid_queries"] = int(result.num_valid_queries)
    metrics["queries_without_match"] = int(result.num_queries_without_match)
    return metrics


def run(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    sets = read_labelled_sets(args.dataset, args.data)
    print(
        f"{sets.name}: {len(sets.query)} queries, {len(sets.gallery)} gallery images, {len(sets.train)} training images"
    )
    q_paths = [p for p, _, _ in sets.query]
    g_paths = [p for p, _, _ in sets.gallery]
    q_pids, q_cams = np.array([pid for _, pid, _ in sets.query]), np.array([c for _, _, c in sets.query])
    g_pids, g_cams = np.array([pid for _, pid, _ in sets.gallery]), np.array([c for _, _, c in sets.gallery])
    metric = loaded.card.metric
    qf = embed_images(loaded, q_paths, args.batch_size, desc="query")  # (Q, D)
    gf = embed_images(loaded, g_paths, args.batch_size, desc="gallery")  # (G, D)
    dist = compute_distance_matrix(qf, gf, metric=metric)  # (Q, G)
    if args.rerank:
        qq = compute_distance_matrix(qf, qf, metric=metric)  # (Q, Q)
        gg = compute_distance_matrix(gf, gf, metric=metric)  # (G, G)
        dist = torch.as_tensor(re_ranking(dist, qq, gg))  # (Q, G)

    report = check_protocol(
        q_pids,
        g_pids,
        q_cams,
        g_cams,
        q_paths=q_paths,
        g_paths=g_paths,
        train_paths=[p for p, _, _ in sets.train] or None,
        train_identities=sets.train_identities,
        distmat=dist,
        compare_bytes=not args.no_byte_check,
    )
    print(report.format())
    record: dict[str, object] = {
        "model": str(args.model),
        "dataset": sets.name,
        "metric": metric,
        "rerank": bool(args.rerank),
        "protocol": report.to_dict(),
    }
    if report.severe and not args.allow_protocol_errors:
        if args.json:
            atomic_write(args.json, lambda h: h.write(json.dumps(record, indent=1).encode()))
        raise CLIError(
            f"{len(report.severe)} severe protocol finding(s) (above); fix the set-up, or pass "
            "--allow-protocol-errors to evaluate anyway"
        )
    try:
        result = evaluate_rank_detailed(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    except ValueError as err:
        raise CLIError(f"cannot evaluate: {err}") from err
    metrics = rank_metrics(result)
    record["metrics"] = metrics
    print(_format_metrics(metrics))
    if args.json:
        atomic_write(args.json, lambda h: h.write(json.dumps(record, indent=1).encode()))
        print(f"wrote {args.json}")
    return 0


def _format_metrics(metrics: dict[str, float | int]) -> str:
    names = {
        "rank1": "R1",
        "rank5": "R5",
        "rank10": "R10",
        "mAP": "mAP",
        "mINP": "mINP",
        "map_at_r": "MAP@R",
        "r_precision": "R-precision",
    }
    parts = [f"{label} {metrics[key]:.1f}" for key, label in names.items() if key in metrics]
    return (
        f"metrics: {'  '.join(parts)}  ({metrics['valid_queries']} queries with a match, "
        f"{metrics['queries_without_match']} without)"
    )
