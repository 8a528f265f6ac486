"""Every verb of the ``reid`` command, end to end on a tiny rendered world, checked against brute force."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from reid_fixtures import TinyWorld, reference_embeddings, tiny_world_fixture  # noqa: F401  (the tiny_world fixture)

from reid_core.cli.main import main
from reid_core.engine.model_card import load_model
from reid_core.evaluation import evaluate_rank
from reid_core.evaluation.calibration import calibrate_threshold

XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
Capsys = pytest.CaptureFixture[str]
Folders = tuple[Path, Path]


def reid(capsys: Capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def folders(tiny_world: TinyWorld, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A query folder (with an XSS file name and a sub-folder) and a gallery folder, both Market-named."""
    root = tmp_path_factory.mktemp("own_images")
    query, gallery = root / "query", root / "gallery"
    (query / "sub").mkdir(parents=True)
    gallery.mkdir()
    for i, (path, _, _) in enumerate(tiny_world.data.query):
        shutil.copy(path, (query / "sub" if i == 0 else query) / Path(path).name)
    for path, _, _ in tiny_world.data.gallery:
        shutil.copy(path, gallery / Path(path).name)
    return query, gallery


def test_help_of_every_verb(capsys: Capsys) -> None:
    for verb in ("extract", "rank", "evaluate", "calibrate", "export"):
        with pytest.raises(SystemExit) as exit_info:
            main([verb, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: reid {verb}" in capsys.readouterr().out


def test_python_dash_m_reid_core() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reid_core", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "extract" in result.stdout and "calibrate" in result.stdout


def test_extract_npz_and_parquet(
    tiny_world: TinyWorld,
    folders: Folders,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    query, _ = folders
    code, out, _ = reid(
        capsys, "extract", "--model", tiny_world.model_path, "--images", query, "--out", tmp_path / "f.npz"
    )
    assert code == 0 and "wrote" in out
    saved = np.load(tmp_path / "f.npz")
    paths = [str(p) for p in saved["paths"]]
    assert paths == sorted(p.relative_to(query).as_posix() for p in query.rglob("*.jpg"))
    assert any(p.startswith("sub/") for p in paths) and str(saved["metric"]) == "euclidean"
    expected = reference_embeddings(load_model(tiny_world.model_path).model, [query / p for p in paths])
    assert saved["features"].dtype == np.float32 and np.allclose(saved["features"], expected, atol=1e-5)

    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    assert (
        reid(capsys, "extract", "--model", tiny_world.model_path, "--images", query, "--out", tmp_path / "f.parquet")[0]
        == 0
    )
    table = pq.read_table(tmp_path / "f.parquet")
    assert table.column("path").to_pylist() == paths
    assert np.allclose(np.array(table.column("feature").to_pylist()), saved["features"])
    assert table.schema.metadata[b"metric"] == b"euclidean"


def test_rank_page_and_tables(
    tiny_world: TinyWorld,
    folders: Folders,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    query, gallery = folders
    out = tmp_path / "ranked"
    code, stdout, _ = reid(
        capsys,
        "rank",
        "--model",
        tiny_world.model_path,
        "--query",
        query,
        "--gallery",
        gallery,
        "--out",
        out,
        "--top",
        4,
    )
    assert code == 0 and "rank-1 same identity" in stdout
    q_paths = sorted(query.rglob("*.jpg"))
    g_paths = sorted(gallery.rglob("*.jpg"))
    model = load_model(tiny_world.model_path).model
    dist = torch.cdist(
        torch.as_tensor(reference_embeddings(model, q_paths)).double(),
        torch.as_tensor(reference_embeddings(model, g_paths)).double(),
    ).numpy()  # (Q, G)
    rows = list(csv.DictReader((out / "topk.csv").open()))
    assert len(rows) == 4 * len(q_paths)
    for qi, q in enumerate(q_paths):
        mine = [r for r in rows if r["query"] == q.relative_to(query).as_posix()]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3, 4]
        assert np.allclose([float(r["distance"]) for r in mine], np.sort(dist[qi])[:4], atol=1e-4)
        for r in mine:  # the identity from the names, and the match flag
            assert r["match"] == str(int(r["query_pid"]) == int(r["gallery_pid"]))
    data = json.loads((out / "topk.json").read_text())
    assert data["threshold"] is None and len(data["queries"]) == len(q_paths)
    page = (out / "index.html").read_text()
    assert page.count('class="thumb"') == len(q_paths) * 5
    assert 'class="gallery match"' in page or 'class="gallery nonmatch"' in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from the network
    for src in re.findall(r'src="([^"]+)"', page):
        assert (out / src).is_file()


def test_rank_escapes_file_names_and_greys_unknown_identities(
    tiny_world: TinyWorld,
    folders: Folders,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    query = tmp_path / "q"
    query.mkdir()
    shutil.copy(next(folders[0].glob("*.jpg")), query / XSS_NAME)
    out = tmp_path / "ranked"
    assert (
        reid(
            capsys,
            "rank",
            "--model",
            tiny_world.model_path,
            "--query",
            query,
            "--gallery",
            folders[1],
            "--out",
            out,
            "--top",
            3,
        )[0]
        == 0
    )
    page = (out / "index.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    tags = _Tags()
    tags.feed(page)
    assert not [t for t in tags.found if t[0] == "img" and dict(t[1]).get("src") == "x"]
    assert not [t for t in tags.found if any(name.startswith("on") for name, _ in t[1])]
    assert XSS_NAME in [dict(t[1]).get("alt") for t in tags.found if t[0] == "img"]  # the alt text is the name
    assert 'class="gallery unknown"' in page  # the query name carries no identity


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def test_evaluate_matches_brute_force(tiny_world: TinyWorld, tmp_path: Path, capsys: Capsys) -> None:
    data = tiny_world.data
    code, out, _ = reid(
        capsys,
        "evaluate",
        "--model",
        tiny_world.model_path,
        "--data",
        tiny_world.data_root,
        "--dataset",
        "synthreid",
        "--json",
        tmp_path / "eval.json",
    )
    assert code == 0, out
    record = json.loads((tmp_path / "eval.json").read_text())
    model = load_model(tiny_world.model_path).model
    qf = torch.as_tensor(reference_embeddings(model, [p for p, _, _ in data.query]))
    gf = torch.as_tensor(reference_embeddings(model, [p for p, _, _ in data.gallery]))
    cmc, mAP = evaluate_rank(
        torch.cdist(qf, gf),
        [p for _, p, _ in data.query],
        [p for _, p, _ in data.gallery],
        [c for _, _, c in data.query],
        [c for _, _, c in data.gallery],
        max_rank=10,
    )
    assert record["metrics"]["rank1"] == pytest.approx(100 * cmc[0], abs=1e-6)
    assert record["metrics"]["mAP"] == pytest.approx(100 * mAP, abs=1e-4)
    assert "metrics: R1" in out and "protocol checks: 5 run" in out
    checks = {f["check"] for f in record["protocol"]["findings"]}
    assert "train_test_overlap" not in checks  # SynthReID's train and test identities are disjoint


def test_calibrate_stores_thresholds_that_rank_uses(
    tiny_world: TinyWorld,
    folders: Folders,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    model_path = tiny_world.model_copy(tmp_path)
    code, out, _ = reid(
        capsys,
        "calibrate",
        "--model",
        model_path,
        "--data",
        tiny_world.data_root,
        "--fpr",
        0.1,
        0.05,
        "--bootstrap",
        50,
    )  # --dataset from the card
    assert code == 0, out
    card = load_model(model_path).card
    assert card.calibration is not None and card.calibration["dataset"].startswith("synthreid")
    assert (tmp_path / "model_calibration.png").is_file()
    # the same thresholds from the library on the same images
    data = tiny_world.data
    items = [i for i in data.query + data.gallery if i[1] > 0]
    feats = reference_embeddings(load_model(model_path).model, [p for p, _, _ in items])
    expected = calibrate_threshold(
        feats, [p for _, p, _ in items], [c for _, _, c in items], fprs=(0.1, 0.05), num_bootstrap=50, progress=False
    )
    stored = [t["threshold"] for t in card.calibration["thresholds"]]
    assert np.allclose(stored, [t.threshold for t in expected.thresholds], atol=1e-4)

    out_dir = tmp_path / "ranked"
    assert (
        reid(
            capsys,
            "rank",
            "--model",
            model_path,
            "--query",
            folders[0],
            "--gallery",
            folders[1],
            "--out",
            out_dir,
            "--fpr",
            0.05,
        )[0]
        == 0
    )
    data = json.loads((out_dir / "topk.json").read_text())
    threshold = data["threshold"]["threshold"]
    assert threshold == pytest.approx(stored[1])
    marks = [(r["distance"] < threshold, r["same_person"]) for q in data["queries"] for r in q["ranked"]]
    assert marks and all(a == b for a, b in marks)
    assert "same / different person" in (out_dir / "index.html").read_text()


def test_export_verb(tiny_world: TinyWorld, tmp_path: Path, capsys: Capsys) -> None:
    pytest.importorskip("onnxruntime")
    code, out, _ = reid(
        capsys, "export", "--model", tiny_world.model_path, "--onnx", tmp_path / "m.onnx", "--repeats", 2
    )
    assert code == 0 and (tmp_path / "m.onnx").is_file()
    assert re.search(r"max \|diff\|: batch 2: \S+, batch 5: \S+", out)
    assert re.search(r"PyTorch [\d.]+ ms, onnxruntime [\d.]+ ms", out)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]  # no name resolves: a network request would fail


def _dump_dom(page: Path, profile: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: `make browser` installs Debian's chromium")
    result = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_rank_page_loads_in_headless_chromium(
    tiny_world: TinyWorld,
    folders: Folders,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    query = tmp_path / "q"
    shutil.copytree(folders[0], query)
    shutil.copy(next(folders[0].glob("*.jpg")), query / XSS_NAME)
    out = tmp_path / "ranked"
    assert (
        reid(
            capsys,
            "rank",
            "--model",
            tiny_world.model_path,
            "--query",
            query,
            "--gallery",
            folders[1],
            "--out",
            out,
            "--top",
            5,
        )[0]
        == 0
    )
    total = (out / "index.html").read_text().count('class="thumb"')
    dom = _dump_dom(out / "index.html", tmp_path / "chrome")
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert f'data-images-loaded="{total}"' in body and f'data-images-total="{total}"' in body
    assert re.search(r'<p id="broken" hidden', dom)
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in dom  # shown as text
    assert not re.search(r'<img[^>]*src="x"', dom)
    # without its thumbs/ folder the page says so
    shutil.move(out / "thumbs", tmp_path / "moved")
    dom = _dump_dom(out / "index.html", tmp_path / "chrome")
    assert 'data-images-loaded="0"' in dom and f"{total} of {total} thumbnails did not load" in dom


@pytest.mark.parametrize(
    "args, message",
    [
        (["extract", "--images", "/nonexistent/dir", "--out", "x.npz"], "/nonexistent/dir: no such folder"),
        (["extract", "--images", ".", "--out", "x.txt"], "must end in .npz or .parquet"),
        (["evaluate", "--data", "/nonexistent", "--dataset", "nope"], "--dataset 'nope' is not known"),
        (["rank", "--query", ".", "--gallery", ".", "--out", "o", "--top", "0"], "--top must be >= 1"),
        (["rank", "--query", ".", "--gallery", ".", "--out", "o", "--fpr", "0.01"], "holds no calibration"),
    ],
)
def test_errors_are_one_line(
    tiny_world: TinyWorld,
    capsys: Capsys,
    args: list[str],
    message: str,
) -> None:
    code, _, err = reid(capsys, *args, "--model", tiny_world.model_path)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_missing_model_file_is_named(capsys: Capsys) -> None:
    code, _, err = reid(capsys, "extract", "--model", "/nonexistent/m.pt", "--images", ".", "--out", "x.npz")
    assert code == 2 and "/nonexistent/m.pt does not exist" in err
