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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reid_core.book.evidence import CLAIMS_FOLDER, Claim, claims_markdown, load_claims, mean_interval
from reid_core.book.paper_results import PAPER_RESULTS, PaperResult
from reid_core.files import atomic_write_text

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
    return atomic_write_text(Path(results_dir) / notebook / f"{run}.json", text + "\n")


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
        if path.parent.name == CLAIMS_FOLDER:  # the chapters' claims, read by load_claims
            continue
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


def _group_runs(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Records of one method on one dataset and profile (its seeds), in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        key = (r["method"], r["dataset"], r.get("test_dataset"), r["profile"], str(r["device"]))
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def _mean_cell(runs: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in runs if r.get(key) is not None and not math.isnan(r[key])]
    if not values:
        return "–"
    return str(mean_interval(values)) if len(values) > 1 else _fmt(float(values[0]))


def render_results_page(
    records: list[dict[str, Any]], papers: Iterable[PaperResult] = PAPER_RESULTS, claims: Iterable[Claim] = ()
) -> str:
    """The results page (MyST markdown): the book-wide claims table, then per chapter our runs
    (the seeds of one method gathered: mean [95% CI]) and the papers' numbers."""
    papers, claims = list(papers), list(claims)
    out = [
        "# Results",
        "",
        "Every table below is generated from the results JSON files that the notebooks write "
        "(`results/<notebook>/<run>.json`, and `results/claims/<notebook>.json` for the claims), by "
        "`python -m reid_core.book.results`. Our runs come first; the papers' own numbers (kept in "
        "`reid_core/book/paper_results.py`) follow, with their sources. "
        "Runs on SynthReID are not comparable in absolute value with the papers' real datasets: "
        "compare the *differences* between methods.",
        "",
        "## The book's reality check: every paper claim, measured",
        "",
    ]
    if claims:
        counts = {v: sum(c.verdict == v for c in claims) for v in ("shown", "not shown", "reversed")}
        out += [
            "Each row is one claim of a paper, measured in its chapter as the paired difference between the "
            "method and its control over the same seeds, with Student's t 95% interval; the verdict is read "
            "from the interval (**shown**: it lies on the paper's side of 0; **reversed**: on the other side; "
            "**not shown**: it holds 0). A claim not shown is a finding about this regime (small networks on "
            "SynthReID, a CPU budget), not a verdict on the paper.",
            "",
            f"Of {len(claims)} claims: {counts['shown']} shown, {counts['not shown']} not shown, "
            f"{counts['reversed']} reversed.",
            "",
            claims_markdown(claims, with_chapter=True),
            "",
        ]
    else:
        out += ["No claims measured yet: run the notebooks (see the README).", ""]
    for stem, (title, work) in CHAPTERS.items():
        ours = [r for r in records if r["notebook"] == stem]
        theirs = [p for p in papers if p.work == work]
        out += [f"## {title}", ""]
        if ours:
            rows = [
                [
                    runs[0]["method"],
                    runs[0]["dataset"] + (f" → {runs[0]['test_dataset']}" if runs[0].get("test_dataset") else ""),
                    runs[0]["profile"],
                    str(len(runs)),
                    _mean_cell(runs, "rank1"),
                    _mean_cell(runs, "rank5"),
                    _mean_cell(runs, "mAP"),
                    _fmt(sum(float(r["train_seconds"]) for r in runs) / len(runs), 0),
                    str(runs[0]["device"]),
                ]
                for runs in _group_runs(ours)
            ]
            out += [
                "Our runs (several seeds of one method: mean [95% CI]):",
                "",
                _table(["method", "dataset", "profile", "runs", "R1", "R5", "mAP", "train s (mean)", "device"], rows),
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
    page = render_results_page(load_results(args.results_dir), claims=load_claims(args.results_dir))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
