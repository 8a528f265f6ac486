"""Chapter 01's experiment: one arm, one seed, repeatable; and the notebook uses the recipe its record chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reid_core.book import read_notebook_profiles
from reid_core.chapters.basics import ARMS, source_for, train_baseline_arm
from reid_core.data import prepare_synthreid

ROOT = Path(__file__).resolve().parents[1]
RECIPE = dict(
    backbone="resnet10",
    pretrained=False,
    height=32,
    width=16,
    epochs=1,
    batch_size=8,
    num_instances=2,
    lr=1e-3,
    warmup_epochs=0,
    milestones=(),
    max_iters=2,
    precision="fp32",
    batch_augment=True,
    flip=False,
)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = prepare_synthreid(tmp_path_factory.mktemp("data"), "smoke")
    return source_for("smoke", "synthreid", None, root)


def test_same_seed_same_result_other_seed_other_result(source):
    one = train_baseline_arm("baseline", 3, source=source, recipe=RECIPE, return_state=True)
    two = train_baseline_arm("baseline", 3, source=source, recipe=RECIPE, return_state=True)
    timing = {"seconds", "images_per_second"}
    untimed = [[{k: v for k, v in e.items() if k not in timing} for e in r["history"]] for r in (one, two)]
    assert one["metrics"] == two["metrics"] and untimed[0] == untimed[1]
    assert all((one["state_dict"][k] == two["state_dict"][k]).all() for k in one["state_dict"])
    other = train_baseline_arm("baseline", 4, source=source, recipe=RECIPE, return_state=True)
    assert any((one["state_dict"][k] != other["state_dict"][k]).any() for k in one["state_dict"])


def test_arms_differ_where_they_should(source):
    no_neck = train_baseline_arm("no_bnneck", 0, source=source, recipe=RECIPE, return_state=True)
    assert not any(k.startswith("neck.") for k in no_neck["state_dict"])  # no BN between f_t and the classifier
    no_triplet = train_baseline_arm("no_triplet", 0, source=source, recipe=RECIPE)
    assert all(epoch.get("triplet", 0.0) == 0.0 for epoch in no_triplet["history"])
    assert set(ARMS) == {"baseline", "no_bnneck", "no_triplet"}


def test_validation_split_trains_on_fewer_identities(source):
    test = train_baseline_arm("baseline", 0, source=source, recipe=RECIPE)
    val = train_baseline_arm("baseline", 0, source=source, recipe=RECIPE, split="validation")
    assert val["num_classes"] < test["num_classes"]


def test_bad_arm_and_split_are_named(source):
    with pytest.raises(ValueError, match="unknown arm 'nope'"):
        train_baseline_arm("nope", 0, source=source, recipe=RECIPE)
    with pytest.raises(ValueError, match="split must be"):
        train_baseline_arm("baseline", 0, source=source, recipe=RECIPE, split="train")


def test_notebook_uses_the_recipe_its_validation_record_chose():
    record_path = ROOT / "book" / "recipes" / "01_reid_basics.json"
    if not record_path.is_file():
        pytest.skip("no recipe record yet (tools/choose_recipe.py writes it)")
    record = json.loads(record_path.read_text())
    chosen = next(c for c in record["candidates"] if c["name"] == record["chosen"])
    synth = read_notebook_profiles(ROOT / "notebooks" / "01_reid_basics.py")["synth"]
    assert (synth["epochs"], synth["lr"], list(synth["milestones"])) == (
        chosen["epochs"],
        chosen["lr"],
        list(chosen["milestones"]),
    )
