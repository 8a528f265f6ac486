"""Results JSON files and the results page."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reid_core.book.evidence import Claim, load_claims, write_claims
from reid_core.book.paper_results import PAPER_RESULTS, paper_results_for
from reid_core.book.results import RESULT_FIELDS, load_results, render_results_page, write_result
from reid_core.engine.evaluate import metrics_from_cmc


def test_write_and_load_roundtrip(tmp_path):
    path = write_result(
        tmp_path,
        "01_reid_basics",
        "baseline",
        method="BoT",
        dataset="synthreid",
        profile="smoke",
        rank1=50.0,
        rank5=70.0,
        rank10=80.0,
        mAP=40.0,
        train_seconds=3.2,
        device="cpu",
        params={"epochs": np.int64(2)},
        test_dataset="synthreid_b",
    )
    assert path == tmp_path / "01_reid_basics" / "baseline.json"
    record = json.loads(path.read_text())
    assert (
        set(RESULT_FIELDS) <= set(record)
        and record["params"] == {"epochs": 2}
        and record["test_dataset"] == "synthreid_b"
    )
    loaded = load_results(tmp_path)
    assert len(loaded) == 1 and loaded[0]["rank1"] == 50.0


def test_write_result_validates(tmp_path):
    with pytest.raises(ValueError, match="run name"):
        write_result(tmp_path, "nb", "a b", method="m", dataset="d", profile="smoke", rank1=1, mAP=1)
    with pytest.raises(ValueError, match="rank1"):
        write_result(tmp_path, "nb", "r", method="m", dataset="d", profile="smoke", rank1=0.5e3, mAP=1)


def test_load_results_names_bad_file(tmp_path):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "x.json").write_text(json.dumps({"notebook": "nb"}))
    with pytest.raises(ValueError, match="x.json.*missing fields"):
        load_results(tmp_path)


def test_metrics_from_cmc():
    cmc = np.linspace(0.5, 1.0, 20)
    m = metrics_from_cmc(cmc, 0.25)
    assert m == pytest.approx({"rank1": 50.0, "rank5": cmc[4] * 100, "rank10": cmc[9] * 100, "mAP": 25.0})


def test_results_page_tables_runs_beside_papers(tmp_path):
    write_result(
        tmp_path,
        "03_alignedreid",
        "global",
        method="global only",
        dataset="synthreid",
        profile="synth",
        rank1=61.25,
        mAP=40.0,
    )
    page = render_results_page(load_results(tmp_path))
    assert "| global only | synthreid | synth | 1 | 61.2 |" in page  # our run, formatted (one run)
    for p in paper_results_for("alignedreid"):
        assert p.method in page
    assert "No runs yet" in page  # chapters without runs say so
    assert "No claims measured yet" in page
    assert page.count("\n## ") == 7  # the claims section, then one section per chapter, 01 to 06


def test_results_page_gathers_seeds_and_claims(tmp_path):
    for seed, (r1, m) in enumerate([(60.0, 40.0), (62.0, 41.0), (64.0, 42.0)]):
        write_result(
            tmp_path,
            "01_reid_basics",
            f"baseline_seed{seed}",
            method="baseline",
            dataset="s",
            profile="synth",
            rank1=r1,
            mAP=m,
            seed=seed,
        )
    # mean 62, sd 2, t(0.975, 2) = 4.3027 -> half width 4.3027 * 2 / sqrt(3) = 4.968
    claims = [Claim.from_seeds("01_reid_basics", "BNNeck helps", "+2 (Table 2)", "rank-1", [3, 4, 5], [1, 1, 1])]
    write_claims(tmp_path, "01_reid_basics", claims)
    records = load_results(tmp_path)  # the claims folder is not a notebook's runs
    assert len(records) == 3
    page = render_results_page(records, claims=load_claims(tmp_path))
    assert "| baseline | s | synth | 3 | 62.0 [57.0, 67.0] |" in page
    assert "| 01_reid_basics | BNNeck helps | +2 (Table 2) | rank-1 | +3.0 [+0.5, +5.5] | 3 | shown |" in page
    assert "Of 1 claims: 1 shown, 0 not shown, 0 reversed." in page


def test_paper_results_lookup():
    assert all(
        r.work in {"basics", "metric_learning", "alignedreid", "ensemblenet", "graph_sampling"} for r in PAPER_RESULTS
    )
    with pytest.raises(ValueError, match="valid"):
        paper_results_for("nope")
