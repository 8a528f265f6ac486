"""Execute the book's notebooks with papermill.

Each ``notebooks/NN_name.py`` (jupytext percent format) is converted to ``.ipynb``, executed
with papermill with the parameters ``profile``, ``data_root`` and ``results_dir`` (plus any
``-p key value``), and written to ``<out-dir>/NN_name.ipynb``. A notebook whose output already
records the same source and parameters is skipped unless ``--force``. Besides papermill's own
metadata (duration, start and end times, parameters) each executed notebook records the machine
that ran it under ``metadata.reid_book.hardware`` (CPU model and cores, GPUs, torch version), for
the book's run-time tables, and its repository, home and python folders under
``metadata.reid_book.paths``, which the book replaces by relative paths wherever they appear.

Before anything runs, every parameter is checked against the notebooks' ``parameters`` cells
(``reid_core.book.parameters``): a name no selected notebook declares, or a value of the wrong
type, stops with the valid names (a name only some notebooks declare goes to those only).
Relative folders (``--data-root``, ``--results-dir``, ``-p data_root ...``) are taken relative
to the folder this script is run from and passed on as absolute paths.

Usage:
    python tools/run_notebooks.py --profile synth
    python tools/run_notebooks.py --profile smoke --out-dir /tmp/x --only 01_reid_basics
    python tools/run_notebooks.py --profile paper -p dataset market1501 -p data_root /data --only 03
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
import papermill

from reid_core.book.parameters import Parameter, check_parameters, notebook_parameters, parse_parameter_text

ROOT = Path(__file__).resolve().parents[1]
STAMP_KEY = "reid_book"
FOLDER_PARAMETERS = ("data_root", "results_dir")


def notebook_sources(only: list[str] | None = None) -> list[Path]:
    """The chapter notebooks in order, optionally filtered by name prefixes (``01``, ``03_align``)."""
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(o) for o in only)]
        if not paths:
            raise SystemExit(f"--only {only}: no notebook in {ROOT / 'notebooks'} starts with that")
    return paths


def notebook_run_parameters(
    sources: list[Path], common: dict[str, object], texts: list[tuple[str, str]]
) -> dict[Path, dict[str, object]]:
    """The checked parameters of each notebook: ``common`` plus the ``-p`` ones it declares.

    Args:
        sources: the notebooks to run.
        common: parameters every notebook declares (profile, data_root, results_dir).
        texts: the ``-p key value`` pairs as typed (parsed per notebook, see ``parse_parameter_text``).

    Raises:
        SystemExit: a ``-p`` name no notebook declares, or a value of the wrong type (the
            message names the notebook, the parameter and the valid names or type).
    """
    declared = {source: notebook_parameters(source) for source in sources}
    unknown = sorted({key for key, _ in texts if all(key not in d for d in declared.values())})
    chosen: dict[Path, dict[str, object]] = {}
    for source in sources:
        parameters = dict(common)
        known: dict[str, Parameter] = declared[source]
        if unknown:
            parameters.update({key: None for key in unknown})  # reported by check_parameters below
        for key, text in texts:
            if key in FOLDER_PARAMETERS:
                parameters[key] = text  # a folder named "2024" stays a str
            elif key in known:
                parameters[key] = parse_parameter_text(text, known[key])
            elif key not in unknown:
                print(
                    f"[note] {source.stem} has no parameter {key!r}; it is passed only to the notebooks that "
                    f"declare it",
                    flush=True,
                )
        for key in FOLDER_PARAMETERS:  # relative to where this script runs, not to notebooks/
            if isinstance(parameters.get(key), str):
                parameters[key] = os.path.abspath(os.path.expanduser(str(parameters[key])))
        try:
            check_parameters(parameters, known, where=source.name)
        except (ValueError, TypeError) as error:
            raise SystemExit(f"[fail] {error}") from None
        chosen[source] = parameters
    return chosen


def _stamp(source: Path, parameters: dict[str, object]) -> dict[str, str]:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return {"source_sha256": digest, "parameters": json.dumps(parameters, sort_keys=True)}


def _is_done(output: Path, stamp: dict[str, str]) -> bool:
    if not output.is_file():
        return False
    try:
        nb = nbformat.read(output, as_version=4)
    except Exception:
        return False
    recorded = nb.metadata.get(STAMP_KEY, {})
    return all(recorded.get(key) == value for key, value in stamp.items())


# Run in a child interpreter (the kernels' python) so that this process never holds a CUDA context.
_HARDWARE_PROBE = """
import json, os, platform, torch
cpu = platform.processor() or platform.machine()
try:
    with open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
except (OSError, StopIteration):
    pass
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
print(json.dumps({"cpu": cpu, "cpu_cores": cores, "gpus": gpus, "torch": torch.__version__,
                  "python": platform.python_version()}))
"""


def machine_hardware() -> dict[str, object]:
    """The machine the notebooks run on: ``{"cpu", "cpu_cores", "gpus", "torch", "python"}``.

    ``cpu`` is the model name of ``/proc/cpuinfo`` (else :func:`platform.processor`), ``cpu_cores``
    the cores this process may use, ``gpus`` the CUDA device names torch sees (empty without one).
    """
    result = subprocess.run([sys.executable, "-c", _HARDWARE_PROBE], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"could not describe this machine's hardware with {sys.executable}:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_notebook(
    source: Path,
    output: Path,
    parameters: dict[str, object],
    force: bool = False,
    hardware: dict[str, object] | None = None,
) -> bool:
    """Execute one notebook; returns False when skipped because already done.

    ``hardware`` (default: :func:`machine_hardware`) is recorded beside the stamp in the metadata.
    """
    stamp = _stamp(source, parameters)
    if not force and _is_done(output, stamp):
        print(f"[skip] {source.name}: {output} is up to date (use --force to redo)", flush=True)
        return False
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src_ipynb = Path(tmp) / f"{source.stem}.ipynb"
        nbformat.write(nb, src_ipynb)
        partial = output.with_name(f".{output.stem}.partial.ipynb")
        print(f"[run] {source.name} with {parameters}", flush=True)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(src_ipynb),
                str(partial),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(source.parent),
                progress_bar=True,
            )
        except papermill.PapermillExecutionError as err:
            raise SystemExit(
                f"[fail] {source.name}: cell {err.exec_count} raised {err.ename}: {err.evalue}\n"
                f"        the executed notebook is in {partial}"
            ) from None
        executed = nbformat.read(partial, as_version=4)
        executed.metadata[STAMP_KEY] = {
            **stamp,
            "hardware": hardware if hardware is not None else machine_hardware(),
            # where this machine keeps things, so that the book can hide them (tools/book_chapters.py)
            "paths": {"root": str(ROOT), "home": str(Path.home()), "python": sys.prefix},
        }
        nbformat.write(executed, partial)
        partial.replace(output)
    print(f"[done] {source.name} in {time.perf_counter() - start:.0f} s -> {output}", flush=True)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="synth", choices=["smoke", "synth", "paper"])
    parser.add_argument("--out-dir", default=str(ROOT / "book" / "executed"))
    parser.add_argument("--data-root", default=str(ROOT / "data"))
    parser.add_argument("--results-dir", default=str(ROOT / "results"))
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to run (default: all)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    parser.add_argument("--force", action="store_true", help="re-run notebooks that are up to date")
    args = parser.parse_args(argv)
    common: dict[str, object] = {
        "profile": args.profile,
        "data_root": str(Path(args.data_root).resolve()),
        "results_dir": str(Path(args.results_dir).resolve()),
    }
    sources = notebook_sources(args.only)
    parameters = notebook_run_parameters(sources, common, [(k, v) for k, v in args.parameter])  # all before any run
    start = time.perf_counter()
    hardware = machine_hardware()
    for source in sources:
        run_notebook(
            source, Path(args.out_dir) / f"{source.stem}.ipynb", parameters[source], force=args.force, hardware=hardware
        )
    print(f"all notebooks done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
