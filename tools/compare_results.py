"""Are two runs of the book the same? Compare two results folders file by file, timings aside.

A run is repeatable when the same notebook with the same seed writes the same results JSON.
Wall-clock fields cannot repeat (``train_seconds``, any key ending in ``_seconds`` or named
``seconds``/``images_per_second``, at any depth); every other field must be equal, numbers
exactly. Files present in only one folder are listed (use ``--only-common`` to compare just the
runs both folders hold, e.g. a re-run of one seed).

Exit status 0 when they agree, 1 otherwise, with the differing files and fields printed.

Usage: python tools/compare_results.py results/ /tmp/rerun/results [--only-common]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TIMING_KEYS = ("seconds", "images_per_second")


def is_timing(key: str) -> bool:
    """A wall-clock field, which no re-run repeats."""
    return key in TIMING_KEYS or key.endswith("_seconds")


def without_timings(value: Any) -> Any:
    """``value`` with every timing field removed, at any depth."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not is_timing(k)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths (``key.sub[2]``) at which ``a`` and ``b`` differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'the first' if key in a else 'the second'}")
            else:
                out += differences(a[key], b[key], f"{where}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where or '.'}: {a!r} != {b!r}"]


def compare(first: Path, second: Path, only_common: bool = False) -> list[str]:
    """Every difference between the two folders' results JSON files (timings aside)."""
    files_a = {p.relative_to(first) for p in first.rglob("*.json")}
    files_b = {p.relative_to(second) for p in second.rglob("*.json")}
    report = []
    if not only_common:
        report += [f"{f}: only in {first}" for f in sorted(files_a - files_b)]
        report += [f"{f}: only in {second}" for f in sorted(files_b - files_a)]
    for name in sorted(files_a & files_b):
        a = without_timings(json.loads((first / name).read_text()))
        b = without_timings(json.loads((second / name).read_text()))
        report += [f"{name}: {d}" for d in differences(a, b)]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--only-common", action="store_true", help="ignore files only one folder holds")
    args = parser.parse_args(argv)
    for folder in (args.first, args.second):
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder of results JSON files")
    report = compare(args.first, args.second, args.only_common)
    common = len(
        {p.relative_to(args.first) for p in args.first.rglob("*.json")}
        & {p.relative_to(args.second) for p in args.second.rglob("*.json")}
    )
    if report:
        print("\n".join(report))
        print(f"{len(report)} differences over {common} common files")
        return 1
    print(f"identical (timings aside): {common} common files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
