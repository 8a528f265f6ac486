"""Results JSON per run, and the results page that tables them beside the papers' numbers.

Every papermill run of a notebook writes ``results/<notebook>/<run>.json`` with the fields of
:data:`RESULT_FIELDS` (the schema of the results JSON); ``python -m reid_core.book.results`` reads them all
and writes the book's results page.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reid_core.book.paper_results import PAPER_RESULTS, PaperResult

__all__ = ["RESULT_FIELDS", "write_result", "load_results", "render_results_page"]

RESULT_FIELDS = (
    "notebook",
    "method",
    "dataset",
    "profile",
    "rank1",
    "rank5",
    "rank10",
    "mAP",
    "train_seconds",
    "device",
    "params",
)
_RUN_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")

# notebook stem -> (chapter title, work key in PAPER_RESULTS)
CHAPTERS = {
    "01_reid_basics": ("Re-ID basics and the strong baseline", "basics"),
    "02_metric_learning": ("Metric learning: from siamese networks to AdaCos", "metric_learning"),
    "03_alignedreid": ("AlignedReID", "alignedreid"),
    "04_ensemblenet": ("EnsembleNet", "ensemblenet"),
    "05_graph_sampling": ("Graph Sampling and QAConv", "graph_sampling"),
    "06_your_own_images": ("Your own images (chapter 01's model through the reid command)", "own_images"),
}


def write_result(
    results_dir: str | os.PathLike[str],
    notebook: str,
    run: str,
    *,
    method: str,
    dataset: str,
    profile: str,
    rank1: float,
    mAP: float,
    rank5: float | None = None,
    rank10: float | None = None,
    train_seconds: float = 0.0,
    device: str = "cpu",
    params: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write one run's results JSON atomically to ``results_dir/notebook/run.json``.

    Metrics are percentages (0-100). ``extra`` keys (e.g. ``test_dataset``) are stored too.

    Returns:
        The path written.
    """
    if not _RUN_NAME.match(run):
        raise ValueError(f"run name {run!r} must match {_RUN_NAME.pattern} (it becomes a file name)")
    for name, value in (("rank1", rank1), ("mAP", mAP), ("rank5", rank5), ("rank10", rank10)):
        if value is not None and not (0.0 <= value <= 100.0 or math.isnan(value)):
            raise ValueError(f"{name}={value} must be a percentage in [0, 100]")
    record = {
        "notebook": notebook,
        "method": method,
        "dataset": dataset,
        "profile": profile,
        "rank1": rank1,
        "rank5": rank5,
        "rank10": rank10,
        "mAP": mAP,
        "train_seconds": float(train_seconds),
        "device": device,
        "params": dict(params or {}),
        **extra,
    }
    text = json.dumps(record, indent=2, sort_keys=False, default=_jsonable)
    out = Path(results_dir) / notebook / f"{run}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{run}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, out)
    return out


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def load_results(results_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read every ``results_dir/*/*.json``; a file missing a field raises naming the file."""
    records = []
    for path in sorted(Path(results_dir).glob("*/*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        missing = [f for f in RESULT_FIELDS if f not in record]
        if missing:
            raise ValueError(f"{path}: missing fields {missing}; expected {list(RESULT_FIELDS)}")
        record["_path"] = str(path)
        records.append(record)
    return records


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_results_page(records: list[dict[str, Any]], papers: Iterable[PaperResult] = PAPER_RESULTS) -> str:
    """The results page (MyST markdown): per chapter, our runs and then the papers' numbers."""
    papers = list(papers)
    out = [
        "# Results",
        "",
        "Every table below is generated from the results JSON files that the notebooks write "
        "(`results/<notebook>/<run>.json`), by `python -m reid_core.book.results`. Our runs come first; "
        "the papers' own numbers (kept in `reid_core/paper_results.py`) follow, with their sources. "
        "Runs on SynthReID are not comparable in absolute value with the papers' real datasets: "
        "compare the *differences* between methods.",
        "",
    ]
    for stem, (title, work) in CHAPTERS.items():
        ours = [r for r in records if r["notebook"] == stem]
        theirs = [p for p in papers if p.work == work]
        out += [f"## {title}", ""]
        if ours:
            rows = [
                [
                    r["method"],
                    r["dataset"] + (f" → {r['test_dataset']}" if r.get("test_dataset") else ""),
                    r["profile"],
                    _fmt(r["rank1"]),
                    _fmt(r["rank5"]),
                    _fmt(r["rank10"]),
                    _fmt(r["mAP"]),
                    _fmt(r["train_seconds"], 0),
                    str(r["device"]),
                ]
                for r in ours
            ]
            out += [
                "Our runs:",
                "",
                _table(["method", "dataset", "profile", "R1", "R5", "R10", "mAP", "train s", "device"], rows),
                "",
            ]
        else:
            out += [f"No runs yet: run `notebooks/{stem}.py` (see the README).", ""]
        if theirs:
            rows = [
                [
                    p.method,
                    f"{p.train} → {p.test}",
                    _fmt(p.rank1),
                    _fmt(p.mAP),
                    "yes" if p.reranked else "no",
                    p.source,
                    p.note,
                ]
                for p in theirs
            ]
            out += [
                "The papers' numbers:",
                "",
                _table(["method", "train → test", "R1", "mAP", "re-ranked", "source", "note"], rows),
                "",
            ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the book's results page from results/*/*.json.")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--out", default="book/generated/results.md")
    args = parser.parse_args(argv)
    page = render_results_page(load_results(args.results_dir))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
