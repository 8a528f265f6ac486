"""The reader's version of an executed notebook, and the tables of what each chapter cost to run.

``tools/build_book.py`` passes every executed notebook (``book/executed/NN_name.ipynb``, written by
``tools/run_notebooks.py``) through this module before the book is built:

* :func:`reader_notebook` removes the machine that ran it: the absolute paths of papermill's
  injected parameters, of the outputs and of the metadata become paths relative to the notebook's
  working folder ``notebooks/`` (``"../data"``) for a path inside the repository, ``"~/..."`` for
  one under the home folder, and ``".../name"`` for any other.
* :func:`chapter_run` reads what the run cost from papermill's metadata (duration, start time,
  parameters) and the hardware that ``run_notebooks.py`` recorded beside it;
  :func:`run_table` tables it (the results page has one row per chapter, each chapter its own row).
* :func:`chapter_header` is the note at the top of each chapter page: that table, downloads of the
  notebook (jupytext ``.py`` and the executed ``.ipynb``) and the command that re-runs it.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shlex
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from papermill.translators import PythonTranslator

NOTEBOOK_DIR = "notebooks"  # the folder the notebooks run in (papermill's cwd): relative paths start there
INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"
STAMP_KEY = "reid_book"  # tools/run_notebooks.py's metadata: source hash, parameters, hardware, paths
OUTSIDE = "..."  # stands for the part of a path outside the repository and the home folder
TEXT_MIMES = ("text/", "application/json", "application/javascript")  # output data that may hold a path


def portable_path(value: str, root: Path, home: Path | None = None) -> str:
    """An absolute path as a reader may see it.

    Args:
        value: an absolute path of the machine that ran the notebook.
        root: the repository root on that machine.
        home: its home folder (default: this machine's).

    Returns:
        Relative to ``root / notebooks`` when inside the repository (``"../data"``, runnable as
        is); ``"~/rest"`` under the home folder; else ``".../<last part>"``.
    """
    path, root = Path(value), Path(root)
    home = Path.home() if home is None else Path(home)
    if path == root or root in path.parents:
        return Path(os.path.relpath(path, root / NOTEBOOK_DIR)).as_posix()
    if len(home.parts) > 1 and (path == home or home in path.parents):
        return "~/" + path.relative_to(home).as_posix() if path != home else "~"
    return f"{OUTSIDE}/{path.name}"


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def path_replacements(
    parameters: dict[str, Any], root: Path, home: Path | None = None, extra: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """``(absolute, portable)`` pairs to rewrite in a notebook, the longest (most specific) first.

    The absolute paths are the run's path-valued parameters (nested ones too), ``extra`` (the
    python environment, whose files warnings name), then the repository root and the home folder
    themselves (for paths the notebook printed that no parameter names).
    """
    home = Path.home() if home is None else Path(home)
    paths = [v for v in _strings(parameters) if os.path.isabs(v)] + [p for p in extra if os.path.isabs(p)]
    pairs = {str(Path(v)): portable_path(v, root, home) for v in paths if len(Path(v).parts) > 1}
    pairs.setdefault(str(root), portable_path(str(root), root, home))
    if len(home.parts) > 1:
        pairs.setdefault(str(home), "~")
    return sorted(pairs.items(), key=lambda kv: len(kv[0]), reverse=True)


def scrub_text(text: str, replacements: list[tuple[str, str]]) -> str:
    """Replace each absolute path (a whole path component sequence, not a prefix of a longer name).

    A path may follow an ANSI colour code (``\\x1b[0;32m``), as in IPython's tracebacks.
    """
    for old, new in replacements:
        text = re.sub(
            r"(?:(?<![\w.\-])|(?<=\x1b\[\dm)|(?<=;\d\dm))" + re.escape(old) + r"(?![\w.\-])",
            new.replace("\\", r"\\"),
            text,
        )
    return text


def scrub_value(value: Any, replacements: list[tuple[str, str]]) -> Any:
    """:func:`scrub_text` on every string of a JSON-like value (nested lists and dicts)."""
    if isinstance(value, str):
        return scrub_text(value, replacements)
    if isinstance(value, list):
        return [scrub_value(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: scrub_value(v, replacements) for k, v in value.items()}
    return value


def _scrub_output(output: dict[str, Any], replacements: list[tuple[str, str]]) -> None:
    def fix(value: Any) -> Any:
        return scrub_value(value, replacements)

    if "text" in output:
        output["text"] = fix(output["text"])
    for mime, value in output.get("data", {}).items():
        if mime.startswith(TEXT_MIMES):
            output["data"][mime] = fix(value)
    for key in ("evalue", "traceback"):
        if key in output:
            output[key] = fix(output[key])


def _tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def parameter_defaults(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """The values of the notebook's ``parameters`` cell (papermill's parser), by name."""
    cells = [c for c in nb.cells if PARAMETERS_TAG in _tags(c)]
    if not cells:
        return {}
    defaults = {}
    for p in PythonTranslator.inspect(cells[0]):
        try:
            defaults[p.name] = ast.literal_eval(p.default)
        except (ValueError, SyntaxError):
            defaults[p.name] = p.default
    return defaults


def _papermill(nb: nbformat.NotebookNode, name: str) -> dict[str, Any]:
    meta = nb.metadata.get("papermill")
    if not meta or "parameters" not in meta:
        raise ValueError(
            f"{name}: no papermill metadata (metadata.papermill.parameters); "
            "execute it with tools/run_notebooks.py, not by hand"
        )
    return meta


def machine_paths(nb: nbformat.NotebookNode, root: Path) -> tuple[Path, Path, list[str]]:
    """``(repository root, home, [python environment])`` of the machine that ran ``nb``.

    ``tools/run_notebooks.py`` records them (``metadata.reid_book.paths``); a notebook run before
    it did gets this machine's (``root``, the home folder, ``sys.prefix``), which is right when
    the book is built where the notebooks ran.
    """
    paths = nb.metadata.get(STAMP_KEY, {}).get("paths")
    if paths:
        return Path(paths["root"]), Path(paths["home"]), [paths["python"]]
    return Path(root), Path.home(), [sys.prefix]


def reader_notebook(nb: nbformat.NotebookNode, name: str, root: Path) -> nbformat.NotebookNode:
    """A copy of an executed notebook without the absolute paths of the machine that ran it.

    The injected-parameters cell is rewritten with portable values (and keeps its tag, so that
    papermill replaces it when the notebook is run again); outputs (streams, text data, errors),
    papermill's recorded parameters and paths, and the run stamp get the same replacements.

    Args:
        nb: the executed notebook (papermill metadata required).
        name: its name, for errors (``03_alignedreid``).
        root: the repository root, when the notebook does not record the one it ran in
            (:func:`machine_paths`).
    """
    meta = _papermill(nb, name)
    root, home, python = machine_paths(nb, root)
    replacements = path_replacements(meta["parameters"], root, home, extra=python)
    reader = copy.deepcopy(nb)
    portable = scrub_value(dict(meta["parameters"]), replacements)
    order = list(parameter_defaults(nb))  # the parameters cell's order (papermill's metadata is sorted)
    portable = dict(sorted(portable.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    outside = [k for k, v in portable.items() if isinstance(v, str) and v.startswith(OUTSIDE + "/")]
    for cell in reader.cells:
        if INJECTED_TAG in _tags(cell):
            note = ["# Parameters of this run (papermill injected them; paths are relative to notebooks/)."]
            if outside:
                note.append(f"# {', '.join(outside)}: a folder outside the repository of the machine that ran it.")
            cell.source = "\n".join(note) + "\n" + PythonTranslator.codify(portable, comment="").split("\n", 1)[1]
        for output in cell.get("outputs", []):
            _scrub_output(output, replacements)
    reader.metadata.papermill["parameters"] = portable
    reader.metadata.papermill["input_path"] = f"{NOTEBOOK_DIR}/{name}.py"
    reader.metadata.papermill["output_path"] = f"{name}.ipynb"
    stamp = reader.metadata.get(STAMP_KEY)
    if stamp:
        stamp.pop("paths", None)
        if isinstance(stamp.get("parameters"), str):
            stamp["parameters"] = scrub_text(stamp["parameters"], replacements)
    return reader


@dataclass(frozen=True)
class ChapterRun:
    """What one executed notebook cost: from papermill's metadata and the recorded hardware."""

    name: str  # notebook stem, "03_alignedreid"
    title: str  # the chapter's first heading
    profile: str
    parameters: dict[str, Any]  # as papermill injected them, paths as the reader sees them (reader_notebook)
    defaults: dict[str, Any]  # the parameters cell's values
    seconds: float
    started: str  # papermill's start time, ISO 8601
    hardware: str  # "AMD EPYC, 2 cores; no GPU"
    torch: str
    source_sha256: str | None


def describe_hardware(hardware: dict[str, Any] | None) -> tuple[str, str]:
    """``(machine, torch version)`` in words from ``metadata.reid_book.hardware``."""
    if not hardware:
        return "not recorded", "not recorded"
    gpus = hardware.get("gpus") or []
    gpu = "no GPU" if not gpus else ", ".join(f"{n} x {g}" if n > 1 else g for g, n in Counter(gpus).items())
    cores = hardware.get("cpu_cores")
    machine = f"{hardware.get('cpu', '?')}, {cores} core{'s' if cores != 1 else ''}; {gpu}"
    return machine, str(hardware.get("torch", "?"))


def chapter_title(nb: nbformat.NotebookNode, name: str) -> str:
    """The first markdown heading of the notebook."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise ValueError(f"{name}: no '# title' heading in any markdown cell")


def chapter_run(nb: nbformat.NotebookNode, name: str) -> ChapterRun:
    """The run of one executed notebook, from its metadata (errors name the notebook).

    Args:
        nb: the reader's version of the notebook (:func:`reader_notebook`), so that the recorded
            parameters hold no absolute path.
        name: the notebook's name (``03_alignedreid``).
    """
    meta = _papermill(nb, name)
    if meta.get("duration") is None or not meta.get("start_time"):
        raise ValueError(f"{name}: papermill recorded no duration/start_time: did its run finish?")
    stamp = nb.metadata.get(STAMP_KEY, {})
    machine, torch_version = describe_hardware(stamp.get("hardware"))
    return ChapterRun(
        name=name,
        title=chapter_title(nb, name),
        profile=str(meta["parameters"].get("profile", "?")),
        parameters=dict(meta["parameters"]),
        defaults=parameter_defaults(nb),
        seconds=float(meta["duration"]),
        started=str(meta["start_time"]),
        hardware=machine,
        torch=torch_version,
        source_sha256=stamp.get("source_sha256"),
    )


def format_duration(seconds: float) -> str:
    """``"8.9 s"``, ``"4 min 05 s"``, ``"2 h 03 min"``."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {seconds}")
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _row(run: ChapterRun) -> list[str]:
    return [run.profile, format_duration(run.seconds), run.hardware, run.torch, run.started[:10]]


RUN_COLUMNS = ["profile", "run time", "hardware", "torch", "date"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_table(runs: Iterable[ChapterRun], link_dir: str | None = None) -> str:
    """A markdown table of the runs; with ``link_dir`` it has a chapter column linking each page.

    Args:
        runs: one per chapter, in book order.
        link_dir: the executed notebooks' folder relative to the page (``"../executed"``).
    """
    runs = list(runs)
    if link_dir is None:
        return _table(RUN_COLUMNS, [_row(r) for r in runs])
    rows = [[f"[{r.title}]({link_dir}/{r.name}.ipynb)", *_row(r)] for r in runs]
    return _table(["chapter", *RUN_COLUMNS], rows)


def rerun_command(run: ChapterRun) -> str:
    """The shell lines (from the repository root) that run the notebook again with papermill.

    Parameters equal to the parameters cell's values are left out, and so are paths outside the
    repository (the reader's data lives elsewhere): the notebook's defaults apply.
    """
    args = []
    for key, value in run.parameters.items():
        if isinstance(value, str) and (os.path.isabs(value) or value.startswith((OUTSIDE + "/", "~"))):
            continue
        if key in run.defaults and run.defaults[key] == value:
            continue
        if isinstance(value, (dict, list)):
            args.append("-y " + shlex.quote(f"{key}: {json.dumps(value)}"))
        else:
            args.append(f"-p {key} {shlex.quote(str(value))}")
    lines = [
        "mkdir -p runs",
        f"jupytext --to ipynb -o - {NOTEBOOK_DIR}/{run.name}.py \\",
        f"  | papermill - runs/{run.name}.ipynb -k python3 --cwd {NOTEBOOK_DIR}",
    ]
    if args:
        lines[-1] += " \\"
        lines.append("      " + " ".join(args))
    return "\n".join(lines)


def chapter_header(run: ChapterRun, downloads: dict[str, str], source_changed: bool = False) -> str:
    """The MyST note at the top of a chapter: its run, its downloads, the command to re-run it.

    Args:
        run: the chapter's run.
        downloads: ``{"py": path, "ipynb": path}``, relative to the chapter's page.
        source_changed: the ``.py`` has changed since the run (its download is the newer source).
    """
    lines = [
        ":::{admonition} This chapter's run, and how to run it yourself",
        ":class: note run-info",
        "",
        run_table([run]),
        "",
        f"Download the notebook: {{download}}`{run.name}.py <{downloads['py']}>` (jupytext source) or "
        f"{{download}}`{run.name}.ipynb <{downloads['ipynb']}>` (executed, with the outputs shown here).",
        "",
    ]
    if source_changed:
        lines += ["The source has changed since this run: the `.py` is the newer version.", ""]
    lines += [
        "Run it again with papermill, from the repository root in its `.venv` (or "
        f"`python tools/run_notebooks.py --profile {run.profile} --only {run.name} --force`):",
        "",
        "```bash",
        rerun_command(run),
        "```",
        ":::",
    ]
    return "\n".join(lines)


def insert_after_title(nb: nbformat.NotebookNode, text: str, name: str) -> None:
    """Put ``text`` right below the notebook's ``# title`` line, in the same markdown cell."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.split("\n")
        for i, line in enumerate(lines):
            if line.startswith("# "):
                cell.source = "\n".join(lines[: i + 1] + ["", text, ""] + lines[i + 1 :])
                return
    raise ValueError(f"{name}: no '# title' heading in any markdown cell")
