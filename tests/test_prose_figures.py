"""No result figure typed into a chapter's prose: every measured number must come from the run.

A chapter's markdown cells may hold numbers that are not results of our runs: the papers' own
figures (cited on the same line, or in the chapter's entries of ``PAPER_RESULTS``), the recipe's
settings and formula constants (they appear in the notebook's code too), worked examples
(ditto: the code checks them). Anything else that looks like a measurement (a decimal number, a
percentage, "N points") is a typed result: it would go stale on the next run, so the test fails
and names the notebook, the line and the number. Results reach the prose through generated
markdown (a code cell that prints the sentence from the run's numbers).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reid_core.book.paper_results import PAPER_RESULTS
from reid_core.book.results import CHAPTERS

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0[1-6]_*.py"))

# A figure that reads as a measurement: 30.0, 34.1%, 12%, "3 points".
FIGURE = re.compile(r"(?<![\w.])(\d+\.\d+|\d+(?=\s*%)|\d+(?:\.\d+)?(?=\s*(?:points?|pp)\b))")
# The coverage of an interval ("95% interval", "95% CI") is a setting of the method, not a result.
INTERVAL_LEVEL = re.compile(r"\s*%\s*(?:confidence|interval|CI)\b")
# What is not prose: display and inline math, inline code, roles such as {cite}`key`, links' targets.
NOT_PROSE = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`|\]\([^)]*\)", re.DOTALL)


def markdown_and_code(source: str) -> tuple[list[tuple[int, str]], str]:
    """The markdown lines (number, text without the comment mark) and all code of a percent-format notebook."""
    markdown: list[tuple[int, str]] = []
    code: list[str] = []
    in_markdown = False
    for number, line in enumerate(source.splitlines(), start=1):
        if line.startswith("# %%"):
            in_markdown = "[markdown]" in line
            continue
        if in_markdown:
            markdown.append((number, line[2:] if line.startswith("# ") else line.lstrip("#")))
        else:
            code.append(line)
    return markdown, "\n".join(code)


def paper_figures(stem: str) -> set[float]:
    """The chapter's papers' numbers (rank-1, mAP, rank-5, rank-10) from ``PAPER_RESULTS``."""
    work = CHAPTERS[stem][1]
    values: set[float] = set()
    for p in PAPER_RESULTS:
        if p.work == work:
            values |= {float(v) for v in (p.rank1, p.mAP, p.rank5, p.rank10) if v is not None}
    return values


def typed_figures(path: Path) -> list[str]:
    """``"line N: figure in 'text'"`` for each figure in the prose that is not a paper's or the code's."""
    markdown, code = markdown_and_code(path.read_text())
    papers = paper_figures(path.stem)
    code_numbers = set(re.findall(r"\d+(?:\.\d+)?", code))
    found = []
    joined = "\n".join(text for _, text in markdown)
    joined_clean = NOT_PROSE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), joined)  # keep the line breaks
    for (number, original), clean in zip(markdown, joined_clean.split("\n"), strict=True):
        if "{cite}" in original:  # a paper's fact, cited where it is stated
            continue
        for match in FIGURE.finditer(clean):
            figure = match.group(1)
            if figure in code_numbers or float(figure) in papers:
                continue
            if INTERVAL_LEVEL.match(clean, match.end()):  # "95% interval": a setting, not a result
                continue
            found.append(f"line {number}: {figure} in {original.strip()!r}")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_typed_result_figures(path):
    found = typed_figures(path)
    assert not found, (
        f"{path.name} types result figures into its prose (print them from the run instead, "
        f"or cite the paper on the same line):\n" + "\n".join(found)
    )


def test_the_check_finds_a_typed_figure(tmp_path):
    page = tmp_path / "01_reid_basics.py"
    page.write_text(
        "# %% [markdown]\n"
        "# The baseline reaches 30.0 rank-1 here, 4 points above the histogram; $x = 0.5$ is math.\n"
        "# Means come with a 95% interval.\n"
        "# BoT reaches 94.1 {cite}`luo2019bag`.\n"
        "# %%\n"
        "margin = 0.3\n"
        "# %% [markdown]\n"
        "# A margin of 0.3 and `lr=3.5` in code.\n"
    )
    found = typed_figures(page)
    assert [f.split(":")[1].split()[0] for f in found] == ["30.0", "4"]
