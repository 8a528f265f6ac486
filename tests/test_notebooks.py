"""Every notebook runs end to end in the smoke profile, and nbval re-runs it.

The session fixture executes each notebook with papermill (parameters injected into the cell
tagged ``parameters``); then nbval executes the executed notebook again in lax mode and
compares the outputs of the cells marked ``# NBVAL_CHECK_OUTPUT`` (deterministic ones: dataset
statistics, worked examples, parameter counts) with the first run's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from conftest import NOTEBOOKS, ROOT

pytestmark = pytest.mark.notebook


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_format(source: Path) -> None:
    """Percent format, first code cell tagged ``parameters`` with the shared parameter names."""
    nb = jupytext.read(source, fmt="py:percent")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{source} has no code cell"
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []), f"{source}: first code cell must be tagged 'parameters'"
    for name in ("profile", "data_root", "results_dir"):
        assert f"{name} =" in first.source, f"{source}: parameters cell lacks {name}"
    checked = [c for c in code if "NBVAL_CHECK_OUTPUT" in c.source]
    assert checked, f"{source}: mark at least one deterministic cell with # NBVAL_CHECK_OUTPUT"
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2, f"{source}: explain each step in prose"


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_smoke_nbval(source: Path, smoke_run: Path) -> None:
    executed = smoke_run / "executed" / f"{source.stem}.ipynb"
    assert executed.is_file(), f"papermill did not write {executed}"
    nb = nbformat.read(executed, as_version=4)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors, f"{executed} holds errors: {errors[:1]}"
    records = list((smoke_run / "results" / source.stem).glob("*.json"))
    assert records, f"{source.stem} wrote no results JSON under {smoke_run / 'results'}"
    for path in records:
        record = json.loads(path.read_text())
        assert record["profile"] == "smoke" and record["notebook"] == source.stem, path
        assert 0.0 <= record["rank1"] <= 100.0 and 0.0 <= record["mAP"] <= 100.0, path
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(smoke_run),
            "-o",
            "testpaths=",
            str(executed),
        ],
        cwd=ROOT / "notebooks",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"nbval failed for {executed}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
