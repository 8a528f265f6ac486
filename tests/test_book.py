"""The book builds offline from the smoke-profile notebooks, and every page reads right with the network off.

The site is served on localhost and each page of the table of contents is loaded in headless
Chromium with every other host unreachable (no DNS, a dead proxy for everything but 127.0.0.1),
as on a laptop without internet. The DOM after scripts ran must hold the page's title, its figures
(notebook chapters draw at least one) and its tables; its math typeset by the site's own MathJax
(one ``mjx-container`` per math element, no TeX error, no TeX delimiter left in the visible text
outside code); no absolute path of the machine that built it; on a chapter, the note with its run
(profile, papermill's run time, the hardware that ran it), downloads that resolve (its jupytext
``.py`` and executed ``.ipynb``) and the papermill command; on the results page, the run-time table.

A screenshot of every chapter, taken offline, is written to ``test-output/book/<chapter>.png`` at
the repository root (gitignored), for a person to look at.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

pytestmark = pytest.mark.book

sys.path.insert(0, str(ROOT / "tools"))
from book_chapters import describe_hardware, format_duration  # noqa: E402
from build_book import toc_files  # noqa: E402
from run_notebooks import machine_hardware  # noqa: E402

SCREENSHOTS = ROOT / "test-output" / "book"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    # the network is off: no name resolves, and any address but loopback goes to a dead proxy
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
]
VIRTUAL_TIME_MS = 10_000  # scripts (MathJax) run to completion in virtual time
PAGES = toc_files(ROOT / "_toc.yml")
CHAPTERS = [p for p in PAGES if p.startswith("book/executed/")]


@pytest.fixture(scope="module")
def stage(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    stage = tmp_path_factory.mktemp("book")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "build_book.py"),
            "--stage",
            str(stage),
            "--executed-dir",
            str(smoke_run / "executed"),
            "--results-dir",
            str(smoke_run / "results"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"book build failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    return stage


@pytest.fixture(scope="module")
def site(stage: Path) -> Path:
    html_dir = stage / "book" / "_build" / "html"
    assert (html_dir / "index.html").is_file()
    return html_dir


@pytest.fixture(scope="module")
def server(site: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def build_paths(smoke_run: Path, stage: Path) -> list[str]:
    """Absolute paths of the machine that ran and built the book: none may reach a page."""
    paths = {str(ROOT), str(smoke_run), str(stage), sys.prefix, str(Path(tempfile.gettempdir())) + "/"}
    home = Path.home()
    if len(home.parts) > 1:
        paths.add(str(home))
    return sorted(paths)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium (apt-get install chromium)")
    return path


def _chromium_run(args: list[str], profile_dir: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile_dir}",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"chromium failed on {args[-1]}: {result.stderr[-2000:]}"
    return result


def _dump_dom(url: str, profile_dir: Path) -> str:
    return _chromium_run(["--dump-dom", url], profile_dir).stdout


def _screenshot(url: str, shot: Path, profile_dir: Path, size: str = "1280,1600") -> None:
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    result = _chromium_run([f"--screenshot={shot}", f"--window-size={size}", "--hide-scrollbars", url], profile_dir)
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot of {url}: {result.stderr[-2000:]}"


class _VisibleText(HTMLParser):
    """The text a reader sees as prose: everything but code, scripts and typeset math."""

    SKIP = {"script", "style", "pre", "code", "mjx-container", "noscript", "template", "textarea"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.open:
            while self.open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if not self.SKIP.intersection(self.open):
            self.parts.append(data)


def visible_prose(dom: str) -> str:
    parser = _VisibleText()
    parser.feed(dom)
    return "".join(parser.parts)


# TeX left as source: \( \) \[ \] $$, or $...$ around TeX (a backslash, ^, _ or a brace inside)
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\$[^$\n]*[\\^_{}][^$\n]*\$")
MATH_ELEMENT = re.compile(r'<(?:span|div)[^>]*class="math notranslate nohighlight"')
EXTERNAL = re.compile(
    r'<(?:script|img|iframe|source)\b[^>]*\bsrc="((?:https?:)?//[^"]*)"'
    r'|<link\b[^>]*\bhref="((?:https?:)?//[^"]*)"'
)


def test_visible_prose_and_raw_tex_catch_what_they_should() -> None:
    """The checkers themselves: raw TeX in prose is caught, in code or typeset math it is not."""
    dom = (
        "<p>stripe \\(i\\) and $x_i$</p><pre>\\(kept\\)</pre><code>$a_b$</code>"
        '<span class="math"><mjx-container>\\(ok\\)</mjx-container></span><p>costs $5 and $10</p>'
    )
    prose = visible_prose(dom)
    assert RAW_TEX.findall(prose) == ["\\(", "\\)", "$x_i$"]
    assert "kept" not in prose and "ok" not in prose and "$5" in prose


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_offline(page: str, site: Path, server: str, build_paths: list[str], tmp_path: Path) -> None:
    assert (site / f"{page}.html").is_file(), f"{page}.html was not built"
    static = (site / f"{page}.html").read_text()
    dom = _dump_dom(f"{server}/{page}.html", tmp_path / "chrome")
    assert re.search(r"<h1[^>]*>", dom), f"{page}: no title in the rendered page"
    assert "Traceback (most recent call last)" not in dom, f"{page}: an error traceback is shown"

    n_math = len(MATH_ELEMENT.findall(static))
    n_typeset = dom.count("<mjx-container")
    assert n_typeset == n_math, f"{page}: {n_math} math elements but MathJax typeset {n_typeset} offline"
    assert "<mjx-merror" not in dom, f"{page}: MathJax reports a TeX error"
    prose = visible_prose(dom)
    raw = [(m.group(0), prose[max(0, m.start() - 60) : m.end() + 20]) for m in RAW_TEX.finditer(prose)]
    assert not raw, f"{page}: TeX shown as source outside code: {raw[:5]}"

    external = [a or b for a, b in EXTERNAL.findall(static)]
    assert not external, f"{page}: loads from other hosts, which fails offline: {external}"

    text = html.unescape(re.sub(r"<[^>]+>", "", dom))  # code included: highlighted strings are split by spans
    leaks = [p for p in build_paths if p in text or p in static]
    assert not leaks, f"{page}: shows absolute paths of the build machine: {leaks}"

    n_img = len(re.findall(r"<img\b", dom))
    n_table = len(re.findall(r"<table\b", dom))
    if page in CHAPTERS:
        assert n_img >= 1, f"{page}: a chapter must show at least one figure, found none"
        for src in re.findall(r'<img[^>]+src="([^"]+)"', dom):
            if not src.startswith("data:"):
                target = (site / page).parent / src
                assert target.resolve().is_file(), f"{page}: figure {src} is missing from the site"
    if page in ("book/generated/results", "book/datasets"):
        assert n_table >= 1, f"{page}: expected tables, found none"


def _run_note(dom: str, page: str) -> tuple[int, str]:
    """Where the chapter's run note starts, and its html (the whole ``<div>``, nested ones included)."""
    match = re.search(r'<div class="[^"]*\brun-info\b[^"]*">', dom)
    assert match, f"{page}: no run note (admonition with class 'run-info') in the chapter"
    depth = 0
    for tag in re.finditer(r"<(/?)div\b", dom[match.start() :]):
        depth += -1 if tag.group(1) else 1
        if depth == 0:
            return match.start(), dom[match.start() : match.start() + tag.end()]
    raise AssertionError(f"{page}: the run note's <div> is not closed")


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_run_note_and_downloads(
    page: str, smoke_run: Path, site: Path, server: str, build_paths: list[str], tmp_path: Path
) -> None:
    name = Path(page).name
    executed = nbformat.read(smoke_run / "executed" / f"{name}.ipynb", as_version=4)
    dom = _dump_dom(f"{server}/{page}.html", tmp_path / "chrome")
    start, note_html = _run_note(dom, page)
    h1 = dom.find("<h1")
    assert h1 < start < dom.find('<section id="', h1), f"{page}: the run note is not right below the title"
    note = html.unescape(re.sub(r"<[^>]+>", " ", note_html))
    machine, torch_version = describe_hardware(machine_hardware())
    expected = [
        "smoke",
        format_duration(executed.metadata.papermill.duration),
        machine,
        torch_version,
        f"notebooks/{name}.py",
        f"papermill - runs/{name}.ipynb",
        "--cwd notebooks",
        "-p profile smoke",
    ]
    missing = [e for e in expected if e not in " ".join(note.split())]
    assert not missing, f"{page}: the run note lacks {missing}:\n{' '.join(note.split())}"

    links = re.findall(r'<a class="reference download internal"[^>]*href="([^"]+)"', dom)
    by_suffix = {Path(link).suffix: link for link in links}
    assert sorted(by_suffix) == [".ipynb", ".py"], f"{page}: expected a .py and an .ipynb download, found {links}"
    base = f"{server}/{page}.html"
    fetched = {}
    for suffix, link in by_suffix.items():
        url = urllib.parse.urljoin(base, link)
        with urllib.request.urlopen(url) as response:
            assert response.status == 200, f"{page}: download {url} answers {response.status}"
            fetched[suffix] = response.read()
    assert fetched[".py"] == (ROOT / "notebooks" / f"{name}.py").read_bytes(), f"{page}: the .py is not the source"
    text = fetched[".ipynb"].decode()
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert sum(len(c.get("outputs", [])) for c in nb.cells) > 0, f"{page}: the downloaded .ipynb has no outputs"

    def code(notebook: nbformat.NotebookNode) -> list[str]:
        return [
            c.source
            for c in notebook.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
        ]

    assert code(nb) == code(executed), f"{page}: the .ipynb's code differs from the run's"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'profile = "smoke"' in injected[0].source, f"{page}: injected parameters missing"
    leaks = [p for p in build_paths if p in text]
    assert not leaks, f"{page}: the downloaded .ipynb holds absolute paths of the build machine: {leaks}"


def test_results_page_has_the_run_table(smoke_run: Path, site: Path, server: str, tmp_path: Path) -> None:
    dom = _dump_dom(f"{server}/book/generated/results.html", tmp_path / "chrome")
    section = re.search(r'<section id="what-each-chapter-cost-to-run">(.*?)</section>', dom, re.S)
    assert section, "results page: no section 'What each chapter cost to run'"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", section.group(1), re.S)[1:]
    assert len(rows) == len(CHAPTERS), f"results page: {len(rows)} rows in the run table, {len(CHAPTERS)} chapters"
    machine, _ = describe_hardware(machine_hardware())
    for page in CHAPTERS:
        name = Path(page).name
        row = [r for r in rows if f'href="../executed/{name}.html' in r]
        assert len(row) == 1, f"results page: no row of the run table links {page}"
        cells = [
            " ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split())
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row[0], re.S)
        ]
        executed = json.loads((smoke_run / "executed" / f"{name}.ipynb").read_text())
        seconds = executed["metadata"]["papermill"]["duration"]
        assert cells[1:4] == ["smoke", format_duration(seconds), machine], f"results page: row {cells} for {name}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_screenshot_offline(page: str, server: str, tmp_path: Path) -> None:
    """Written to test-output/book/ for a person to look at (math typeset, run note on top)."""
    _screenshot(f"{server}/{page}.html", SCREENSHOTS / f"{Path(page).name}.png", tmp_path / "chrome")


def test_intro_screenshot_offline(server: str, tmp_path: Path) -> None:
    _screenshot(f"{server}/book/intro.html", SCREENSHOTS / "intro.png", tmp_path / "chrome", size="1200,900")


def test_stand_alone_pages_are_linked_and_copied(site: Path) -> None:
    """Chapter pages link stand-alone pages (chapter 06's ranked lists) that tools/build_book.py copies in."""
    links = []
    for page in PAGES:
        html = (site / f"{page}.html").read_text()
        links += [(page, href) for href in re.findall(r'href="([^"#]*pages/[^"#]+)"', html)]
    assert links, "no chapter links a stand-alone page (chapter 06 links its ranked-list page)"
    for page, href in links:
        target = ((site / page).parent / href).resolve()
        assert target.is_file(), f"{page} links {href}, which is missing from the site"
        assert 'class="thumb"' in target.read_text(), f"{target} is not a ranked-list page"
