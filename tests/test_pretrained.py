"""reid_core.book.pretrained: a backbone pretrained on SynthReID worlds of its own, cached with provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reid_core.book.pretrained import (
    PRETRAIN_RECIPES,
    PRETRAIN_SEEDS,
    PretrainRecipe,
    ensure_pretrained_backbone,
    load_pretrained_backbone,
)
from reid_core.data.synthreid.presets import SYNTHREID_PRESETS
from reid_core.engine import CheckpointError
from reid_core.models import BaselineNet, build_backbone


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pretrain")
    weights = ensure_pretrained_backbone(root / "cache", PRETRAIN_RECIPES["smoke"], root / "data", progress=False)
    return root, weights


def test_pretraining_worlds_are_none_of_the_chapters() -> None:
    chapter_seeds = {(p.get("seed", 0), p.get("style", "a")) for p in SYNTHREID_PRESETS.values()}
    for world in PRETRAIN_RECIPES["synth"].worlds():
        assert (world["seed"], world["style"]) not in chapter_seeds
        assert world["seed"] in PRETRAIN_SEEDS


def test_provenance_describes_the_file(pretrained) -> None:
    root, weights = pretrained
    info = json.loads(weights.path.with_suffix(".json").read_text())
    assert info == weights.provenance
    assert info["fingerprint"] == PRETRAIN_RECIPES["smoke"].fingerprint()
    assert info["recipe"]["backbone"] == "resnet10" and len(info["worlds"]) == 2
    assert {w["style"] for w in info["worlds"]} == {"a", "b"}
    assert info["identities"] == sum(w["train_ids"] for w in info["worlds"]) > 0
    assert info["images"] == sum(w["train_images"] for w in info["worlds"]) > 0


def test_second_call_loads_the_cache(pretrained) -> None:
    root, weights = pretrained
    stamp = weights.path.stat().st_mtime_ns
    again = ensure_pretrained_backbone(root / "cache", PRETRAIN_RECIPES["smoke"], root / "data", progress=False)
    assert again.path == weights.path and again.path.stat().st_mtime_ns == stamp
    assert again.provenance == weights.provenance


def test_weights_load_into_a_chapter_model(pretrained) -> None:
    _, weights = pretrained
    model = BaselineNet(7, backbone="resnet10", pretrained=False, last_stride=1)
    load_pretrained_backbone(model.backbone, weights)
    reference = build_backbone("resnet10")
    load_pretrained_backbone(reference, weights)
    for (name, a), (_, b) in zip(model.backbone.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    fresh = build_backbone("resnet10")
    assert any(not torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), reference.state_dict().values()))


def test_another_architecture_is_refused(pretrained) -> None:
    _, weights = pretrained
    with pytest.raises(ValueError, match="holds a resnet10 backbone; the model's is resnet18"):
        load_pretrained_backbone(build_backbone("resnet18"), weights)


def test_a_tampered_cache_is_an_error_naming_the_files(pretrained, tmp_path: Path) -> None:
    root, weights = pretrained
    cache = tmp_path / "cache"
    cache.mkdir()
    for suffix in (".pt", ".json"):
        (cache / weights.path.with_suffix(suffix).name).write_bytes(weights.path.with_suffix(suffix).read_bytes())
    (cache / weights.path.name).write_bytes(b"not the weights")
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        ensure_pretrained_backbone(cache, PRETRAIN_RECIPES["smoke"], root / "data", progress=False)


def test_recipe_changes_change_the_fingerprint() -> None:
    base = PretrainRecipe()
    assert PretrainRecipe(epochs=base.epochs + 1).fingerprint() != base.fingerprint()
    assert PretrainRecipe().fingerprint() == base.fingerprint()
    with pytest.raises(ValueError, match="styles"):
        PretrainRecipe(styles=())
    with pytest.raises(ValueError, match="epochs"):
        PretrainRecipe(epochs=0)
