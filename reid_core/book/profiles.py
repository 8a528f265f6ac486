"""Run profiles of the notebooks: pick one by name and apply a reader's overrides, checked.

Every chapter defines ``PROFILES = {"smoke": {...}, "synth": {...}, "paper": {...}}`` (the
recipe of each run size) and takes ``profile`` and ``overrides`` as papermill parameters. A
misspelt profile or override key must stop the run at once with the valid choices, not be
ignored and leave the reader wondering why a change did nothing.

Chapters: all (the ``parameters`` cell of each notebook).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["select_profile"]


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
