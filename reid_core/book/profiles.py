"""Run profiles of the notebooks: pick one by name and apply a reader's overrides, checked.

Every chapter defines ``PROFILES = {"smoke": {...}, "synth": {...}, "paper": {...}}`` (the
recipe of each run size) and takes ``profile`` and ``overrides`` as papermill parameters. A
misspelt profile or override key must stop the run at once with the valid choices, not be
ignored and leave the reader wondering why a change did nothing; and an override must keep the
type of the setting (``{"epochs": 2.5}`` would otherwise run 3 epochs, ``{"epochs": "2"}`` fail
deep inside the trainer). A setting's types are those of its values in all the profiles
(``max_iters`` is 3 in one and ``None`` in another: it takes an int or None), under the rule of
:func:`reid_core.book.parameters.accepts` (an int stays an int, a float accepts an int).

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

from reid_core.book.parameters import accepts, describe_types

__all__ = ["read_notebook_profiles", "select_profile", "setting_types"]


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
        TypeError: when ``overrides`` is not a mapping (e.g. a JSON string from the command line),
            or an override's value has another type than the setting's (the message names both).
    """
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {sorted(profiles)}")
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a dict of profile settings, got {type(overrides).__name__}: {overrides!r}")
    unknown = sorted(set(overrides) - set(profiles[profile]))
    if unknown:
        raise ValueError(f"overrides has unknown keys {unknown}; valid keys: {sorted(profiles[profile])}")
    for key, value in overrides.items():
        types = setting_types(profiles, key)
        if not accepts(types, value):
            raise TypeError(
                f"overrides[{key!r}] must be {describe_types(types)} like the profiles' values "
                f"{[p.get(key) for p in profiles.values()]}, got {type(value).__name__} {value!r}"
            )
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


def setting_types(profiles: Mapping[str, Mapping[str, Any]], key: str) -> tuple[type, ...]:
    """The types a setting takes: those of its values in every profile (None included).

    Returns:
        e.g. ``(int, NoneType)``; empty (anything) when the setting is None in every profile.
    """
    types: list[type] = []
    for recipe in profiles.values():
        if key not in recipe:
            continue
        value = recipe[key]
        kind = type(value)
        if isinstance(value, tuple):
            kind = list  # a list from JSON replaces a tuple (accepts() takes either)
        elif isinstance(value, Mapping):
            kind = dict
        types.append(kind)
    if all(kind is type(None) for kind in types):
        return ()
    return tuple(dict.fromkeys(types))
