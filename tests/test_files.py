"""Atomic writes: the new content or the old file, never a partial one, and no temporary file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from reid_core.files import atomic_write, atomic_write_text


def test_writes_the_content_and_creates_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.json"
    assert atomic_write_text(target, "héllo\n") == target
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]
    atomic_write(target, lambda handle: handle.write(b"new"), sync=True)
    assert target.read_bytes() == b"new"


def test_a_failing_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")

    def half_then_fail(handle) -> None:
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
