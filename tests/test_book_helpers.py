"""reid_core.book's helpers the notebooks share: device and checkpoint paths, the papers' table format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reid_core.book import PaperResult, checkpoint_dir, format_mean_std, paper_results_markdown, resolve_device


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be 'auto'"):
        resolve_device("gpu0")


def test_checkpoint_dir_only_for_the_paper_profile(tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert checkpoint_dir(results, "03_alignedreid", "market1501", "synth") is None
    assert checkpoint_dir(results, "03_alignedreid", "market1501", "smoke") is None
    got = checkpoint_dir(results, "03_alignedreid", "market1501", "paper")
    assert Path(got) == tmp_path / "checkpoints" / "03_alignedreid" / "market1501"


def test_paper_results_markdown_one_row_per_figure() -> None:
    rows = [
        PaperResult("w", "A", "Market", "Market", 94.5, 85.9, source="paper, Table 1", note="with center loss"),
        PaperResult("w", "B", "Duke", "Duke", None, 70.0, reranked=True, source="code README"),
    ]
    lines = paper_results_markdown(rows).splitlines()
    assert lines[0].count("|") == lines[1].count("|") == 9  # 8 columns
    assert lines[2] == "| paper, Table 1 | A | Market | Market | no | 94.5 | 85.9 | with center loss |"
    assert lines[3] == "| code README | B | Duke | Duke | yes | – | 70.0 |  |"
    assert len(lines) == 4


def test_format_mean_std() -> None:
    assert format_mean_std([1.0, 3.0]) == "2.0 ± 1.0"
    assert format_mean_std([2.25]) == "2.2"
    assert format_mean_std([float("nan")]) == "–"
