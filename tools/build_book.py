"""Build the book (Jupyter Book 1.x) from executed notebooks and the results JSON files.

The book is always built from a staged copy of its sources, so that the repository stays as it
is: the configuration, ``book/``, the results page (``book/generated/results.md``, written from
the results JSON by ``reid_core.book.results``, with a table of what each chapter cost to run) and the
reader's version of every executed notebook (``tools/book_chapters.py``: no absolute path of the
machine that ran it; a note on top with its run time, its hardware, downloads of its ``.py`` and
``.ipynb`` and the command that re-runs it; the downloads are staged in ``book/downloads/``).

In place (the main job, ``make book``): stages into ``book/_build/stage`` and writes the site to
``book/_build/html``. With ``--stage DIR`` (the tests): stages into DIR and builds there.

A missing executed notebook is an error naming it (run tools/run_notebooks.py first). The build
runs with ``--all`` from a clean ``_build`` so its exit code is trustworthy.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # reid_core, also when run without installing it

from reid_core.book.evidence import load_claims  # noqa: E402
from reid_core.book.results import load_results, render_results_page  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from book_chapters import (  # noqa: E402
    ChapterRun,
    chapter_header,
    chapter_run,
    insert_after_title,
    reader_notebook,
    run_table,
)

BOOK_SOURCES = ("_config.yml", "_toc.yml", "references.bib")


def toc_files(toc_path: Path) -> list[str]:
    """Every ``file:`` (and the root) named in a jb-book ``_toc.yml``."""
    toc = yaml.safe_load(toc_path.read_text())
    files = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", toc.get("chapters", [])))
    return files


def stage_chapter(executed: Path, book: Path) -> ChapterRun:
    """Stage one executed notebook as a chapter page, with its downloads; return its run.

    Writes ``book/downloads/<name>.ipynb`` (the reader's version), ``book/downloads/<name>.py``
    (the jupytext source from ``notebooks/``) and ``book/executed/<name>.ipynb`` (the reader's
    version with the run note below its title).
    """
    name = executed.stem
    try:
        reader = reader_notebook(nbformat.read(executed, as_version=4), name, ROOT)
        run = chapter_run(reader, name)
    except ValueError as err:
        raise SystemExit(f"{executed}: {err}") from None
    source = ROOT / "notebooks" / f"{name}.py"
    if not source.is_file():
        raise SystemExit(f"{executed} has no source {source}: the book offers each chapter's .py for download")
    changed = run.source_sha256 is not None and hashlib.sha256(source.read_bytes()).hexdigest() != run.source_sha256
    if changed:
        print(f"warning: {source} has changed since {executed} was run; re-run tools/run_notebooks.py", flush=True)
    downloads = book / "downloads"
    nbformat.write(reader, downloads / f"{name}.ipynb")
    shutil.copy2(source, downloads / f"{name}.py")
    links = {"py": f"../downloads/{name}.py", "ipynb": f"../downloads/{name}.ipynb"}  # from book/executed/
    insert_after_title(reader, chapter_header(run, links, source_changed=changed), name)
    nbformat.write(reader, book / "executed" / f"{name}.ipynb")
    return run


def stage_sources(stage: Path, executed_dir: Path) -> list[ChapterRun]:
    """Copy the book's sources into ``stage`` and stage every executed notebook; return their runs."""
    stage.mkdir(parents=True, exist_ok=True)
    for name in BOOK_SOURCES:
        shutil.copy2(ROOT / name, stage / name)
    book = stage / "book"
    if book.exists():
        shutil.rmtree(book)
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "executed", "generated", "downloads"))
    (book / "executed").mkdir()
    (book / "downloads").mkdir()
    return [stage_chapter(nb, book) for nb in sorted(Path(executed_dir).glob("*.ipynb"))]


RUN_TIMES_SECTION = """## What each chapter cost to run

Each chapter was executed by papermill (`tools/run_notebooks.py`) with the profile below; the run
time is papermill's, from the first cell to the last, and the hardware is the machine's that ran it
(a chapter picks the GPU when there is one). The same line heads each chapter, with downloads of
its notebook and the command that runs it again."""


def build(stage: Path, results_dir: Path, out_dir: Path, runs: list[ChapterRun]) -> Path:
    """Write the results page, check every toc entry exists, run jupyter-book; return the html dir."""
    page = stage / "book" / "generated" / "results.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(
        render_results_page(load_results(results_dir), claims=load_claims(results_dir))
        + "\n\n"
        + RUN_TIMES_SECTION
        + "\n\n"
        + run_table(runs, link_dir="../executed")
        + "\n"
    )
    missing = [
        f
        for f in toc_files(stage / "_toc.yml")
        if not any((stage / f).with_suffix(ext).is_file() for ext in (".md", ".ipynb"))
    ]
    if missing:
        raise SystemExit(
            f"the book needs these pages, which are missing under {stage}: {missing}\n"
            "run `python tools/run_notebooks.py` first for the book/executed/ ones"
        )
    build_dir = out_dir / "_build"
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [
        str(jb) if jb.exists() else "jupyter-book",
        "build",
        str(stage),
        "--path-output",
        str(out_dir),
        "--all",
        "-W",
        "-n",
        "--keep-going",
    ]
    print("$", " ".join(cmd), flush=True)
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise SystemExit(f"jupyter-book build failed (exit {result.returncode})")
    html = build_dir / "html"
    copy_pages(results_dir, html / "pages")
    print(f"book built: {html / 'index.html'}")
    return html


def copy_pages(results_dir: Path, target: Path) -> None:
    """Copy the stand-alone pages notebooks leave in ``results_dir/<notebook>/site/`` to ``target/<notebook>/``.

    A notebook links them as ``../../pages/<notebook>/...`` (e.g. the ranked-list page of
    chapter 06, an HTML file with its thumbnails), which Sphinx would not copy by itself.
    """
    for site in sorted(Path(results_dir).glob("*/site")):
        destination = target / site.parent.name
        shutil.copytree(site, destination, dirs_exist_ok=True)
        print(f"copied {site} -> {destination}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executed-dir", default=str(ROOT / "book" / "executed"))
    parser.add_argument("--results-dir", default=str(ROOT / "results"))
    parser.add_argument("--stage", default=None, help="build a copy in this folder instead of in place")
    parser.add_argument("--out", default=None, help="folder that receives _build/ (default: book/ or the stage)")
    args = parser.parse_args(argv)
    if args.stage:
        stage = Path(args.stage).resolve()
        out = Path(args.out).resolve() if args.out else stage / "book"
    else:
        out = Path(args.out).resolve() if args.out else ROOT / "book"
        stage = out / "_build" / "stage"
    if (out / "_build").exists():  # a clean build; in place this also clears the previous stage
        shutil.rmtree(out / "_build")
    runs = stage_sources(stage, Path(args.executed_dir))
    build(stage, Path(args.results_dir), out, runs)


if __name__ == "__main__":
    main()
