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


def test_read_notebook_profiles_reads_the_recipe_without_running_the_notebook(tmp_path) -> None:
    from reid_core.book.profiles import read_notebook_profiles

    source = tmp_path / "nb.py"
    source.write_text(
        "import torch\n"
        "profile = 'synth'\n"
        "PROFILES = {'smoke': dict(epochs=2, milestones=(), lr=3.5e-4), 'synth': {'epochs': 16, 'milestones': (12,)}}\n"
        "cfg = PROFILES[profile]\n"
    )
    assert read_notebook_profiles(source) == {
        "smoke": {"epochs": 2, "milestones": (), "lr": 3.5e-4},
        "synth": {"epochs": 16, "milestones": (12,)},
    }
    source.write_text("PROFILES = {'paper': dict(epochs=EPOCHS)}\n")
    with pytest.raises(ValueError, match="profile 'paper' must hold only literal values"):
        read_notebook_profiles(source)
    source.write_text("profiles = {}\n")
    with pytest.raises(ValueError, match="no top-level PROFILES"):
        read_notebook_profiles(source)


def test_chapter_01_profiles_hold_what_the_torchrun_script_reads() -> None:
    from conftest import ROOT

    from reid_core.book.profiles import read_notebook_profiles

    profiles = read_notebook_profiles(ROOT / "notebooks" / "01_reid_basics.py")
    needed = {
        "preset",
        "backbone",
        "pretrained",
        "height",
        "width",
        "epochs",
        "batch_size",
        "num_instances",
        "lr",
        "warmup_epochs",
        "milestones",
        "max_iters",
    }
    for name in ("smoke", "synth", "paper"):
        assert needed <= set(profiles[name]), f"{name} misses {needed - set(profiles[name])}"
    assert profiles["paper"]["batch_size"] == 64 and profiles["paper"]["num_instances"] == 4  # P=16 x K=4
