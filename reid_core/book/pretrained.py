r"""Backbones pretrained once on SynthReID worlds of their own, the CPU profiles' stand-in for ImageNet.

The papers fine-tune ImageNet-pretrained ResNet-50s; networks trained from scratch on a CPU
for minutes are a different regime, where most of the papers' effects are too small to see.
The ``synth`` profiles therefore start from weights *of their own kind*: a backbone trained
once with the strong baseline's recipe (ID loss with label smoothing + batch-hard triplet,
BNNeck; Luo et al. 2019) on SynthReID worlds that no chapter tests on. Their identities are
drawn with other seeds than every chapter's world (``PRETRAIN_SEEDS``), and both scene styles
are seen, so the cross-style test of chapter 05 stays a test of generalisation to unseen
*people*, as ImageNet pretraining is for the papers.

:func:`ensure_pretrained_backbone` trains the backbone the first time and caches it, keyed by
the recipe's fingerprint; later calls (and later ``make book`` runs) load the cached file. The
returned :class:`PretrainedBackbone` carries the provenance that every results JSON records:
the recipe, the worlds (seed, style, identities, images), the file's SHA-256, and how long the
pretraining took. :func:`load_pretrained_backbone` puts the weights into a chapter's model.

Chapters: every ``synth`` profile; the book page "Pretraining on SynthReID" shows the recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reid_core.data import SynthReID, ensure_synthreid
from reid_core.engine import CheckpointError, TrainConfig, Trainer, build_train_loader, load_checkpoint, save_checkpoint
from reid_core.files import atomic_write_text
from reid_core.losses import BaselineLoss
from reid_core.models import BaselineNet, ResNetBackbone

__all__ = [
    "PRETRAIN_RECIPES",
    "PRETRAIN_SEEDS",
    "PretrainRecipe",
    "PretrainedBackbone",
    "TRAIN_FRACTION",
    "ensure_pretrained_backbone",
    "load_pretrained_backbone",
    "pretrained_cache_dir",
    "pretrained_for_profile",
    "provenance_summary",
]

PRETRAIN_SEEDS = (1001, 1002)
"""World seeds of the pretraining worlds (style a, style b): no chapter's world uses them."""
TRAIN_FRACTION = 0.9
"""Share of each pretraining world's identities that pretraining sees (the renderer keeps some test ids)."""


@dataclass(frozen=True)
class PretrainRecipe:
    """What a pretrained backbone is: its worlds and its training recipe.

    Attributes:
        backbone: a name of :data:`reid_core.models.BACKBONES`.
        height, width: input size (the chapters' ``synth`` input size).
        num_ids, images_per_id, num_cameras: each world's size (one world per style; pretraining
            uses :data:`TRAIN_FRACTION` of its identities).
        styles: the scene styles, one world each, seeded by :data:`PRETRAIN_SEEDS` in order.
        epochs, lr, batch_size, num_instances, milestones, max_iters: the training recipe (Adam,
            step schedule, P x K batches).
        seed: the training seed.
        precision: the trainer's precision (bf16 autocast by default: the CPU path the chapters use).
        batch_augment: augment whole batches at once (:class:`~reid_core.data.BatchAugment`).
    """

    backbone: str = "resnet10"
    height: int = 64
    width: int = 32
    num_ids: int = 900
    images_per_id: int = 8
    num_cameras: int = 6
    styles: tuple[str, ...] = ("a", "b")
    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 64
    num_instances: int = 4
    milestones: tuple[float, ...] = (5,)
    max_iters: int | None = None
    seed: int = 0
    precision: str = "bf16"
    batch_augment: bool = True

    def __post_init__(self) -> None:
        if not 1 <= len(self.styles) <= len(PRETRAIN_SEEDS):
            raise ValueError(f"styles must name 1 to {len(PRETRAIN_SEEDS)} scene styles, got {self.styles!r}")
        for name in (
            "height",
            "width",
            "num_ids",
            "images_per_id",
            "num_cameras",
            "epochs",
            "batch_size",
            "num_instances",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PretrainRecipe.{name} must be a positive int, got {value!r}")

    def worlds(self) -> list[dict[str, Any]]:
        """The :func:`~reid_core.data.render_synthreid` arguments of each world; pretraining reads their train split."""
        return [
            dict(
                num_ids=self.num_ids,
                images_per_id=self.images_per_id,
                num_cameras=self.num_cameras,
                seed=seed,
                style=style,
                train_fraction=TRAIN_FRACTION,
                height=2 * self.height,
                width=2 * self.width,
            )
            for style, seed in zip(self.styles, PRETRAIN_SEEDS)
        ]

    def fingerprint(self) -> str:
        """A short hash of the recipe: the cache key (any change retrains)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


PRETRAIN_RECIPES: dict[str, PretrainRecipe] = {
    "smoke": PretrainRecipe(
        num_ids=8, images_per_id=4, num_cameras=2, epochs=1, batch_size=16, max_iters=2, milestones=()
    ),
    # two worlds of 1,800 identities x 8 images (90% of the identities train): 25,920 images, 10 epochs
    "synth": PretrainRecipe(num_ids=1800, images_per_id=8, epochs=10, milestones=(9,)),
}


@dataclass(frozen=True)
class PretrainedBackbone:
    """A cached pretrained backbone and its provenance.

    Attributes:
        path: the weights file (a state dict of :class:`~reid_core.models.ResNetBackbone`).
        provenance: recipe, fingerprint, worlds, SHA-256 of the file, training seconds; JSON-ready.
    """

    path: Path
    provenance: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _train(recipe: PretrainRecipe, data_root: Path, device: torch.device, progress: bool) -> tuple[nn.Module, dict]:
    """Render the worlds and train the strong baseline on all their identities."""
    items: list[tuple[str, int, int]] = []
    worlds = []
    for world in recipe.worlds():
        root = (
            data_root
            / "synthreid"
            / f"pretrain_{world['style']}_{world['seed']}_{world['num_ids']}x{world['images_per_id']}"
        )
        ensure_synthreid(root, progress=progress, **world)
        train = SynthReID(root, verbose=False).train
        offset = 1 + max((pid for _, pid, _ in items), default=-1)
        items += [(path, pid + offset, cam) for path, pid, cam in train]  # pids of the next world follow on
        worlds.append(
            {**world, "folder": root.name, "train_ids": len({pid for _, pid, _ in train}), "train_images": len(train)}
        )
    num_ids = 1 + max(pid for _, pid, _ in items)
    loader = build_train_loader(
        items,
        recipe.height,
        recipe.width,
        batch_size=recipe.batch_size,
        num_instances=recipe.num_instances,
        preload=True,
        seed=recipe.seed,
        batch_augment=recipe.batch_augment,
        device=device,
    )
    torch.manual_seed(recipe.seed)
    model = BaselineNet(num_ids, backbone=recipe.backbone, pretrained=False, last_stride=1)
    config = TrainConfig(
        epochs=recipe.epochs,
        optimizer="adam",
        lr=recipe.lr,
        weight_decay=5e-4,
        scheduler="step",
        milestones=recipe.milestones,
        gamma=0.1,
        warmup_epochs=0,
        max_iters_per_epoch=recipe.max_iters,
        seed=recipe.seed,
        progress=progress,
        precision=recipe.precision,
    )
    history = Trainer(model, BaselineLoss(), loader, config, device=device).fit()
    return model, {"worlds": worlds, "identities": num_ids, "images": len(items), "final_epoch": history[-1]}


def ensure_pretrained_backbone(
    cache_dir: str | os.PathLike[str],
    recipe: PretrainRecipe,
    data_root: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> PretrainedBackbone:
    """The backbone pretrained with ``recipe``: loaded from ``cache_dir`` or trained and cached there.

    Files: ``cache_dir/<backbone>-<fingerprint>.pt`` (weights, written atomically) and the same
    name with ``.json`` (the provenance). A cached file whose SHA-256 does not match its provenance
    is an error naming both files (delete them to retrain), never silently reused.

    Args:
        cache_dir: where pretrained backbones are kept (the book uses ``checkpoints/pretrained``).
        recipe: the worlds and the training recipe.
        data_root: where the pretraining worlds are rendered (``data_root/synthreid/pretrain_*``).
        device: where to train when the cache is empty.
        progress: show progress bars while rendering and training.
    """
    cache_dir, data_root = Path(cache_dir), Path(data_root)
    stem = f"{recipe.backbone}-{recipe.fingerprint()}"
    weights_path, info_path = cache_dir / f"{stem}.pt", cache_dir / f"{stem}.json"
    if weights_path.is_file() and info_path.is_file():
        provenance = json.loads(info_path.read_text())
        if provenance.get("sha256") != _sha256(weights_path):
            raise CheckpointError(
                f"{weights_path} does not match the SHA-256 recorded in {info_path}; "
                "delete both files to pretrain again"
            )
        return PretrainedBackbone(weights_path, provenance)
    start = time.perf_counter()
    model, summary = _train(recipe, data_root, torch.device(device), progress)
    seconds = time.perf_counter() - start
    save_checkpoint({"backbone": recipe.backbone, "state_dict": model.backbone.state_dict()}, weights_path)
    provenance = {
        "recipe": dataclasses.asdict(recipe),
        "fingerprint": recipe.fingerprint(),
        "sha256": _sha256(weights_path),
        "train_seconds": round(seconds, 1),
        "file": weights_path.name,
        **summary,
    }
    text = json.dumps(provenance, indent=1, default=str)
    atomic_write_text(info_path, text)
    return PretrainedBackbone(weights_path, json.loads(text))  # as a later call reads it back


def load_pretrained_backbone(backbone: ResNetBackbone, weights: PretrainedBackbone) -> None:
    """Copy pretrained weights into ``backbone`` (a chapter model's ``.backbone``), in place.

    Raises:
        ValueError: the backbone is another architecture than the one pretrained (names both).
        CheckpointError: the file cannot be read.
    """
    state = load_checkpoint(weights.path)
    if not isinstance(backbone, ResNetBackbone):
        raise ValueError(f"load_pretrained_backbone needs a ResNetBackbone, got {type(backbone).__name__}")
    if backbone.name != state.get("backbone"):
        raise ValueError(f"{weights.path} holds a {state.get('backbone')} backbone; the model's is {backbone.name}")
    backbone.load_state_dict(state["state_dict"])


def pretrained_cache_dir(results_dir: str | os.PathLike[str]) -> Path:
    """Where the book keeps pretrained backbones: ``<results_dir>/../checkpoints/pretrained``."""
    return Path(results_dir).parent / "checkpoints" / "pretrained"


def pretrained_for_profile(
    profile: str,
    data_root: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> PretrainedBackbone | None:
    """The backbone a chapter's CPU profile starts from, pretrained once and cached; ``None`` for ``paper``.

    The ``paper`` profile starts from ImageNet weights instead (``pretrained=True`` in the models).
    ``make book`` builds the ``synth`` backbone before the notebooks run (``tools/render_data.py``),
    so every chapter reuses one file.

    Raises:
        ValueError: a profile without a pretraining recipe (names the valid ones).
    """
    if profile == "paper":
        return None
    if profile not in PRETRAIN_RECIPES:
        raise ValueError(f"no pretraining recipe for profile {profile!r}; valid: {sorted(PRETRAIN_RECIPES)} or 'paper'")
    return ensure_pretrained_backbone(
        pretrained_cache_dir(results_dir), PRETRAIN_RECIPES[profile], data_root, device=device, progress=progress
    )


def provenance_summary(weights: PretrainedBackbone | None) -> dict[str, Any]:
    """What a results JSON records about the starting weights: the recipe, its fingerprint, the
    file's SHA-256, the worlds' sizes and the pretraining time (or ImageNet / none)."""
    if weights is None:
        return {"source": "ImageNet (torchvision) or none, as the profile says"}
    p = weights.provenance
    return {
        "source": "SynthReID pretraining (reid_core.book.pretrained)",
        "file": p.get("file"),
        "fingerprint": p.get("fingerprint"),
        "sha256": p.get("sha256"),
        "recipe": p.get("recipe"),
        "identities": p.get("identities"),
        "images": p.get("images"),
        "train_seconds": p.get("train_seconds"),
    }
