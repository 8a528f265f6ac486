"""Self-describing model files: saved with their card, rebuilt by load_model with weights_only=True."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from reid_fixtures import HEIGHT, WIDTH, tiny_card

from reid_core.engine.checkpoint import CheckpointError, save_checkpoint
from reid_core.engine.model_card import MODEL_CARD_FORMAT, ModelCard, load_model, save_model, update_model_card
from reid_core.models import build_model


@pytest.fixture()
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("baseline", 5, backbone="resnet10", last_stride=1).eval()


def test_round_trip_rebuilds_the_same_function(model: torch.nn.Module, tmp_path: Path) -> None:
    card = tiny_card(
        5, metric="cosine", normalize=True, results={"rank1": 12.5}, training={"dataset": "x", "epochs": 3}
    )
    path = save_model(model, card, tmp_path / "m.pt")
    # only plain containers and tensors: a bare weights_only load succeeds
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == MODEL_CARD_FORMAT and raw["card"]["results"] == {"rank1": 12.5}
    loaded = load_model(path)
    assert loaded.card == card
    assert not loaded.model.training
    x = torch.randn(3, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        expected, got = model(x), loaded.model(x)
    assert torch.equal(expected.feat, got.feat) and torch.equal(expected.logits, got.logits)
    assert loaded.transform()(torch.zeros(3, 50, 20, dtype=torch.uint8)).shape == (3, HEIGHT, WIDTH)


def test_a_card_that_does_not_rebuild_the_model_is_refused(model: torch.nn.Module, tmp_path: Path) -> None:
    wrong = tiny_card(5, model_kwargs={"backbone": "resnet18", "last_stride": 1})  # other blocks than resnet10
    with pytest.raises(ValueError, match="does not rebuild"):
        save_model(model, wrong, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="does not rebuild"):
        save_model(model, tiny_card(7), tmp_path / "m.pt")  # classifier width
    assert not (tmp_path / "m.pt").exists()


def test_card_validation() -> None:
    with pytest.raises(ValueError, match="pretrained"):
        tiny_card(5, model_kwargs={"backbone": "resnet10", "pretrained": True})
    with pytest.raises(ValueError, match="registered model"):
        tiny_card(5, architecture="nope")
    with pytest.raises(ValueError, match="metric"):
        tiny_card(5, metric="manhattan")
    with pytest.raises(ValueError, match="embedding_field"):
        tiny_card(5, embedding_field="logits")


def test_an_unfilled_embedding_field_is_refused(model: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="local"):
        save_model(model, tiny_card(5, embedding_field="local"), tmp_path / "m.pt")  # the baseline has no stripes


def test_a_trainer_checkpoint_gets_a_clear_error(model: torch.nn.Module, tmp_path: Path) -> None:
    path = save_checkpoint({"model": model.state_dict(), "optimizer": {}, "epoch": 3}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="Trainer checkpoint"):
        load_model(path)


def test_a_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"format": MODEL_CARD_FORMAT, "card": Payload()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="could not read"):
        load_model(path)


def test_a_card_from_a_newer_layout_is_named(model: torch.nn.Module, tmp_path: Path) -> None:
    path = save_model(model, tiny_card(5), tmp_path / "m.pt")
    state = torch.load(path, weights_only=True)
    state["card"]["future_field"] = 1
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="future_field"):
        load_model(path)


def test_update_model_card_keeps_the_weights(model: torch.nn.Module, tmp_path: Path) -> None:
    path = save_model(model, tiny_card(5), tmp_path / "m.pt")
    before = load_model(path).model.state_dict()
    card = update_model_card(path, calibration={"thresholds": [], "metric": "euclidean"})
    loaded = load_model(path)
    assert loaded.card == card and loaded.card.calibration == {"thresholds": [], "metric": "euclidean"}
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())


def test_card_dict_round_trip() -> None:
    card = tiny_card(5, mean=[0.5, 0.5, 0.5], std=(0.25, 0.25, 0.25))
    assert card.mean == (0.5, 0.5, 0.5)
    assert ModelCard.from_dict(card.to_dict()) == card
