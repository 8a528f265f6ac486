"""The reader's version of an executed notebook (tools/book_chapters.py), on notebooks papermill parameterised.

Each notebook here goes through papermill's own injection (``parameterize_notebook``), then gets
outputs and metadata as an executed run has them; the tests check what a reader may see.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from papermill.parameterize import parameterize_notebook

sys.path.insert(0, str(ROOT / "tools"))
from book_chapters import (  # noqa: E402
    chapter_header,
    chapter_run,
    describe_hardware,
    format_duration,
    insert_after_title,
    portable_path,
    reader_notebook,
    rerun_command,
    scrub_text,
)

REPO = Path("/srv/build/reid-book")  # the machine that "ran" these notebooks
HOME = Path("/home/builder")
VENV = "/opt/venvs/reid"


def executed_notebook(parameters: dict, outputs: list[dict], hardware: dict | None = None) -> nbformat.NotebookNode:
    """A notebook as tools/run_notebooks.py leaves it: papermill's injected cell, outputs, metadata."""
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.papermill = {}
    params = nbformat.v4.new_code_cell(
        'profile = "synth"  # smoke | synth | paper\ndata_root = "../data"\n'
        'results_dir = "../results"\nseed = 0\noverrides = {}'
    )
    params.metadata.tags = ["parameters"]
    work = nbformat.v4.new_code_cell("run()")
    work.outputs = [nbformat.from_dict(o) for o in outputs]
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter\n\nIts first paragraph."), params, work]
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])  # as papermill's own preparation does
    nb = parameterize_notebook(nb, parameters, kernel_name="python3", language="python")
    nb.metadata.papermill.update(
        {
            "duration": 245.4,
            "start_time": "2026-01-02T03:04:05+00:00",
            "input_path": "/tmp/tmpabc123/ch.ipynb",
            "output_path": f"{REPO}/book/executed/ch.ipynb",
        }
    )
    nb.metadata.reid_book = {
        "source_sha256": "0" * 64,
        "parameters": str(parameters),
        "paths": {"root": str(REPO), "home": str(HOME), "python": VENV},
    }
    if hardware is not None:
        nb.metadata.reid_book["hardware"] = hardware
    return nb


def test_portable_path() -> None:
    assert portable_path(f"{REPO}/data", REPO, HOME) == "../data"
    assert portable_path(f"{REPO}/notebooks", REPO, HOME) == "."
    assert portable_path(str(REPO), REPO, HOME) == ".."
    assert portable_path(f"{HOME}/datasets/reid", REPO, HOME) == "~/datasets/reid"
    assert portable_path("/mnt/scratch/run7/results", REPO, HOME) == ".../results"
    assert portable_path(f"{REPO}-old/data", REPO, HOME) == ".../data", "a sibling folder is not inside the repo"


def test_scrub_text_replaces_whole_paths_only() -> None:
    pairs = [("/mnt/run/data", ".../data")]
    assert scrub_text("into /mnt/run/data/synthreid/smoke", pairs) == "into .../data/synthreid/smoke"
    assert scrub_text("PosixPath('/mnt/run/data')", pairs) == "PosixPath('.../data')"
    assert scrub_text("/mnt/run/data2 and /x/mnt/run/data", pairs) == "/mnt/run/data2 and /x/mnt/run/data"


def test_reader_notebook_hides_the_machine() -> None:
    parameters = {
        "profile": "smoke",
        "data_root": "/mnt/scratch/data",
        "results_dir": f"{REPO}/results",
        "overrides": {"cache": f"{HOME}/cache"},
    }
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": "SynthReID: reusing /mnt/scratch/data/synthreid/smoke\n"},
        {"output_type": "stream", "name": "stderr", "text": f"{VENV}/lib/python3.11/site-packages/x.py:1: Warn\n"},
        {
            "output_type": "execute_result",
            "execution_count": 3,
            "metadata": {},
            "data": {"text/plain": f"PosixPath('{REPO}/results/ch/run.json')", "image/png": "iVBORw0KGgo/tmp/"},
        },
        {
            "output_type": "error",
            "ename": "OSError",
            "evalue": f"{REPO}/reid_core/x.py",
            "traceback": [f'File "{REPO}/reid_core/x.py", line 3', f"File \x1b[0;32m{REPO}/reid_core/y.py:4\x1b[0m"],
        },
    ]
    nb = executed_notebook(parameters, outputs)
    before = nbformat.writes(nb)
    reader = reader_notebook(nb, "ch", ROOT)
    assert nbformat.writes(nb) == before, "the executed notebook itself must stay as it is"
    nbformat.validate(reader)
    text = nbformat.writes(reader)
    for leak in (str(REPO), str(HOME), VENV, "/mnt/scratch", "/tmp/tmpabc123"):
        assert leak not in text, f"{leak} is still in the reader's notebook"

    injected = [c for c in reader.cells if "injected-parameters" in c.metadata.tags]
    assert len(injected) == 1, "the injected cell keeps its tag, so papermill replaces it on a re-run"
    shown: dict = {}
    exec(injected[0].source, {}, shown)  # the cell still runs, and in the parameters cell's order
    assert shown == {
        "profile": "smoke",
        "data_root": ".../data",
        "results_dir": "../results",
        "overrides": {"cache": "~/cache"},
    }
    assert list(shown) == ["profile", "data_root", "results_dir", "overrides"]
    assert "data_root: a folder outside the repository" in injected[0].source

    work = reader.cells[-1].outputs
    assert work[0].text == "SynthReID: reusing .../data/synthreid/smoke\n"
    assert work[1].text.startswith(".../reid/lib/python3.11/site-packages/x.py")
    assert work[2].data["text/plain"] == "PosixPath('../results/ch/run.json')"
    assert work[2].data["image/png"] == "iVBORw0KGgo/tmp/", "binary outputs are not text to rewrite"
    assert work[3].traceback == ['File "../reid_core/x.py", line 3', "File \x1b[0;32m../reid_core/y.py:4\x1b[0m"]
    assert reader.metadata.papermill.input_path == "notebooks/ch.py"
    assert "paths" not in reader.metadata.reid_book


def test_reader_notebook_needs_papermill_metadata() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T")])
    with pytest.raises(ValueError, match="03_x: no papermill metadata"):
        reader_notebook(nb, "03_x", ROOT)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 8.94, 59.94, 60, 245.4, 3599.4, 7380)] == [
        "0.0 s",
        "8.9 s",
        "59.9 s",
        "1 min 00 s",
        "4 min 05 s",
        "59 min 59 s",
        "2 h 03 min",
    ]
    with pytest.raises(ValueError, match="negative"):
        format_duration(-1)


def test_describe_hardware() -> None:
    cpu = {"cpu": "AMD EPYC 9654", "cpu_cores": 16, "torch": "2.14.1"}
    assert describe_hardware({**cpu, "gpus": []}) == ("AMD EPYC 9654, 16 cores; no GPU", "2.14.1")
    two_gpus = describe_hardware({**cpu, "gpus": ["NVIDIA H100", "NVIDIA H100"]})[0]
    assert two_gpus == "AMD EPYC 9654, 16 cores; 2 x NVIDIA H100"
    assert describe_hardware(None) == ("not recorded", "not recorded")


def test_chapter_run_and_rerun_command() -> None:
    parameters = {
        "profile": "paper",
        "data_root": "/mnt/data",
        "results_dir": f"{REPO}/results",
        "seed": 0,
        "overrides": {"epochs": 6},
    }
    hardware = {"cpu": "Xeon", "cpu_cores": 8, "gpus": ["NVIDIA H200"], "torch": "2.14.1"}
    reader = reader_notebook(executed_notebook(parameters, [], hardware), "05_x", ROOT)
    run = chapter_run(reader, "05_x")
    assert (run.title, run.profile, run.seconds) == ("A chapter", "paper", 245.4)
    assert run.hardware == "Xeon, 8 cores; NVIDIA H200"
    command = rerun_command(run)
    papermill_args = shlex.split(command.replace("\\\n", " ").split("| papermill", 1)[1])  # as the shell joins lines
    # the outside data folder and the values equal to the parameters cell are left to the defaults
    assert papermill_args == [
        "-",
        "runs/05_x.ipynb",
        "-k",
        "python3",
        "--cwd",
        "notebooks",
        "-p",
        "profile",
        "paper",
        "-y",
        'overrides: {"epochs": 6}',
    ]
    assert "jupytext --to ipynb -o - notebooks/05_x.py" in command

    header = chapter_header(run, {"py": "../downloads/05_x.py", "ipynb": "../downloads/05_x.ipynb"})
    assert "| paper | 4 min 05 s | Xeon, 8 cores; NVIDIA H200 | 2.14.1 | 2026-01-02 |" in header
    assert "{download}`05_x.py <../downloads/05_x.py>`" in header
    insert_after_title(reader, header, "05_x")
    first = reader.cells[0].source.split("\n")
    assert first[0] == "# A chapter" and first[2].startswith(":::{admonition}") and first[-1] == "Its first paragraph."


def test_insert_after_title_needs_a_title() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("no heading here")])
    with pytest.raises(ValueError, match="01_x: no '# title' heading"):
        insert_after_title(nb, "note", "01_x")
