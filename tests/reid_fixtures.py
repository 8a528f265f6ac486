"""Shared fixtures of the ``reid`` command tests: a tiny SynthReID world and a tiny saved model.

Import the fixtures into a test module (``from reid_fixtures import tiny_world_fixture``); pytest finds
them there. Everything is small enough for a test to run every verb in seconds: 8 identities of
4 images at 32x16 pixels, an untrained ResNet-10 baseline.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from reid_core.data import SynthReID, build_transforms, read_image, render_synthreid
from reid_core.engine.model_card import ModelCard, save_model
from reid_core.models import build_model

HEIGHT, WIDTH = 32, 16


@dataclass
class TinyWorld:
    """A rendered dataset and a model file made from it."""

    root: Path
    data_root: Path
    model_path: Path
    data: SynthReID

    def model_copy(self, folder: Path) -> Path:
        """A private copy of the model file (for tests that write into it)."""
        target = folder / "model.pt"
        shutil.copy(self.model_path, target)
        return target


def tiny_card(num_classes: int, **changes: object) -> ModelCard:
    fields = dict(
        architecture="baseline",
        num_classes=num_classes,
        model_kwargs={"backbone": "resnet10", "last_stride": 1},
        height=HEIGHT,
        width=WIDTH,
        embedding="BNNeck output f_i",
        training={"dataset": "synthreid"},
    )
    fields.update(changes)
    return ModelCard(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module", name="tiny_world")
def tiny_world_fixture(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny_world")
    render_synthreid(
        root / "synthreid",
        num_ids=8,
        images_per_id=4,
        num_cameras=2,
        seed=0,
        height=HEIGHT,
        width=WIDTH,
        lookalike_family_size=2,
        workers=1,
        progress=False,
    )
    data = SynthReID(root / "synthreid", verbose=False)
    torch.manual_seed(0)
    model = build_model("baseline", data.num_train_pids, backbone="resnet10", last_stride=1)
    with torch.no_grad():  # BN statistics other than (0, 1), so that the BNNeck does something
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    path = save_model(model, tiny_card(data.num_train_pids), root / "model.pt")
    return TinyWorld(root=root, data_root=root / "synthreid", model_path=path, data=data)


def reference_embeddings(model: torch.nn.Module, paths: list[str] | list[Path]) -> np.ndarray:
    """(N, D) embeddings computed image by image: resize + normalise, feat of the image and of its mirror, averaged."""
    transform = build_transforms(HEIGHT, WIDTH, is_train=False)
    out = []
    with torch.no_grad():
        model.eval()
        for path in paths:
            x = transform(read_image(str(path))).unsqueeze(0)  # (1, 3, H, W)
            feat = (model(x).feat + model(torch.flip(x, dims=[3])).feat) / 2  # (1, D)
            out.append(feat[0].numpy())
    return np.stack(out)
