"""The protocol checks catch each mistake in a set-up built with it, and measure it against brute force."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reid_fixtures import TinyWorld, tiny_world_fixture  # noqa: F401  (the tiny_world fixture)

from reid_core.cli.main import main
from reid_core.engine.evaluate import evaluate_distance
from reid_core.engine.features import Features
from reid_core.evaluation.protocol import ProtocolError, check_protocol


def brute_metrics(dist: np.ndarray, qp, gp, qc, gc, rule: bool = True) -> dict[str, float]:
    """Rank-1 and mAP (percent) by sorting each row: junk dropped, same-id same-camera dropped if ``rule``."""
    firsts, aps = [], []
    for i in range(len(qp)):
        keep = gp != -1
        if rule:
            keep &= ~((gp == qp[i]) & (gc == qc[i]))
        index = np.flatnonzero(keep)
        order = index[np.argsort(dist[i, index], kind="stable")]
        hits = gp[order] == qp[i]
        if hits.any():
            ranks = np.flatnonzero(hits) + 1
            aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
            firsts.append(bool(hits[0]))
    return {"rank1": 100 * float(np.mean(firsts)), "mAP": 100 * float(np.mean(aps)), "queries": float(len(aps))}


def assert_metrics(got: dict[str, float] | None, expected: dict[str, float]) -> None:
    assert got is not None
    for key in ("rank1", "mAP", "queries"):
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def write_image(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture()
def clean_set(tmp_path: Path) -> dict:
    """4 query identities x 1 image (camera 0); gallery: 2 images each from cameras 1 and 2, plus 2 distractors."""
    rng = np.random.default_rng(0)
    q_items, g_items = [], []
    for pid in (1, 2, 3, 4):
        q_items.append((write_image(tmp_path / "query" / f"{pid:04d}_c1_q.png", pid), pid, 0))
        for k, cam in enumerate((1, 2)):
            image = write_image(tmp_path / "gallery" / f"{pid:04d}_c{cam + 1}_{k}.png", 100 * pid + k)
            g_items.append((image, pid, cam))
    for k in range(2):
        g_items.append((write_image(tmp_path / "gallery" / f"0000_c2_{k}.png", 999 + k), 0, 1))
    dist = rng.random((len(q_items), len(g_items)))
    return {"q": q_items, "g": g_items, "dist": dist, "root": tmp_path}


def arrays(items: list) -> tuple[list[str], np.ndarray, np.ndarray]:
    return [p for p, _, _ in items], np.array([p for _, p, _ in items]), np.array([c for _, _, c in items])


def run_check(q_items: list, g_items: list, dist: np.ndarray, **kwargs: object):  # noqa: ANN201
    qpaths, qp, qc = arrays(q_items)
    gpaths, gp, gc = arrays(g_items)
    return check_protocol(qp, gp, qc, gc, q_paths=qpaths, g_paths=gpaths, distmat=dist, **kwargs)


def test_a_clean_set_has_no_finding(clean_set: dict) -> None:
    report = run_check(clean_set["q"], clean_set["g"], clean_set["dist"])
    assert report.findings == []
    assert "train_test_overlap" in report.checks_not_run  # nothing about training was given
    assert set(report.checks_run) == {"junk_labels", "query_in_gallery", "queries_without_match", "same_camera_matches"}


def test_a_query_copied_into_the_gallery_is_found_and_measured(clean_set: dict) -> None:
    q, g, root = clean_set["q"], list(clean_set["g"]), clean_set["root"]
    copy = root / "gallery" / "0001_c3_copy.png"  # the first query's bytes, another camera: a free hit
    shutil.copy(q[0][0], copy)
    g.append((str(copy), 1, 2))
    dist = np.hstack([clean_set["dist"], np.full((4, 1), 0.5)])
    dist[0, -1] = 0.0  # the copy is at distance 0 from its query
    report = run_check(q, g, dist)
    (finding,) = report.by_check("query_in_gallery")
    assert finding.severity == "severe" and finding.count == 1 and "0001_c3_copy.png" in finding.examples[0]
    _, qp, qc = arrays(q)
    _, gp, gc = arrays(g)
    assert_metrics(finding.metrics_as_run, brute_metrics(dist, qp, gp, qc, gc))
    assert_metrics(finding.counterfactual_metrics, brute_metrics(dist[:, :-1], qp, gp[:-1], qc, gc[:-1]))
    assert finding.metrics_as_run["mAP"] > finding.counterfactual_metrics["mAP"]  # the copy inflated it
    with pytest.raises(ProtocolError, match="query_in_gallery"):
        report.raise_if_severe()


def test_a_copy_the_rule_removes_is_only_a_warning(clean_set: dict) -> None:
    q, g, root = clean_set["q"], list(clean_set["g"]), clean_set["root"]
    copy = root / "gallery" / "0002_c1_copy.png"  # same identity, same camera as its query: the rule drops it
    shutil.copy(q[1][0], copy)
    g.append((str(copy), 2, 0))
    dist = np.hstack([clean_set["dist"], np.full((4, 1), 2.0)])  # farther than everything for the others
    dist[1, -1] = 0.0
    report = run_check(q, g, dist)
    (finding,) = report.by_check("query_in_gallery")
    assert finding.severity == "warning" and "no free hit" in finding.message
    assert finding.counterfactual_metrics == finding.metrics_as_run  # last in every other list: changes nothing


def test_the_same_path_twice_is_found_without_reading_bytes(clean_set: dict) -> None:
    q, g = clean_set["q"], list(clean_set["g"]) + [(clean_set["q"][2][0], 3, 1)]
    dist = np.hstack([clean_set["dist"], np.ones((4, 1))])
    assert run_check(q, g, dist, compare_bytes=False).by_check("query_in_gallery")[0].count == 1
    copy = clean_set["root"] / "gallery" / "copy.png"
    shutil.copy(q[2][0], copy)
    g2 = list(clean_set["g"]) + [(str(copy), 3, 1)]
    assert run_check(q, g2, dist, compare_bytes=False).by_check("query_in_gallery") == []  # a byte copy: not by path
    assert run_check(q, g2, dist).by_check("query_in_gallery")[0].count == 1


def test_identities_shared_with_training(clean_set: dict) -> None:
    report = run_check(clean_set["q"], clean_set["g"], clean_set["dist"], train_identities=[3, 7, 8])
    (finding,) = report.by_check("train_test_overlap")
    assert finding.severity == "severe" and finding.count == 1 and finding.examples == ["pid 3"]
    _, qp, qc = arrays(clean_set["q"])
    _, gp, gc = arrays(clean_set["g"])
    qk, gk = qp != 3, gp != 3
    expected = brute_metrics(clean_set["dist"][np.ix_(qk, gk)], qp[qk], gp[gk], qc[qk], gc[gk])
    assert_metrics(finding.counterfactual_metrics, expected)


def test_training_images_in_the_test_set(clean_set: dict, tmp_path: Path) -> None:
    leaked = tmp_path / "train" / "0042_c1_x.png"
    leaked.parent.mkdir()
    shutil.copy(clean_set["g"][0][0], leaked)  # a gallery image, also used for training under another name
    train = [write_image(tmp_path / "train" / "0041_c1_y.png", 4242), str(leaked)]
    report = run_check(clean_set["q"], clean_set["g"], clean_set["dist"], train_paths=train)
    (finding,) = report.by_check("train_test_overlap")
    assert finding.severity == "severe" and "0 query and 1 gallery" in finding.message
    assert "train_test_overlap (in part)" in report.checks_not_run  # identities were not given


def test_queries_without_a_valid_match(clean_set: dict) -> None:
    q = list(clean_set["q"]) + [(write_image(clean_set["root"] / "query" / "0009_c1_q.png", 9), 9, 0)]
    only_same_camera = write_image(clean_set["root"] / "gallery" / "0009_c1_g.png", 90)
    g = list(clean_set["g"]) + [(only_same_camera, 9, 0)]
    dist = np.random.default_rng(1).random((len(q), len(g)))
    report = run_check(q, g, dist)
    (finding,) = report.by_check("queries_without_match")
    assert finding.severity == "warning" and finding.count == 1 and "0009_c1_q.png" in finding.examples[0]
    _, qp, qc = arrays(q)
    _, gp, gc = arrays(g)
    as_run = brute_metrics(dist, qp, gp, qc, gc)
    assert as_run["queries"] == 4
    # counted as misses: the same sums over 5 queries instead of 4
    assert finding.counterfactual_metrics["mAP"] == pytest.approx(as_run["mAP"] * 4 / 5)
    assert finding.counterfactual_metrics["rank1"] == pytest.approx(as_run["rank1"] * 4 / 5)


def test_no_query_with_a_match_is_severe(clean_set: dict) -> None:
    _, qp, qc = arrays(clean_set["q"])
    report = check_protocol(qp, qp + 100, qc, qc + 1)
    assert report.by_check("queries_without_match")[0].severity == "severe"


def test_same_camera_matches_are_counted_and_measured(clean_set: dict) -> None:
    q, g = clean_set["q"], list(clean_set["g"])
    extra = [(write_image(clean_set["root"] / "gallery" / f"0001_c1_s{k}.png", 500 + k), 1, 0) for k in range(2)]
    g += extra + [(write_image(clean_set["root"] / "gallery" / "0004_c1_s.png", 600), 4, 0)]
    dist = np.random.default_rng(2).random((len(q), len(g)))
    report = run_check(q, g, dist)
    (finding,) = report.by_check("same_camera_matches")
    assert finding.severity == "info" and finding.count == 3 and "2 queries" in finding.message
    _, qp, qc = arrays(q)
    _, gp, gc = arrays(g)
    assert_metrics(finding.metrics_as_run, brute_metrics(dist, qp, gp, qc, gc, rule=True))
    assert_metrics(finding.counterfactual_metrics, brute_metrics(dist, qp, gp, qc, gc, rule=False))


def test_junk_and_distractor_queries(clean_set: dict) -> None:
    q = list(clean_set["q"]) + [
        (write_image(clean_set["root"] / "query" / "0000_c1_d.png", 7), 0, 0),
        (write_image(clean_set["root"] / "query" / "-1_c1_j.png", 8), -1, 0),
    ]
    g = list(clean_set["g"]) + [(write_image(clean_set["root"] / "gallery" / "-1_c2_j.png", 11), -1, 1)]
    dist = np.random.default_rng(3).random((len(q), len(g)))
    report = run_check(q, g, dist)
    severe, warning, info = report.by_check("junk_labels")
    assert severe.severity == "severe" and severe.count == 1 and "1 junk (pid -1)" in severe.message
    # pid 0: a distractor in Market-1501's convention, an ordinary identity in MSMT17's: a warning, not a stop
    assert warning.severity == "warning" and warning.count == 1 and "pid 0" in warning.message
    assert info.severity == "info" and info.count == 1
    _, qp, qc = arrays(q)
    _, gp, gc = arrays(g)
    assert_metrics(severe.counterfactual_metrics, brute_metrics(dist[:5], qp[:5], gp, qc[:5], gc))
    keep = [0, 1, 2, 3, 5]  # every query but the pid-0 one
    assert_metrics(warning.counterfactual_metrics, brute_metrics(dist[keep], qp[keep], gp, qc[keep], gc))
    assert "0000_c1_d.png" in report.format()


def test_chapter_evaluations_run_the_checks(clean_set: dict) -> None:
    _, qp, qc = arrays(clean_set["q"])
    _, gp, gc = arrays(clean_set["g"])
    query = Features(torch.zeros(len(qp), 2), np.append(qp[:-1], -1), qc)  # the last query is labelled junk
    gallery = Features(torch.zeros(len(gp), 2), gp, gc)
    dist = torch.as_tensor(clean_set["dist"])
    with pytest.raises(ProtocolError, match="junk"):
        evaluate_distance(dist, query, gallery)
    with pytest.warns(UserWarning, match="junk_labels"):
        result = evaluate_distance(dist, query, gallery, allow_protocol_errors=True)
    assert result.extra["protocol"].severe
    no_match = Features(torch.zeros(len(qp), 2), np.append(qp[:-1], 77), qc)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate_distance(dist, no_match, gallery)
    assert any("queries_without_match" in str(w.message) for w in caught)


def test_reid_evaluate_stops_on_a_leak(
    tiny_world: TinyWorld,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A folder test set whose gallery holds copies of its queries: exit 2, unless told to go on."""
    data = tiny_world.data
    for sub, items in (("query", data.query), ("gallery", data.gallery), ("train", data.train[:4])):
        (tmp_path / sub).mkdir()
        for path, _, _ in items:
            shutil.copy(path, tmp_path / sub / Path(path).name)
    leaked = Path(data.query[0][0])
    pid, cam = data.query[0][1], data.query[0][2]
    shutil.copy(leaked, tmp_path / "gallery" / f"{pid:04d}_c{(cam + 1) % 2 + 1}s9_000000_99.jpg")  # other camera
    args = ["evaluate", "--model", str(tiny_world.model_path), "--data", str(tmp_path), "--dataset", "folder"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "[severe] query_in_gallery" in captured.out and "severe protocol finding" in captured.err
    assert main(args + ["--allow-protocol-errors"]) == 0
    out = capsys.readouterr().out
    assert "without those gallery copies" in out and "metrics: R1" in out
