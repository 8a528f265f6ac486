"""``reid rank``: rank a gallery folder for every image of a query folder; an HTML page and a CSV/JSON.

Example:
    reid rank --model baseline.pt --query my/query --gallery my/gallery --out ranked --top 10
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import torch

from reid_core.cli.common import (
    CLIError,
    add_model_arguments,
    atomic_write,
    embed_images,
    labels_from_names,
    list_images,
    load_from_args,
)
from reid_core.cli.rank_page import RankedItem, RankedQuery, write_rank_page
from reid_core.evaluation import compute_distance_matrix, re_ranking
from reid_core.evaluation.calibration import same_person_threshold

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rank",
        help="rank a gallery for each query image: HTML page + CSV/JSON",
        description="Rank every image of --gallery for each image of --query and write OUT/index.html (thumbnails "
        "in OUT/thumbs/), OUT/topk.csv and OUT/topk.json. File names of the form "
        "'{pid}_c{camera}...' give green (same identity) and red borders. If the model was "
        "calibrated (reid calibrate), each pair is also marked same/different person.",
    )
    add_model_arguments(parser)
    parser.add_argument("--query", required=True, metavar="DIR", help="folder of query images (searched recursively)")
    parser.add_argument("--gallery", required=True, metavar="DIR", help="folder of gallery images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--top", type=int, default=10, help="gallery images shown per query (default 10)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al. 2017)")
    parser.add_argument(
        "--fpr",
        type=float,
        default=None,
        help="which calibrated false-positive rate decides same/different (default: the largest stored)",
    )


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise CLIError(f"--top must be >= 1, got {args.top}")
    loaded = load_from_args(args)
    card = loaded.card
    q_root, g_root = Path(args.query), Path(args.gallery)
    q_paths, g_paths = list_images(q_root, "--query"), list_images(g_root, "--gallery")
    threshold = None
    if card.calibration is not None:
        if card.calibration["metric"] != card.metric:
            raise CLIError(
                f"{args.model}: calibrated for {card.calibration['metric']} distances, but the model "
                f"uses {card.metric}; run reid calibrate again"
            )
        try:
            threshold = same_person_threshold(card.calibration, args.fpr)
        except ValueError as err:
            raise CLIError(str(err)) from err
    elif args.fpr is not None:
        raise CLIError(f"--fpr {args.fpr}: {args.model} holds no calibration; run reid calibrate first")

    qf = embed_images(loaded, q_paths, args.batch_size, desc="query")  # (Q, D)
    gf = embed_images(loaded, g_paths, args.batch_size, desc="gallery")  # (G, D)
    dist = compute_distance_matrix(qf, gf, metric=card.metric)  # (Q, G)
    ranking = dist
    if args.rerank:
        qq = compute_distance_matrix(qf, qf, metric=card.metric)  # (Q, Q)
        gg = compute_distance_matrix(gf, gf, metric=card.metric)  # (G, G)
        ranking = torch.as_tensor(re_ranking(dist, qq, gg))  # (Q, G)
    top = min(args.top, len(g_paths))
    order = torch.sort(ranking, dim=1, stable=True).indices[:, :top]  # (Q, top)

    queries, records, labelled = _ranked_lists(
        q_root, g_root, q_paths, g_paths, dist, ranking, order, threshold, args.rerank
    )
    summary = [
        f"model: {args.model} ({card.architecture}, {card.model_kwargs}, trained on "
        f"{card.training.get('dataset', 'unknown data')})",
        f"{len(q_paths)} queries from {q_root}, {len(g_paths)} gallery images from {g_root}; top {top} shown; "
        f"{card.metric} distance" + (", k-reciprocal re-ranking (d = re-ranked distance)" if args.rerank else ""),
    ]
    if not labelled:
        summary.append("identities: not all file names are '{pid}_c{camera}...', so borders are grey")
    note = None
    if threshold:
        note = (
            f"same / different person: {card.metric} distance < {threshold[1]:.4f}, the threshold calibrated at "
            f"false-positive rate {threshold[0]:g}" + (" (on the distance before re-ranking)" if args.rerank else "")
        )
    out = Path(args.out)
    page = write_rank_page(out, queries, summary, note)
    _write_tables(out, records, args, card.metric, threshold)
    print(f"wrote {page} ({len(queries)} queries x top {top}; thumbnails in {out / 'thumbs'})")
    print(f"wrote {out / 'topk.csv'} and {out / 'topk.json'}")
    if labelled:
        hits = sum(q.ranked[0].match for q in queries)
        print(f"rank-1 same identity (from file names): {hits} of {len(queries)} queries")
    return 0


def _ranked_lists(
    q_root: Path,
    g_root: Path,
    q_paths: list[Path],
    g_paths: list[Path],
    dist: torch.Tensor,
    ranking: torch.Tensor,
    order: torch.Tensor,
    threshold: tuple[float, float] | None,
    rerank: bool,
) -> tuple[list[RankedQuery], list[dict], bool]:
    """The page's lists and the table records, from (Q, G) distances and the (Q, top) ranking order.

    Returns:
        ``(queries, records, labelled)``; ``labelled``: every file name gave an identity.
    """
    q_labels, g_labels = labels_from_names(q_paths), labels_from_names(g_paths)
    labelled = q_labels is not None and g_labels is not None
    queries, records = [], []
    for qi, q_path in enumerate(q_paths):
        q_pid = int(q_labels[0][qi]) if labelled else None
        ranked, rows = [], []
        for gi in order[qi].tolist():
            g_pid = int(g_labels[0][gi]) if labelled else None
            d = float(dist[qi, gi])
            item = RankedItem(
                path=g_paths[gi],
                name=g_paths[gi].relative_to(g_root).as_posix(),
                distance=float(ranking[qi, gi]),
                pid=g_pid,
                match=(q_pid == g_pid) if labelled else None,
                same_person=(d < threshold[1]) if threshold else None,
            )
            ranked.append(item)
            row: dict[str, object] = {"gallery": item.name, "distance": d}
            if rerank:
                row["reranked_distance"] = item.distance
            if threshold:
                row["same_person"] = item.same_person
            if labelled:
                row.update(gallery_pid=g_pid, match=item.match)
            rows.append(row)
        q_name = q_path.relative_to(q_root).as_posix()
        queries.append(RankedQuery(path=q_path, name=q_name, pid=q_pid, ranked=ranked))
        records.append({"query": q_name, **({"query_pid": q_pid} if labelled else {}), "ranked": rows})
    return queries, records, labelled


def _write_tables(
    out: Path, records: list[dict], args: argparse.Namespace, metric: str, threshold: tuple[float, float] | None
) -> None:
    """``topk.json`` (nested) and ``topk.csv`` (one row per query and rank)."""
    meta = {
        "model": str(args.model),
        "metric": metric,
        "rerank": bool(args.rerank),
        "top": args.top,
        "threshold": {
            "target_fpr": threshold[0],
            "threshold": threshold[1],
            "rule": "same person iff distance < threshold",
        }
        if threshold
        else None,
    }
    text = json.dumps({**meta, "queries": records}, indent=1)
    atomic_write(out / "topk.json", lambda h: h.write(text.encode()))
    fields = ["query", "rank", "gallery", "distance"]
    fields += ["reranked_distance"] if args.rerank else []
    fields += ["same_person"] if threshold else []
    fields += ["query_pid", "gallery_pid", "match"] if records and "query_pid" in records[0] else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in records:
        for rank, row in enumerate(record["ranked"], start=1):
            extra = {"query_pid": record["query_pid"]} if "query_pid" in record else {}
            writer.writerow({"query": record["query"], "rank": rank, **extra, **row})
    atomic_write(out / "topk.csv", lambda h: h.write(buffer.getvalue().encode()))
