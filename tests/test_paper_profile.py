"""Every notebook's ``paper`` profile, end to end on the CPU, on tiny datasets in the real layouts.

The ``paper`` profile is the path every reproducer takes: a real dataset read from ``data_root``
(not preloaded), checkpoints beside ``results_dir``, a results JSON per run. Here it runs with the
paper's own code path and only the scale turned down through ``overrides`` (no ImageNet weights,
small inputs, one or two iterations). Between them the runs read all four layouts (Market-1501,
DukeMTMC-reID, CUHK03-NP, MSMT17 lists; chapter 5 tests on two of them across domains), through
both routes of the README: ``tools/run_notebooks.py`` and the jupytext | papermill pipe, each
started in a scratch folder with a *relative* ``data_root`` and ``results_dir``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from tiny_layouts import make_all

from reid_core.engine import FINGERPRINT_KEY, load_checkpoint

pytestmark = pytest.mark.notebook

SMALL = {"pretrained": False}  # every notebook: no download
CASES = {  # notebook -> (training dataset, overrides of the paper profile, the results' "dataset" and "test_dataset"s)
    "01_reid_basics": (
        "market1501",
        {
            **SMALL,
            "backbone": "resnet10",
            "height": 32,
            "width": 16,
            "epochs": 2,
            "batch_size": 8,
            "num_instances": 2,
            "warmup_epochs": 0,
            "milestones": [],
            "max_iters": 2,
        },
        "market1501",
        set(),
    ),
    "02_metric_learning": (
        "dukemtmcreid",
        {
            "imagenet": False,  # chapter 02 names the ImageNet switch `imagenet`
            "toy_width": 8,
            "toy_epochs": 1,
            "toy_max_iters": 1,
            "unseen_dim": 8,
            "unseen_epochs": 1,
            "backbone": "resnet10",
            "embedding_dim": 16,
            "height": 32,
            "width": 16,
            "batch_size": 8,
            "num_instances": 2,
            "epochs": 1,
            "max_iters": 1,
        },
        "dukemtmcreid",
        set(),
    ),
    "03_alignedreid": (
        "cuhk03",
        {
            **SMALL,
            "backbone": "resnet10",
            "height": 32,
            "width": 16,
            "ids_per_batch": 4,
            "num_instances": 2,
            "epochs": 1,
            "max_iters_per_epoch": 1,
            "local_dim": 16,
        },
        "cuhk03_detected",
        set(),
    ),
    "04_ensemblenet": (
        "msmt17",
        {
            **SMALL,
            "backbone": "resnet18",
            "height": 64,
            "width": 32,
            "reduction_dim": 32,
            "ids_per_batch": 4,
            "num_instances": 2,
            "epochs": 1,
            "max_iters_per_epoch": 1,
            "activation_images": 2,
        },
        "msmt17",
        set(),
    ),
    "05_graph_sampling": (
        "market1501",
        {
            **SMALL,
            "backbone": "resnet10",
            "height": 64,
            "width": 32,
            "neck_dim": 16,
            "batch_size": 8,
            "num_instances": 2,
            "epochs": 1,
            "max_iters_per_epoch": 1,
            "timing_classes": [4, 8],
            "hardness_batches": 2,
        },
        "market1501",
        {"market1501", "msmt17", "cuhk03"},
    ),  # trained on one, tested on three
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``tiny/`` (every layout); the runs start here and name it relatively."""
    folder = tmp_path_factory.mktemp("paper")
    make_all(folder / "tiny")
    return folder


def _environment() -> dict[str, str]:
    """This checkout first on the path, also for the kernel papermill starts."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def run_tool(
    folder: Path, notebook: str, dataset: str, overrides: dict, results: str = "results", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``tools/run_notebooks.py --profile paper`` started in ``folder`` with relative paths."""
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "run_notebooks.py"),
        "--profile",
        "paper",
        "--only",
        notebook,
        "--out-dir",
        "executed",
        "--results-dir",
        results,
        "-p",
        "data_root",
        "tiny",
        "-p",
        "dataset",
        dataset,
        "-p",
        "device",
        "cpu",
        "-p",
        "overrides",
        json.dumps(overrides),
        *extra,
    ]
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=_environment())


def check_run(
    folder: Path, notebook: str, dataset: str, test_datasets: set[str], overrides: dict, results: str
) -> None:
    """The executed notebook holds no error; results JSON and checkpoints are where the README says."""
    nb = nbformat.read(folder / "executed" / f"{notebook}.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    records = [json.loads(p.read_text()) for p in sorted((folder / results / notebook).glob("*.json"))]
    assert records, f"no results JSON under {folder / results / notebook}"
    records = [r for r in records if not r["dataset"].startswith("sklearn digits")]  # chapter 02's digits toy
    for record in records:
        assert record["profile"] == "paper" and record["notebook"] == notebook
        assert record["dataset"] == dataset, record
        assert 0.0 <= record["rank1"] <= 100.0 and 0.0 <= record["mAP"] <= 100.0
    assert {r["test_dataset"] for r in records if "test_dataset" in r} == test_datasets
    checkpoints = sorted((folder / "checkpoints" / notebook).glob("**/last.pt"))  # beside results_dir
    assert checkpoints, f"no checkpoint under {folder / 'checkpoints' / notebook}"
    epochs = overrides["epochs"]
    for path in checkpoints:
        state = load_checkpoint(path)
        assert state["epoch"] == epochs and state[FINGERPRINT_KEY]["recipe.epochs"] == epochs
        assert not [p for p in path.parent.iterdir() if p.name != "last.pt"], "a temporary file was left"


@pytest.mark.parametrize("notebook", [n for n in CASES if n != "01_reid_basics"])
def test_paper_profile_through_run_notebooks(scratch: Path, notebook: str) -> None:
    dataset, overrides, record_dataset, test_datasets = CASES[notebook]
    result = run_tool(scratch, notebook, dataset, overrides)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    check_run(scratch, notebook, record_dataset, test_datasets, overrides, "results")
    assert not (ROOT / "notebooks" / "tiny").exists(), "a relative data_root was read against notebooks/"


def test_paper_profile_through_the_papermill_pipe_then_a_changed_recipe_stops(scratch: Path) -> None:
    """The README's pipe, then the same run with another learning rate: it must not resume the first."""
    notebook = "01_reid_basics"
    dataset, overrides, record_dataset, test_datasets = CASES[notebook]
    bin_dir = Path(sys.executable).parent
    pipe = (
        f"{bin_dir / 'jupytext'} --to ipynb -o - {ROOT / 'notebooks' / notebook}.py | "
        f"{bin_dir / 'papermill'} - executed/{notebook}.ipynb -k python3 --no-progress-bar "
        f"-p profile paper -p dataset {dataset} -p data_root tiny -p results_dir pipe_results -p device cpu "
        f"-y '{json.dumps({'overrides': overrides, 'seeds': [0]})}'"
    )
    (scratch / "executed").mkdir(exist_ok=True)
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipe], cwd=scratch, capture_output=True, text=True, env=_environment()
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    check_run(scratch, notebook, record_dataset, test_datasets, overrides, "pipe_results")
    baseline = scratch / "pipe_results" / notebook / "baseline_seed0.json"
    first = baseline.read_bytes()

    changed = run_tool(scratch, notebook, dataset, {**overrides, "lr": 0.05}, results="pipe_results")
    output = changed.stdout + changed.stderr
    assert changed.returncode != 0
    assert "CheckpointMismatchError" in output and "recipe.lr: checkpoint 0.00035, this run 0.05" in output
    assert str(scratch / "checkpoints" / notebook / dataset) in output  # the folder to delete to start afresh
    assert baseline.read_bytes() == first, "the first run's results were overwritten"
