"""The package's layout holds: imports run downward, chapters are leaves, facades list every public name,
and notebooks import through the facades.

Floors, from the ground up: ``arrays``, ``modes``, ``collectives`` and ``files`` (import nothing of reid_core); the
concept packages (``data``, ``samplers``, ``losses``, ``models``, ``alignment``, ``evaluation``);
``engine``; ``book``; ``chapters``. A module may import from its own floor or below.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "reid_core"
FLOORS = {
    "arrays": 0,
    "modes": 0,
    "collectives": 0,
    "files": 0,
    "data": 1,
    "samplers": 1,
    "losses": 1,
    "models": 1,
    "alignment": 1,
    "evaluation": 1,
    "engine": 2,
    "book": 3,
    "export": 3,
    "chapters": 4,
    "cli": 4,
    "__main__": 5,
}
FACADES = [
    "data",
    "samplers",
    "losses",
    "models",
    "alignment",
    "evaluation",
    "engine",
    "book",
    "chapters.basics",
    "chapters.metric_learning",
    "chapters.alignedreid",
    "chapters.ensemblenet",
    "chapters.graph_sampling",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _reid_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``reid_core`` import in a file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "reid_core":
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "reid_core"]
    return found


def _top(module: str) -> str:
    """``reid_core.evaluation.rank`` -> ``evaluation``."""
    return module.split(".")[1]


LIBRARY_FILES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_top_level_module_has_a_floor() -> None:
    tops = {_top(_module_name(p)) for p in LIBRARY_FILES}
    assert tops <= set(FLOORS), f"modules outside the known floors: {sorted(tops - set(FLOORS))}"


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_downward(path: Path) -> None:
    here = _module_name(path)
    floor = FLOORS[_top(here)]
    for line, module in _reid_imports(path):
        if module == "reid_core":
            continue
        target = _top(module)
        assert FLOORS[target] <= floor or target == _top(here), (
            f"{path.relative_to(ROOT)}:{line} imports {module} (floor {FLOORS[target]}) from floor {floor}"
        )
        if FLOORS[_top(here)] == 0:
            pytest.fail(f"{path.relative_to(ROOT)}:{line}: the ground floor imports nothing of reid_core")


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_chapter_imports_another(path: Path) -> None:
    here = _module_name(path).split(".")
    if here[1] != "chapters" or len(here) < 3:
        return
    for line, module in _reid_imports(path):
        parts = module.split(".")
        if parts[1] == "chapters":
            assert parts[2] == here[2], f"{path.relative_to(ROOT)}:{line} imports another chapter: {module}"


@pytest.mark.parametrize("facade", FACADES)
def test_facades_list_every_public_name(facade: str) -> None:
    package = importlib.import_module(f"reid_core.{facade}")
    folder = PACKAGE.joinpath(*facade.split("."))
    exported = set(package.__all__)
    for path in sorted(folder.glob("*.py")) + sorted(folder.glob("*/__init__.py")):
        if path.name == "__init__.py" and path.parent == folder:
            continue
        module = importlib.import_module(_module_name(path))
        public = getattr(module, "__all__", None)
        assert public is not None, f"{path.relative_to(ROOT)} has no __all__"
        for name in public:
            assert name in exported, f"reid_core.{facade}.__all__ misses {name} (from {module.__name__})"
            assert getattr(package, name) is getattr(module, name), f"reid_core.{facade}.{name} is another object"
    for name in exported:
        assert hasattr(package, name), f"reid_core.{facade}.__all__ names a missing {name}"


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.py")), ids=lambda p: p.name)
def test_notebooks_import_through_facades(notebook: Path) -> None:
    facades = {f"reid_core.{f}" for f in FACADES} | {"reid_core.cli"}  # the command's one public name: main
    for line, module in _reid_imports(notebook):
        assert module in facades, f"{notebook.name}:{line} imports {module}; import from one of {sorted(facades)}"


def test_nothing_points_outside_the_repository() -> None:
    """Docstrings and notebooks cite references.bib or book pages, not the developers' notes."""
    for folder in ("reid_core", "notebooks", "tests", "bench", "tools", "book"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md") and path != Path(__file__):
                text = path.read_text()
                for name in ("papers" + ".md", "DESIGN" + ".md"):
                    assert name not in text, (
                        f"{path.relative_to(ROOT)} refers to {name}, which is not in the repository"
                    )
