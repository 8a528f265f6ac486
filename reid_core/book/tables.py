"""The book's one table format: results beside the papers' numbers, mean ± std of repeated runs.

Chapters: all (their results tables).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reid_core.book.paper_results import PaperResult

__all__ = ["paper_results_markdown", "format_mean_std"]


def paper_results_markdown(results: Sequence[PaperResult]) -> str:
    """The papers' own figures as a markdown table, the one format every chapter uses.

    R1 and mAP are printed with one decimal; "–" marks a figure the source does not report
    (or that could not be read, which the row's note says).
    """

    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f}"

    lines = ["| source | method | train | test | RK | R1 | mAP | note |", "|---|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r.source} | {r.method} | {r.train} | {r.test} | {'yes' if r.reranked else 'no'} | "
        f"{fmt(r.rank1)} | {fmt(r.mAP)} | {r.note} |"
        for r in results
    ]
    return "\n".join(lines)


def format_mean_std(values: Sequence[float], digits: int = 1) -> str:
    """``"mean ± std"`` of repeated runs (population std), the mean alone for one run, ``"–"`` if all NaN.

    NaN marks a quantity a run does not have (e.g. classifier accuracy for a triplet loss).
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or np.isnan(arr).all():
        return "–"
    if arr.size == 1:
        return f"{arr[0]:.{digits}f}"
    return f"{arr.mean():.{digits}f} ± {arr.std():.{digits}f}"
