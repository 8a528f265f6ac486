"""Execute the book's notebooks with papermill.

Each ``notebooks/NN_name.py`` (jupytext percent format) is converted to ``.ipynb``, executed
with papermill with the parameters ``profile``, ``data_root`` and ``results_dir`` (plus any
``-p key value``), and written to ``<out-dir>/NN_name.ipynb``. A notebook whose output already
records the same source and parameters is skipped unless ``--force``.

Usage:
    python tools/run_notebooks.py --profile synth
    python tools/run_notebooks.py --profile smoke --out-dir /tmp/x --only 01_reid_basics
    python tools/run_notebooks.py --profile paper -p dataset market1501 -p data_root /data --only 03
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
import papermill

ROOT = Path(__file__).resolve().parents[1]
STAMP_KEY = "reid_book"


def notebook_sources(only: list[str] | None = None) -> list[Path]:
    """The chapter notebooks in order, optionally filtered by name prefixes (``01``, ``03_align``)."""
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(o) for o in only)]
        if not paths:
            raise SystemExit(f"--only {only}: no notebook in {ROOT / 'notebooks'} starts with that")
    return paths


def _parse_value(text: str) -> object:
    """``-p`` values: JSON when it parses (numbers, booleans, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


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
    return nb.metadata.get(STAMP_KEY) == stamp


def run_notebook(source: Path, output: Path, parameters: dict[str, object], force: bool = False) -> bool:
    """Execute one notebook; returns False when skipped because already done."""
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
                str(src_ipynb), str(partial), parameters=parameters, kernel_name="python3",
                cwd=str(source.parent), progress_bar=True,
            )
        except papermill.PapermillExecutionError as err:
            raise SystemExit(f"[fail] {source.name}: cell {err.exec_count} raised {err.ename}: {err.evalue}\n"
                             f"        the executed notebook is in {partial}") from None
        executed = nbformat.read(partial, as_version=4)
        executed.metadata[STAMP_KEY] = stamp
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
    parameters: dict[str, object] = {
        "profile": args.profile,
        "data_root": str(Path(args.data_root).resolve()),
        "results_dir": str(Path(args.results_dir).resolve()),
    }
    parameters.update({k: _parse_value(v) for k, v in args.parameter})
    start = time.perf_counter()
    for source in notebook_sources(args.only):
        run_notebook(source, Path(args.out_dir) / f"{source.stem}.ipynb", parameters, force=args.force)
    print(f"all notebooks done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
