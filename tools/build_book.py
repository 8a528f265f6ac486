"""Build the book (Jupyter Book 1.x) from executed notebooks and the results JSON files.

In place (the main job): writes ``book/generated/results.md`` from ``results/`` and runs
``jupyter-book build`` on the repository, so the site lands in ``book/_build/html``.
With ``--stage DIR`` (the tests): copies the book's sources, the executed notebooks and the
results page into DIR and builds there, leaving the repository untouched.

A missing executed notebook is an error naming it (run tools/run_notebooks.py first). The build
runs with ``--all`` from a clean ``_build`` so its exit code is trustworthy.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # reid_core, also when run without installing it

from reid_core.results import load_results, render_results_page  # noqa: E402

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


def stage_sources(stage: Path, executed_dir: Path) -> None:
    """Copy the book's sources and the executed notebooks into ``stage``."""
    stage.mkdir(parents=True, exist_ok=True)
    for name in BOOK_SOURCES:
        shutil.copy2(ROOT / name, stage / name)
    book = stage / "book"
    if book.exists():
        shutil.rmtree(book)
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "executed", "generated"))
    (book / "executed").mkdir()
    for nb in executed_dir.glob("*.ipynb"):
        shutil.copy2(nb, book / "executed" / nb.name)


def build(stage: Path, results_dir: Path, out_dir: Path) -> Path:
    """Write the results page, check every toc entry exists, run jupyter-book; return the html dir."""
    page = stage / "book" / "generated" / "results.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render_results_page(load_results(results_dir)) + "\n")
    missing = [f for f in toc_files(stage / "_toc.yml")
               if not any((stage / f).with_suffix(ext).is_file() for ext in (".md", ".ipynb"))]
    if missing:
        raise SystemExit(f"the book needs these pages, which are missing under {stage}: {missing}\n"
                         "run `python tools/run_notebooks.py` first for the book/executed/ ones")
    build_dir = out_dir / "_build"
    if build_dir.exists():
        shutil.rmtree(build_dir)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(stage), "--path-output", str(out_dir), "--all", "-W", "-n", "--keep-going"]
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
        stage_sources(stage, Path(args.executed_dir))
        out = Path(args.out).resolve() if args.out else stage / "book"
    else:
        stage = ROOT
        if Path(args.executed_dir).resolve() != (ROOT / "book" / "executed").resolve():
            raise SystemExit("--executed-dir other than book/executed needs --stage")
        out = Path(args.out).resolve() if args.out else ROOT / "book"
    build(stage, Path(args.results_dir), out)


if __name__ == "__main__":
    main()
