"""carve_validation: held-out identities are disjoint from training, one query per camera, relabelled train."""

from __future__ import annotations

import pytest

from reid_core.data import carve_validation


def make_train(num_ids=10, cams=3, per_cam=2):
    return [
        (f"{pid}_c{cam}_{k}.jpg", pid, cam) for pid in range(num_ids) for cam in range(cams) for k in range(per_cam)
    ]


def test_split_is_disjoint_and_complete():
    train = make_train()
    split = carve_validation(train, fraction=0.3, seed=1)
    assert len(split.held_out) == 3
    held = set(split.held_out)
    assert {pid for _, pid, _ in split.query + split.gallery} == held
    # every item lands in exactly one place; the kept identities are relabelled 0..6 in order
    kept_paths = {path for path, _, _ in split.train}
    assert len(kept_paths) + len(split.query) + len(split.gallery) == len(train)
    assert sorted({pid for _, pid, _ in split.train}) == list(range(7))
    old_of = {path: pid for path, pid, _ in train}
    kept_old = sorted({old_of[path] for path in kept_paths})
    assert all(kept_old.index(old_of[path]) == pid for path, pid, _ in split.train)  # order kept
    # one query per camera per held-out identity, the first image of that camera
    for pid in held:
        queries = [item for item in split.query if item[1] == pid]
        assert sorted(cam for _, _, cam in queries) == [0, 1, 2]
        assert all(path.endswith("_0.jpg") for path, _, _ in queries)


def test_same_seed_same_split_other_seed_other_split():
    train = make_train(num_ids=40)
    assert carve_validation(train, 0.2, seed=3) == carve_validation(train, 0.2, seed=3)
    assert carve_validation(train, 0.2, seed=3).held_out != carve_validation(train, 0.2, seed=4).held_out


def test_single_camera_identities_are_never_held_out():
    train = make_train(num_ids=6) + [(f"solo{k}.jpg", 6 + k, 0) for k in range(4)]
    for seed in range(10):
        assert all(pid < 6 for pid in carve_validation(train, 0.4, seed=seed).held_out)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="fraction"):
        carve_validation(make_train(), fraction=1.0)
    with pytest.raises(ValueError, match="empty"):
        carve_validation([], 0.2)
    with pytest.raises(ValueError, match="two or more cameras"):
        carve_validation(make_train(num_ids=4, cams=1), 0.5)
