"""Shared fixtures. The notebook and book tests share one smoke-profile execution of every notebook."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from reid_core.data.decoded_store import CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))

# The tests (and the notebooks they run) keep decoded images in a store of their own, removed at the end,
# not in the user's ~/.cache/reid_core (reid_core.data.decoded_store).
if CACHE_ENV not in os.environ:
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="reid-core-test-cache-")
    atexit.register(shutil.rmtree, os.environ[CACHE_ENV], True)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Execute every notebook once in the smoke profile (papermill); returns the run folder.

    Layout: ``executed/*.ipynb``, ``results/<notebook>/*.json``, ``data/`` (SynthReID renders).
    """
    run = tmp_path_factory.mktemp("smoke")
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "run_notebooks.py"),
        "--profile",
        "smoke",
        "--out-dir",
        str(run / "executed"),
        "--data-root",
        str(run / "data"),
        "--results-dir",
        str(run / "results"),
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"smoke run of the notebooks failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return run
