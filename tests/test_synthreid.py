"""SynthReID: Market-1501 layout and rules, determinism, styles, knobs, families, ensure."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_core.data.synthreid.config import SynthReIDConfig
from reid_core.data.synthreid.identities import ATTRIBUTE_GROUPS, GLOBAL_GROUPS, LOCAL_GROUPS, SHARED_FIELDS
from reid_core.data.synthreid.plan import plan_synthreid
from reid_core.data.synthreid.render import render_image
from reid_core.data.synthreid.world import SPLIT_DIRS, SynthReIDInfo, ensure_synthreid, render_synthreid

NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
PARSE = re.compile(r"([-\d]+)_c(\d)")  # the readers' regex (the book page ``book/datasets.md``)
SMALL = dict(num_ids=12, num_cameras=4, images_per_id=5, seed=3, workers=1, progress=False)


def _parse(folder: Path) -> list[tuple[str, int, int]]:
    out = []
    for p in sorted(folder.iterdir()):
        pid, cam = PARSE.search(p.name).groups()  # type: ignore[union-attr]
        out.append((p.name, int(pid), int(cam)))
    return out


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for d in SPLIT_DIRS.values()
        for p in sorted((root / d).iterdir())
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SynthReIDInfo:
    return render_synthreid(tmp_path_factory.mktemp("synth") / "w", **SMALL)


def test_layout_and_names(world: SynthReIDInfo) -> None:
    for d in ("bounding_box_train", "query", "bounding_box_test"):
        files = list((world.root / d).iterdir())
        assert files, d
        for p in files:
            assert NAME.match(p.name), p.name
            assert 1 <= int(PARSE.search(p.name).group(2)) <= 4  # type: ignore[union-attr]
    with Image.open(next(world.query_dir.iterdir())) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 128)
    data = json.loads((world.root / "synthreid.json").read_text())
    assert data["config"]["num_ids"] == 12 and len(data["identities"]) == 12


def test_counts_per_split(world: SynthReIDInfo) -> None:
    train, query, gallery = (_parse(world.root / d) for d in SPLIT_DIRS.values())
    assert world.num_train_ids == 6 and world.num_test_ids == 6  # train_fraction 0.5
    assert len(train) == world.num_train_images == 6 * 5
    test_images = [x for x in query + gallery if x[1] > 0]
    assert len(test_images) == 6 * 5
    assert len(query) == world.num_query_images and len(gallery) == world.num_gallery_images
    # Defaults: 2 distractors and 1 junk image per test id, in the gallery only.
    assert sum(pid == 0 for _, pid, _ in gallery) == world.num_distractors == 12
    assert sum(pid == -1 for _, pid, _ in gallery) == world.num_junk == 6
    assert all(pid > 0 for _, pid, _ in train + query)


def test_train_and_test_ids_disjoint(world: SynthReIDInfo) -> None:
    train_ids = {pid for _, pid, _ in _parse(world.train_dir)}
    test_ids = {pid for _, pid, _ in _parse(world.query_dir) + _parse(world.gallery_dir) if pid > 0}
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(range(1, 13))


def test_query_rule(world: SynthReIDInfo) -> None:
    query, gallery = _parse(world.query_dir), _parse(world.gallery_dir)
    per_cam = defaultdict(int)
    for _, pid, cam in query:
        per_cam[(pid, cam)] += 1
    assert max(per_cam.values()) == 1  # at most one query per (test id, camera)
    test_ids = {pid for _, pid, _ in gallery if pid > 0}
    assert {pid for _, pid, _ in query} == test_ids  # every test id is queried
    cams = defaultdict(set)
    for _, pid, cam in query + gallery:
        cams[pid].add(cam)
    assert all(len(cams[pid]) >= 2 for pid in test_ids)
    gallery_cams = defaultdict(set)
    for _, pid, cam in gallery:
        gallery_cams[pid].add(cam)
    for _, pid, cam in query:  # each query has a valid (cross-camera) match
        assert gallery_cams[pid] - {cam}
    train_cams = defaultdict(set)
    for _, pid, cam in _parse(world.train_dir):
        train_cams[pid].add(cam)
    assert all(len(c) >= 2 for c in train_cams.values())


def test_deterministic_and_seed_dependent(tmp_path: Path, world: SynthReIDInfo) -> None:
    again = render_synthreid(tmp_path / "again", **{**SMALL, "workers": 2})  # other process split
    assert _digest(again.root) == _digest(world.root)
    other = render_synthreid(tmp_path / "other", **{**SMALL, "seed": 4})
    a, b = _digest(world.root), _digest(other.root)
    assert a != b
    assert set(a.values()).isdisjoint(b.values())


def _background_stats(style: str) -> np.ndarray:
    cfg = SynthReIDConfig(num_ids=6, num_cameras=3, images_per_id=4, style=style, seed=0, occlusion_prob=0.0)
    plan = plan_synthreid(cfg)
    people = {i.pid: i.member.pedestrian for i in plan.identities}
    pixels = []
    for spec in plan.images[:20]:
        img, mask = render_image(spec, people.get(spec.pid), plan.cameras[spec.camera - 1], cfg)
        pixels.append(img[~mask].astype(np.float32) / 255)  # (n, 3) background only
    px = np.concatenate(pixels)
    return np.concatenate([px.mean(0), px.std(0)])  # mean and spread of R, G, B


def test_styles_differ_in_background_statistics() -> None:
    a, b = _background_stats("a"), _background_stats("b")
    assert np.abs(a - b).max() > 0.05
    # Style b is the cooler scene: its background is bluer relative to red than style a's.
    assert (b[2] - b[0]) > (a[2] - a[0]) + 0.03


def _head_positions(misalignment: float) -> tuple[np.ndarray, np.ndarray]:
    """Top row of each person and the mean column of its top 6 rows (the head), from masks."""
    cfg = SynthReIDConfig(
        num_ids=8,
        num_cameras=3,
        images_per_id=5,
        seed=1,
        occlusion_prob=0.0,
        misalignment=misalignment,
        num_distractors=0,
        num_junk=0,
    )
    plan = plan_synthreid(cfg)
    people = {i.pid: i.member.pedestrian for i in plan.identities}
    tops, cols = [], []
    for spec in plan.images[:30]:
        _, mask = render_image(spec, people[spec.pid], plan.cameras[spec.camera - 1], cfg)
        rows = np.nonzero(mask.any(axis=1))[0]
        head = mask[rows[0] : rows[0] + 6]  # (6, W)
        tops.append(rows[0])
        cols.append(np.nonzero(head)[1].mean())
    return np.asarray(tops, float), np.asarray(cols)


def test_misalignment_zero_centres_and_one_spreads() -> None:
    tops0, cols0 = _head_positions(0.0)
    assert np.ptp(tops0) <= 1  # every head starts on the same row
    assert np.abs(cols0 - 32).max() <= 2.5  # and sits on the centre column (64 wide)
    tops1, cols1 = _head_positions(1.0)
    assert tops1.std() > 4 * max(tops0.std(), 0.5)
    assert cols1.std() > 4 * max(cols0.std(), 0.5)


def test_one_knob_changes_only_its_cause() -> None:
    base = plan_synthreid(SynthReIDConfig(num_ids=6, seed=2, misalignment=0.5))
    off = plan_synthreid(SynthReIDConfig(num_ids=6, seed=2, misalignment=0.0))
    assert [(s.filename, s.view, s.phase, s.occluder) for s in base.images] == [
        (s.filename, s.view, s.phase, s.occluder) for s in off.images
    ]
    assert all(s.shift_x == 0 and s.shift_y == 0 and s.scale == 1 for s in off.images if s.subject == "identity")
    assert any(s.shift_x != 0 for s in base.images)
    neutral = plan_synthreid(SynthReIDConfig(num_ids=6, seed=2, camera_shift=0.0, blur=0.0, resolution_drop=0.0))
    for cam in neutral.cameras:
        assert cam.gains == (1.0, 1.0, 1.0) and cam.brightness == 1.0 and cam.contrast == 1.0
        assert cam.blur_sigma == 0.0 and cam.resolution_factor == 1.0
    assert {
        s.view for s in plan_synthreid(SynthReIDConfig(num_ids=6, viewpoint=0.0)).images if s.subject == "identity"
    } == {"front"}


@pytest.mark.parametrize("local_fraction", [0.0, 0.5, 1.0])
def test_lookalike_families(tmp_path: Path, local_fraction: float) -> None:
    info = render_synthreid(
        tmp_path / "f",
        num_ids=24,
        num_cameras=2,
        images_per_id=3,
        seed=5,
        lookalike_family_size=4,
        lookalike_max_diffs=2,
        num_distractors=0,
        num_junk=0,
        local_part_only_fraction=local_fraction,
        workers=1,
        progress=False,
    )
    group_of = {key: g for g, keys in ATTRIBUTE_GROUPS.items() for key in keys}
    by_pid = {i["pid"]: i for i in info.identities}
    assert len(info.families) == 6  # 12 train + 12 test ids in families of 4
    n_local = n_members = 0
    for fam in info.families:
        members = [by_pid[p] for p in fam["pids"]]
        assert len(members) == 4 and {m["split"] for m in members} == {fam["split"]}
        base = by_pid[fam["base_pid"]]["attributes"]
        looks = {json.dumps(m["attributes"], sort_keys=True) for m in members}
        assert len(looks) == 4  # look-alikes, but distinct
        for m in members:
            changed = {k for k in base if m["attributes"][k] != base[k]}
            assert not changed & set(SHARED_FIELDS)  # body and skin always shared
            groups = {group_of[k] for k in changed}
            assert groups == set(m["differs_from_base"])
            assert len(groups) <= 2
            if m["pid"] == fam["base_pid"]:
                assert not groups
                continue
            n_members += 1
            assert groups
            assert groups <= set(LOCAL_GROUPS if m["local_part_only"] else GLOBAL_GROUPS)
            n_local += m["local_part_only"]
    if local_fraction == 0.0:
        assert n_local == 0
    elif local_fraction == 1.0:
        assert n_local == n_members
    else:
        assert 0 < n_local < n_members


def test_no_families_when_size_one(tmp_path: Path) -> None:
    info = render_synthreid(
        tmp_path / "s", num_ids=6, num_cameras=2, images_per_id=3, lookalike_family_size=1, workers=1, progress=False
    )
    assert len(info.families) == 6
    assert all(not i["differs_from_base"] for i in info.identities)


def test_ensure_skips_then_rerenders(tmp_path: Path) -> None:
    root = tmp_path / "e"
    kw = dict(num_ids=4, num_cameras=2, images_per_id=3, num_distractors=1, num_junk=1)
    first = ensure_synthreid(root, progress=False, **kw)
    assert first.rendered
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")}
    second = ensure_synthreid(root, progress=False, **kw)
    assert not second.rendered
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")} == stamp
    third = ensure_synthreid(root, progress=False, **{**kw, "num_ids": 6})
    assert third.rendered and third.config["num_ids"] == 6
    on_disk = {pid for d in SPLIT_DIRS.values() for _, pid, _ in _parse(root / d) if pid > 0}
    assert on_disk == set(range(1, 7))  # re-rendered cleanly, nothing stale
    next(root.joinpath("query").iterdir()).unlink()  # an incomplete folder is re-rendered too
    assert ensure_synthreid(root, progress=False, **{**kw, "num_ids": 6}).rendered


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_ids=1), "num_ids"),
        (dict(num_ids=4, style="c"), "style"),
        (dict(num_ids=4, num_cameras=1), "num_cameras"),
        (dict(num_ids=4, num_cameras=10), "num_cameras"),
        (dict(num_ids=4, misalignment=1.5), "misalignment"),
        (dict(num_ids=4, images_per_id=2), "images_per_id"),
        (dict(num_ids=4, train_fraction=0.0), "train_fraction"),
        (dict(num_ids=4, lookalike_family_size=0), "lookalike_family_size"),
    ],
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        render_synthreid(tmp_path / "bad", progress=False, **kwargs)
    assert not (tmp_path / "bad").exists()


def test_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "market" / "bounding_box_train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="synthreid.json"):
        render_synthreid(tmp_path / "market", num_ids=4, progress=False)
