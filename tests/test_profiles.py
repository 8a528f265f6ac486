"""select_profile: the notebooks' profile + overrides check."""

from __future__ import annotations

import pytest

from reid_core.book.profiles import select_profile

PROFILES = {"smoke": {"epochs": 1, "lr": 1e-3}, "synth": {"epochs": 8, "lr": 2e-3}}


def test_overrides_replace_only_their_keys_and_leave_the_table_alone() -> None:
    cfg = select_profile(PROFILES, "synth", {"epochs": 3})
    assert cfg == {"epochs": 3, "lr": 2e-3}
    assert PROFILES["synth"] == {"epochs": 8, "lr": 2e-3}  # a copy, not the table's dict
    assert select_profile(PROFILES, "smoke") == {"epochs": 1, "lr": 1e-3}
    assert select_profile(PROFILES, "smoke", {}) is not PROFILES["smoke"]


def test_unknown_profile_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown profile 'papr'; valid profiles: \['smoke', 'synth'\]"):
        select_profile(PROFILES, "papr")


def test_unknown_override_key_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['epoch'\]; valid keys: \['epochs', 'lr'\]"):
        select_profile(PROFILES, "synth", {"epoch": 3})


def test_overrides_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="overrides must be a dict"):
        select_profile(PROFILES, "synth", '{"epochs": 3}')  # type: ignore[arg-type]
