"""The book builds offline from the smoke-profile notebooks, and every page loads in a browser.

The site is served on localhost and each page of the table of contents is loaded in headless
Chromium; the DOM after scripts ran must hold the page's title, its figures (notebook chapters
draw at least one) and its tables (the results page, the datasets page).
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.book

sys.path.insert(0, str(ROOT / "tools"))
from build_book import toc_files  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def site(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    stage = tmp_path_factory.mktemp("book")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_book.py"), "--stage", str(stage),
         "--executed-dir", str(smoke_run / "executed"), "--results-dir", str(smoke_run / "results")],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, f"book build failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    html = stage / "book" / "_build" / "html"
    assert (html / "index.html").is_file()
    return html


@pytest.fixture(scope="module")
def server(site: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium (apt-get install chromium)")
    return path


def _dump_dom(url: str, profile_dir: Path) -> str:
    result = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--virtual-time-budget=5000",
                             "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"chromium failed on {url}: {result.stderr[-2000:]}"
    return result.stdout


PAGES = toc_files(ROOT / "_toc.yml")


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_with_content(page: str, site: Path, server: str, tmp_path: Path) -> None:
    assert (site / f"{page}.html").is_file(), f"{page}.html was not built"
    dom = _dump_dom(f"{server}/{page}.html", tmp_path / "chrome")
    assert re.search(r"<h1[^>]*>", dom), f"{page}: no title in the rendered page"
    assert "Traceback (most recent call last)" not in dom, f"{page}: an error traceback is shown"
    n_img = len(re.findall(r"<img\b", dom))
    n_table = len(re.findall(r"<table\b", dom))
    if page.startswith("book/executed/"):
        assert n_img >= 1, f"{page}: a chapter must show at least one figure, found none"
        imgs = re.findall(r'<img[^>]+src="([^"]+)"', dom)
        for src in imgs:
            if not src.startswith("data:") and not src.startswith("http"):
                target = (site / page).parent / src
                assert target.resolve().is_file(), f"{page}: figure {src} is missing from the site"
    if page in ("book/generated/results", "book/datasets"):
        assert n_table >= 1, f"{page}: expected tables, found none"


def test_screenshot(server: str, tmp_path: Path) -> None:
    shot = tmp_path / "intro.png"
    result = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}",
                             f"--screenshot={shot}", "--window-size=1200,900", f"{server}/book/intro.html"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000, result.stderr[-2000:]


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
