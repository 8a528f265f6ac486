"""The notebooks' papermill parameters, checked: no misspelt name, no value of the wrong type.

A notebook declares its parameters in its first code cell (tagged ``parameters``) as plain
assignments of literals, ``seed = 0``. Papermill puts the values it is
given into a new cell right after that one, which begins with ``# Parameters``. Papermill only
warns about a name the notebook does not declare and never checks a type, so ``-p datset
market1501`` would train on the default dataset and file the results under its name, and
``-p seed abc`` would fail far into the run with a message that names no parameter. This module
checks both, in two places:

* before a run, from the notebook file (``tools/run_notebooks.py``): :func:`notebook_parameters`
  reads the declared parameters and :func:`check_parameters` checks the given ones;
* inside the notebook, for every other way of running it (papermill's own command line):
  :func:`check_injected_parameters` reads papermill's injected cell from the kernel's input
  history (IPython's ``In``) and checks its names and the values they hold.

**The type rule** (:func:`accepts`): a value must have the type of the default. An int stays
an int (not 2.5, not "2", not True); a float accepts an int; a bool only a bool; a str only a
str; a dict only a dict; a list or tuple either of the two. A default of ``None`` accepts
anything (the notebook checks such a value where it uses it, e.g. ``resolve_path``).

Chapters: all (the set-up cell of each notebook checks its parameters).
"""

from __future__ import annotations

import ast
import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INJECTED_MARKER",
    "Parameter",
    "accepts",
    "check_injected_parameters",
    "check_parameters",
    "describe_types",
    "notebook_parameters",
    "parse_parameters",
    "parse_parameter_text",
]

INJECTED_MARKER = "# Parameters"
"""The first line of the cell papermill injects after the ``parameters`` cell (Python kernels)."""


@dataclass(frozen=True)
class Parameter:
    """One declared parameter.

    Attributes:
        name: the variable name.
        default: the value the notebook assigns.
        types: the accepted types (:func:`accepts`); empty = anything (a ``None`` default).
    """

    name: str
    default: Any
    types: tuple[type, ...]


def accepts(types: Sequence[type], value: Any) -> bool:
    """Whether ``value`` fits ``types`` under the type rule of the module docstring.

    Args:
        types: accepted types; empty accepts anything.
        value: the value to check.
    """
    if not types:
        return True
    for kind in types:
        if kind in (int, float) and isinstance(value, bool):
            continue  # True is an int to Python, not to a reader
        if kind is float and isinstance(value, int):
            return True
        if kind is dict and isinstance(value, Mapping):
            return True
        if kind in (list, tuple) and isinstance(value, (list, tuple)):
            return True
        if isinstance(value, kind):  # bool, int, float, str, NoneType, any other type
            return True
    return False


def describe_types(types: Sequence[type]) -> str:
    """``(int,)`` -> ``"an int"``, ``(str, NoneType)`` -> ``"a str or None"``."""
    names = ["None" if kind is type(None) else kind.__name__ for kind in dict.fromkeys(types)]
    if not names:
        return "anything"
    first = names[0]
    article = "" if first == "None" else ("an " if first[0] in "aeiou" else "a ")
    return article + " or ".join(names)


def _types_of_default(default: Any) -> tuple[type, ...]:
    if default is None:
        return ()
    for kind in (bool, int, float, str):
        if isinstance(default, kind):
            return (kind,)
    if isinstance(default, Mapping):
        return (dict,)
    if isinstance(default, (list, tuple)):
        return (list,)
    return (type(default),)


def parse_parameters(source: str, where: str = "parameters cell") -> dict[str, Parameter]:
    """The parameters a ``parameters`` cell declares.

    Args:
        source: the cell's code: one ``name = literal`` per statement (comments allowed).
        where: names the cell in error messages.

    Returns:
        name -> :class:`Parameter`, in the order of the cell.

    Raises:
        ValueError: a statement that is not such an assignment, or a value that is not a literal.
    """
    declared: dict[str, Parameter] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0], node.value
        else:
            raise ValueError(f"{where} line {node.lineno}: expected 'name = literal', got {ast.unparse(node)!r}")
        try:
            default = ast.literal_eval(value)
        except ValueError as error:
            raise ValueError(
                f"{where} line {node.lineno}: the value of {target.id!r} is not a literal ({ast.unparse(value)!r})"
            ) from error
        declared[target.id] = Parameter(target.id, default, _types_of_default(default))
    return declared


def notebook_parameters(path: str | os.PathLike[str]) -> dict[str, Parameter]:
    """The parameters declared by a notebook file (jupytext ``.py`` or ``.ipynb``).

    Raises:
        ValueError: the notebook has no code cell tagged ``parameters``, or it does not parse.
    """
    import jupytext

    notebook = jupytext.read(path)
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return parse_parameters(cell.source, where=f"{os.fspath(path)}: parameters cell")
    raise ValueError(f"{os.fspath(path)} has no code cell tagged 'parameters'")


def parse_parameter_text(text: str, parameter: Parameter | None) -> Any:
    """A command-line value (``-p name text``) as the parameter's type.

    JSON when it parses (numbers, booleans, ``null``, lists, dicts), else the text; a parameter
    that takes a str gets the text as it is (``-p data_root 2024`` is the folder "2024").
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    if parameter is not None and str in parameter.types and not accepts(parameter.types, value):
        return text
    return value


def _unknown_message(unknown: Sequence[str], declared: Mapping[str, Parameter], where: str) -> str:
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(declared), n=1)
        if close:
            hints.append(f"{name!r}: did you mean {close[0]!r}?")
    return (
        f"{where}: unknown parameter(s) {sorted(unknown)}; valid parameters: {list(declared)}. "
        + (" ".join(hints) + " " if hints else "")
        + 'A profile setting (epochs, lr, ...) is changed through overrides, e.g. overrides={"epochs": 1}.'
    )


def check_parameters(given: Mapping[str, Any], declared: Mapping[str, Parameter], where: str) -> None:
    """Check that every given parameter is declared and has the declared type.

    Args:
        given: name -> value, as papermill would inject them.
        declared: from :func:`notebook_parameters` or :func:`parse_parameters`.
        where: names the notebook in error messages.

    Raises:
        ValueError: an unknown name (the message lists the valid ones and a close match).
        TypeError: a value of the wrong type (the message names the parameter and the type).
    """
    unknown = [name for name in given if name not in declared]
    if unknown:
        raise ValueError(_unknown_message(unknown, declared, where))
    for name, value in given.items():
        parameter = declared[name]
        if not accepts(parameter.types, value):
            raise TypeError(
                f"{where}: parameter {name!r} must be {describe_types(parameter.types)} "
                f"(its default is {parameter.default!r}), got {type(value).__name__} {value!r}"
            )


def _injected_names(source: str) -> list[str]:
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def check_injected_parameters(namespace: Mapping[str, Any]) -> None:
    """Inside a notebook: check the parameters papermill injected (call it right after them).

    Finds the last cell of the kernel's input history (``In``) that begins with
    :data:`INJECTED_MARKER`; the cell run just before it is the ``parameters`` cell. Every
    injected name must be declared there, and every declared name must hold a value of its
    type. Without an injected cell (the notebook run by hand) there is nothing to check.

    Args:
        namespace: the notebook's ``globals()``.

    Raises:
        ValueError: an injected name the ``parameters`` cell does not declare.
        TypeError: a parameter holding a value of the wrong type.
    """
    history = namespace.get("In")
    if not isinstance(history, list):
        return
    injected = [i for i, source in enumerate(history) if source.lstrip().startswith(INJECTED_MARKER)]
    if not injected:
        return
    index = injected[-1]
    declared = parse_parameters(history[index - 1], where="the parameters cell") if index > 0 else {}
    if not declared:
        raise ValueError(
            "papermill injected parameters, but the cell run before them declares none: "
            "tag the notebook's first code cell 'parameters'"
        )
    values = {name: namespace[name] for name in declared if name in namespace}
    given = {name: namespace.get(name) for name in _injected_names(history[index])}
    check_parameters({**values, **given}, declared, where="papermill parameters")
