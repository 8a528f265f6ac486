"""tools/compare_results.py: timings aside, any other difference is reported."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "compare_results", Path(__file__).resolve().parents[1] / "tools" / "compare_results.py"
)
compare_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_results)


def write(folder: Path, name: str, record: dict) -> None:
    (folder / "nb").mkdir(parents=True, exist_ok=True)
    (folder / "nb" / name).write_text(json.dumps(record))


def test_timings_are_ignored_everything_else_is_not(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    base = {
        "rank1": 50.0,
        "train_seconds": 3.0,
        "pretrained": {"train_seconds": 9, "sha256": "x"},
        "h": [{"seconds": 1}],
    }
    write(a, "r.json", base)
    write(b, "r.json", {**base, "train_seconds": 4.0, "pretrained": {"train_seconds": 10, "sha256": "x"}})
    assert compare_results.compare(a, b) == []
    write(b, "r.json", {**base, "rank1": 50.000001})
    assert compare_results.compare(a, b) == ["nb/r.json: .rank1: 50.0 != 50.000001"]
    write(b, "extra.json", base)
    assert "nb/extra.json: only in" in compare_results.compare(a, b)[0]
    assert compare_results.compare(a, b, only_common=True) == ["nb/r.json: .rank1: 50.0 != 50.000001"]
    assert compare_results.main([str(a), str(b)]) == 1
