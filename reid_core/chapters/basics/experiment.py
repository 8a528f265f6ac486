"""Chapter 01's experiment: one training of the strong baseline (or one of its ablations) per call.

:func:`train_baseline_arm` is what the notebook runs side by side over arms and seeds
(:func:`reid_core.engine.run_side_by_side`): it reads the data from its folder, seeds
everything, builds the arm's model and loss, starts from the pretrained backbone when one is
given, trains, evaluates on the test split (or on a validation split carved from the training
identities, when choosing the recipe) and returns plain numbers. A call depends only on its
arguments and its thread count, so the same seed gives the same result twice.

The arms (Luo et al. 2019 switch each trick on in turn in their Table 2):

* ``baseline``: BNNeck, ID loss with label smoothing and batch-hard triplet loss;
* ``no_bnneck``: the same without the BNNeck (both losses on the pooled feature, which is also
  the test feature);
* ``no_triplet``: the BNNeck model trained with the ID loss alone.

Chapter: ``notebooks/01_reid_basics.py``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reid_core.book.pretrained import PretrainedBackbone, load_pretrained_backbone
from reid_core.data import SynthReID, build_dataset, carve_validation
from reid_core.engine import (
    TrainConfig,
    Trainer,
    build_test_loader,
    build_train_loader,
    evaluate_reid,
    seed_everything,
)
from reid_core.losses import BaselineLoss
from reid_core.models import BaselineNet

__all__ = ["ARMS", "load_chapter_data", "source_for", "train_baseline_arm"]

ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"neck": "bnneck", "triplet_weight": 1.0, "label": "strong baseline"},
    "no_bnneck": {"neck": "none", "triplet_weight": 1.0, "label": "without BNNeck"},
    "no_triplet": {"neck": "bnneck", "triplet_weight": 0.0, "label": "without triplet loss"},
}
"""Each arm's model neck and triplet weight, and its label in the tables."""


def load_chapter_data(source: Mapping[str, str]) -> Any:
    """The dataset a run reads: ``{"kind": "synthreid", "root": folder}`` or ``{"kind": name, "root": data_root}``."""
    if source["kind"] == "synthreid":
        return SynthReID(source["root"], verbose=False)
    return build_dataset(source["kind"], source["root"], verbose=False)


def train_baseline_arm(
    arm: str,
    seed: int,
    *,
    source: Mapping[str, str],
    recipe: Mapping[str, Any],
    weights: PretrainedBackbone | None = None,
    split: str = "test",
    device: str = "cpu",
    return_state: bool = False,
    checkpoint_dir: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train one arm with one seed and evaluate it.

    Args:
        arm: a key of :data:`ARMS`.
        seed: seeds the initialisation of the new layers, the P x K batches and the augmentation.
        source: where the data is (see :func:`load_chapter_data`).
        recipe: the profile's settings (backbone, height, width, epochs, batch_size,
            num_instances, lr, warmup_epochs, milestones, max_iters, precision, batch_augment,
            flip, metric, pretrained, preload).
        weights: the pretrained backbone to start from (``None``: ImageNet when
            ``recipe["pretrained"]``, else random).
        split: ``"test"`` (query/gallery) or ``"validation"`` (a fifth of the training identities,
            carved by :func:`~reid_core.data.carve_validation` with seed 0, the rest trains).
        device: where to train.
        return_state: also return the trained model's ``state_dict`` (for figures and the model file).
        checkpoint_dir: where the trainer checkpoints and resumes (the ``paper`` profile's long runs).
        progress: show the trainer's progress bars.

    Returns:
        ``{"arm", "seed", "metrics" (rank1, rank5, rank10, mAP in %), "cmc" (first 20 ranks, fractions),
        "history" (per-epoch losses), "train_seconds", "num_classes"}`` and ``"state_dict"`` when asked.

    Raises:
        ValueError: an unknown arm or split (names the valid ones).
    """
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {sorted(ARMS)}")
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    settings = ARMS[arm]
    seed_everything(seed)
    data = load_chapter_data(source)
    if split == "validation":
        carved = carve_validation(data.train, fraction=0.2, seed=0)
        train_items, query, gallery, num_classes = carved.train, carved.query, carved.gallery, carved.num_train_pids
    else:
        train_items, query, gallery, num_classes = data.train, data.query, data.gallery, data.num_train_pids
    height, width = recipe["height"], recipe["width"]
    preload = bool(recipe.get("preload", True))
    loader = build_train_loader(
        train_items,
        height,
        width,
        batch_size=recipe["batch_size"],
        num_instances=recipe["num_instances"],
        preload=preload,
        seed=seed,
        batch_augment=bool(recipe.get("batch_augment", False)),
        device=device,
    )
    model = BaselineNet(
        num_classes,
        backbone=recipe["backbone"],
        pretrained=bool(recipe.get("pretrained", False)) and weights is None,
        last_stride=1,
        neck=settings["neck"],
    )
    if weights is not None:
        load_pretrained_backbone(model.backbone, weights)
    criterion = BaselineLoss(id_weight=1.0, triplet_weight=settings["triplet_weight"], margin=0.3, label_smoothing=0.1)
    config = TrainConfig(
        epochs=recipe["epochs"],
        optimizer="adam",
        lr=recipe["lr"],
        weight_decay=5e-4,
        scheduler="step",
        milestones=tuple(recipe["milestones"]),
        gamma=0.1,
        warmup_epochs=recipe["warmup_epochs"],
        warmup_factor=0.1,
        max_iters_per_epoch=recipe.get("max_iters"),
        seed=seed,
        precision=recipe.get("precision", "auto"),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
    )
    start = time.perf_counter()
    history = Trainer(model, criterion, loader, config, device=device).fit()
    train_seconds = time.perf_counter() - start
    result = evaluate_reid(
        model,
        build_test_loader(query, height, width, preload=preload),
        build_test_loader(gallery, height, width, preload=preload),
        metric=recipe.get("metric", "euclidean"),
        flip=bool(recipe.get("flip", True)),
        device=device,
        progress=progress,
        precision=recipe.get("precision", "auto"),
    )
    out: dict[str, Any] = {
        "arm": arm,
        "seed": seed,
        "split": split,
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "cmc": [float(c) for c in result.cmc[:20]],
        "history": [{k: float(v) for k, v in epoch.items() if isinstance(v, (int, float))} for epoch in history],
        "train_seconds": train_seconds,
        "num_classes": num_classes,
    }
    if return_state:
        out["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return out


def source_for(profile: str, dataset: str, data_root: str | Path, preset_root: str | Path | None) -> dict[str, str]:
    """The ``source`` argument of :func:`train_baseline_arm` for a profile (SynthReID for smoke/synth)."""
    if profile == "paper":
        return {"kind": dataset, "root": str(data_root)}
    if preset_root is None:
        raise ValueError("preset_root is needed for the smoke and synth profiles (the SynthReID folder)")
    return {"kind": "synthreid", "root": str(preset_root)}
