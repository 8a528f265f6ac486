"""The ranked-list page of ``reid rank``: one HTML file plus a folder of thumbnails, nothing from the network.

Each query is a row: its thumbnail, then its top-k gallery images with rank and distance. Where
file names carry identities (``{pid}_c{camera}...``) a green border marks the same identity and
a red one another; without names the border is grey. With a calibrated threshold each pair is
also marked *same* or *different*.

Safety: every file name and value is HTML-escaped (a file named
``<img src=x onerror=alert(1)>.jpg`` shows as text), the page links only to its own
``thumbs/`` folder, and a Content-Security-Policy allows no network request, no style or
script from elsewhere, and only the one inline script whose hash it names. That script counts
the thumbnails that loaded (``data-images-loaded`` / ``data-images-total`` on ``<body>``) and
shows a warning when some did not, e.g. when the page was copied without its ``thumbs/`` folder.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from reid_core.data import read_image
from reid_core.files import atomic_write_text

__all__ = ["RankedItem", "RankedQuery", "write_rank_page", "THUMBNAIL_HEIGHT"]

THUMBNAIL_HEIGHT = 128

_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.querySelectorAll("img.thumb");
  var loaded = 0;
  images.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { loaded += 1; } });
  document.body.setAttribute("data-images-loaded", String(loaded));
  document.body.setAttribute("data-images-total", String(images.length));
  if (loaded < images.length) {
    var banner = document.getElementById("broken");
    banner.textContent = (images.length - loaded) + " of " + images.length +
      " thumbnails did not load: keep the thumbs/ folder next to this page.";
    banner.hidden = false;
  }
});
"""

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
header p { margin: 0.2em 0; }
.legend span { display: inline-block; padding: 0 0.5em; margin-right: 0.5em; border: 3px solid; }
.row { display: flex; align-items: flex-start; gap: 6px; margin: 14px 0; padding-bottom: 10px;
       border-bottom: 1px solid #ddd; overflow-x: auto; }
figure { margin: 0; width: 84px; flex: none; font-size: 11px; text-align: center; }
figure.query { width: 96px; margin-right: 14px; }
img.thumb { height: 128px; max-width: 84px; object-fit: contain; border: 4px solid #999; background: #eee; }
figure.query img.thumb { border-color: #1f4e99; max-width: 96px; }
figure.match img.thumb { border-color: #1a9e3a; }
figure.nonmatch img.thumb { border-color: #d62728; }
figcaption { overflow-wrap: anywhere; }
.name { color: #555; }
.same { color: #1a9e3a; font-weight: bold; }
.different { color: #d62728; }
#broken { background: #fff3cd; border: 1px solid #d39e00; padding: 0.5em; }
"""


@dataclass
class RankedItem:
    """One gallery image in a query's list.

    Attributes:
        path: the image file.
        name: the name shown (path relative to its folder).
        distance: its distance to the query (the distance the list is sorted by).
        pid: identity from the file name, or ``None``.
        match: same identity as the query (``None`` when either is unknown).
        same_person: the calibrated decision, or ``None`` without a threshold.
    """

    path: Path
    name: str
    distance: float
    pid: int | None = None
    match: bool | None = None
    same_person: bool | None = None


@dataclass
class RankedQuery:
    """One query and its ranked gallery images."""

    path: Path
    name: str
    pid: int | None
    ranked: list[RankedItem]


def _thumbnail(source: Path, target: Path, height: int) -> None:
    """Save a JPEG of ``source`` resized to ``height`` pixels (aspect kept)."""
    image = read_image(str(source))  # (3, H, W) uint8; raises ImageLoadError naming the file
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    width = max(1, round(pil.width * height / pil.height))
    pil.resize((width, height), Image.Resampling.BICUBIC).save(target, quality=90)


def _script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def _figure(kind: str, thumb: str, name: str, caption_lines: Sequence[str], css: str = "") -> str:
    """One thumbnail with its caption; ``name`` is plain text, ``caption_lines`` are already-escaped HTML."""
    caption = "<br>".join(caption_lines)
    return (
        f'<figure class="{kind} {css}"><img class="thumb" src="{html.escape(thumb)}" alt="{html.escape(name)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def write_rank_page(
    out_dir: str | os.PathLike[str],
    queries: Sequence[RankedQuery],
    summary: Sequence[str],
    threshold_note: str | None = None,
    thumbnail_height: int = THUMBNAIL_HEIGHT,
) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/thumbs/*.jpg``.

    Args:
        out_dir: the output folder (created).
        queries: the ranked lists.
        summary: lines of plain text shown at the top (model, metric, counts); escaped here.
        threshold_note: how same/different was decided (plain text), or ``None``.
        thumbnail_height: thumbnail height in pixels.

    Returns:
        The page's path.
    """
    out = Path(out_dir)
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    thumb_of: dict[Path, str] = {}

    def thumb(path: Path) -> str:
        if path not in thumb_of:
            name = f"{len(thumb_of):06d}.jpg"
            _thumbnail(path, thumbs / name, thumbnail_height)
            thumb_of[path] = f"thumbs/{name}"
        return thumb_of[path]

    esc = html.escape
    rows = []
    for q in tqdm(queries, desc="rank page", unit="query", mininterval=2.0, leave=False):
        q_lines = ["<b>query</b>", f'<span class="name">{esc(q.name)}</span>']
        if q.pid is not None:
            q_lines.insert(1, f"pid {q.pid}")
        cells = [_figure("query", thumb(q.path), q.name, q_lines)]
        for rank, item in enumerate(q.ranked, start=1):
            lines = [f"#{rank} d={item.distance:.4f}"]
            if item.same_person is not None:
                word = "same" if item.same_person else "different"
                lines.append(f'<span class="{word}">{word}</span>')
            if item.pid is not None:
                lines.append(f"pid {item.pid}")
            lines.append(f'<span class="name">{esc(item.name)}</span>')
            css = {True: "match", False: "nonmatch", None: "unknown"}[item.match]
            cells.append(_figure("gallery", thumb(item.path), item.name, lines, css))
        rows.append(f'<div class="row">{"".join(cells)}</div>')
    csp = (
        f"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src '{_script_hash(_SCRIPT)}'; "
        "base-uri 'none'; form-action 'none'"
    )
    header = "".join(f"<p>{esc(line)}</p>" for line in summary)
    if threshold_note:
        header += f"<p>{esc(threshold_note)}</p>"
    legend = (
        '<p class="legend"><span style="border-color:#1a9e3a">same identity (from file names)</span>'
        '<span style="border-color:#d62728">other identity</span>'
        '<span style="border-color:#999">identity unknown</span></p>'
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="referrer" content="no-referrer">
<title>reid rank: ranked lists</title>
<style>{_STYLE}</style>
</head>
<body>
<header><h1>Ranked lists</h1>{header}{legend}<p id="broken" hidden></p></header>
<main>
{chr(10).join(rows)}
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""
    return atomic_write_text(out / "index.html", page)
