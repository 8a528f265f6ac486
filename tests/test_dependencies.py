"""pyproject.toml declares what reid_core imports, no more and no less, and the pins fit the ranges.

The source of reid_core is read with ``ast``: every ``import`` / ``from ... import`` of a
third-party module, and every ``require_optional("module", "extra")`` call, is mapped to its
distribution with ``importlib.metadata.packages_distributions()``. Rules:

* an import at module level runs when reid_core's module is imported: its distribution must be
  a core dependency;
* an import inside a function may come from an extra (or the core);
* ``require_optional(module, extra)`` must name an extra that holds the module's distribution;
* every core dependency is imported somewhere (no stale entry);
* every requirement has a version range, and the pins of requirements.txt satisfy it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
import sys
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib
from conftest import ROOT
from packaging.requirements import Requirement

PACKAGE = ROOT / "reid_core"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class ImportSite:
    module: str  # top-level module name
    file: str
    line: int
    module_level: bool
    extra: str | None = None  # for require_optional(module, extra)


def _import_sites(source: Path) -> list[ImportSite]:
    tree = ast.parse(source.read_text(), filename=str(source))
    sites: list[ImportSite] = []
    rel = str(source.relative_to(ROOT))

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                sites.extend(ImportSite(a.name.split(".")[0], rel, child.lineno, not in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                sites.append(ImportSite(child.module.split(".")[0], rel, child.lineno, not in_function))
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Name)
                and child.func.id == "require_optional"
                and len(child.args) == 2
                and all(isinstance(a, ast.Constant) for a in child.args)
            ):
                module, extra = (a.value for a in child.args)  # type: ignore[attr-defined]
                sites.append(ImportSite(module.split(".")[0], rel, child.lineno, False, extra))
            visit(child, inside)

    visit(tree, False)
    return sites


@functools.cache
def _third_party_sites() -> list[ImportSite]:
    sites = [s for path in sorted(PACKAGE.rglob("*.py")) for s in _import_sites(path)]
    return [
        s
        for s in sites
        if s.module not in sys.stdlib_module_names and s.module != "reid_core" and s.module != "__future__"
    ]


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def requirements(project: dict) -> tuple[dict[str, Requirement], dict[str, dict[str, Requirement]]]:
    core = {_normalise(Requirement(r).name): Requirement(r) for r in project["dependencies"]}
    extras = {
        name: {_normalise(Requirement(r).name): Requirement(r) for r in reqs}
        for name, reqs in project["optional-dependencies"].items()
    }
    return core, extras


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()  # scans every installed distribution: once


def _distribution(module: str) -> str:
    dists = _distributions().get(module)
    assert dists, (
        f"module {module!r} imported by reid_core is not installed here, so its distribution is unknown; "
        "install the pinned requirements (requirements.txt)"
    )
    return _normalise(dists[0])


def test_the_walk_finds_imports_at_both_levels() -> None:
    """The collector itself: a module-level import, a function-level one, and a require_optional call."""
    sites = _third_party_sites()
    by_module = {(s.module, s.module_level) for s in sites}
    assert ("torch", True) in by_module
    assert ("pyarrow", False) in by_module  # reid extract imports it inside a function
    assert any(s.module == "onnxruntime" and s.extra == "onnx" for s in sites)


def test_module_level_imports_are_core_dependencies(requirements) -> None:
    core, _ = requirements
    missing = sorted(
        {
            f"{_distribution(s.module)} ({s.file}:{s.line})"
            for s in _third_party_sites()
            if s.module_level and _distribution(s.module) not in core
        }
    )
    assert not missing, f"imported at module level but not in [project].dependencies: {missing}"


def test_function_level_imports_are_declared(requirements) -> None:
    core, extras = requirements
    declared = set(core) | {name for reqs in extras.values() for name in reqs}
    missing = sorted(
        {
            f"{_distribution(s.module)} ({s.file}:{s.line})"
            for s in _third_party_sites()
            if _distribution(s.module) not in declared
        }
    )
    assert not missing, f"imported by reid_core but declared nowhere in pyproject.toml: {missing}"


def test_require_optional_names_the_right_extra(requirements) -> None:
    _, extras = requirements
    wrong = [
        f"{s.file}:{s.line} require_optional({s.module!r}, {s.extra!r})"
        for s in _third_party_sites()
        if s.extra is not None and _distribution(s.module) not in extras.get(s.extra, {})
    ]
    assert not wrong, f"these calls name an extra that does not hold the module's distribution: {wrong}"


def test_every_core_dependency_is_imported(requirements) -> None:
    core, _ = requirements
    used = {_distribution(s.module) for s in _third_party_sites()}
    stale = sorted(set(core) - used)
    assert not stale, f"[project].dependencies lists {stale}, which reid_core never imports"


def test_every_requirement_has_a_range_that_the_pins_satisfy(requirements) -> None:
    core, extras = requirements
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[_normalise(req.name)] = next(iter(req.specifier)).version
    for group, reqs in [("dependencies", core)] + [(f"extra {k}", v) for k, v in extras.items()]:
        for name, req in reqs.items():
            operators = {spec.operator for spec in req.specifier}
            assert operators & {">=", "~=", "=="}, f"{group}: {req} has no lower bound"
            assert operators & {"<", "<=", "~=", "=="}, f"{group}: {req} has no upper bound"
            assert name in pins, f"{group}: {name} is not pinned in requirements.txt"
            assert req.specifier.contains(pins[name], prereleases=True), (
                f"{group}: the pin {name}=={pins[name]} lies outside {req.specifier}"
            )


def test_console_script_resolves(project: dict) -> None:
    target = project["scripts"]["reid"]
    module_name, function = target.split(":")
    assert callable(getattr(importlib.import_module(module_name), function))
