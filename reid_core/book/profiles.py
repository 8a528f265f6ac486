"""Run profiles of the notebooks: pick one by name and apply a reader's overrides, checked.

Every chapter defines ``PROFILES = {"smoke": {...}, "synth": {...}, "paper": {...}}`` (the
recipe of each run size) and takes ``profile`` and ``overrides`` as papermill parameters. A
misspelt profile or override key must stop the run at once with the valid choices, not be
ignored and leave the reader wondering why a change did nothing.

:func:`read_notebook_profiles` reads a notebook's ``PROFILES`` without running it, so a script
(``tools/train_ddp.py``) trains with the notebook's own recipe instead of a copy of it.

Chapters: all (the ``parameters`` cell of each notebook).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["read_notebook_profiles", "select_profile"]


def select_profile(
    profiles: Mapping[str, Mapping[str, Any]], profile: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The recipe of ``profile`` with ``overrides`` applied.

    Args:
        profiles: profile name -> recipe (setting name -> value).
        profile: the profile to run.
        overrides: settings to change; every key must be a setting of the profile.

    Returns:
        A new dict: the profile's settings, updated with the overrides.

    Raises:
        ValueError: for an unknown profile or override key (the message lists the valid ones).
        TypeError: when ``overrides`` is not a mapping (e.g. a JSON string from the command line).
    """
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {sorted(profiles)}")
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a dict of profile settings, got {type(overrides).__name__}: {overrides!r}")
    unknown = sorted(set(overrides) - set(profiles[profile]))
    if unknown:
        raise ValueError(f"overrides has unknown keys {unknown}; valid keys: {sorted(profiles[profile])}")
    return {**profiles[profile], **overrides}


def read_notebook_profiles(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The ``PROFILES`` dict of a notebook's source, read without running the notebook.

    The assignment ``PROFILES = {"smoke": dict(key=value, ...), ...}`` (or with ``{...}``
    literals) is parsed with :mod:`ast`; every value must be a Python literal.

    Args:
        path: the notebook's jupytext ``.py`` file.

    Returns:
        profile name -> recipe.

    Raises:
        ValueError: the file has no top-level ``PROFILES`` assignment, or a value is not a literal.
    """
    path = Path(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PROFILES" for t in node.targets):
            if not isinstance(node.value, ast.Dict):
                break
            profiles = {}
            for key, value in zip(node.value.keys, node.value.values):
                name = ast.literal_eval(key) if key is not None else None
                profiles[name] = _literal_recipe(value, path, name)
            return profiles
    raise ValueError(f"{path} has no top-level PROFILES = {{...}} assignment")


def _literal_recipe(node: ast.expr, path: Path, name: object) -> dict[str, Any]:
    """``dict(a=1, ...)`` or ``{"a": 1, ...}`` of literals -> the dict."""
    try:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
            return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
        recipe = ast.literal_eval(node)
    except ValueError as err:
        raise ValueError(f"{path}: profile {name!r} must hold only literal values ({err})") from err
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: profile {name!r} must be a dict, got {type(recipe).__name__}")
    return recipe
