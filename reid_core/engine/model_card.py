"""Self-describing model files: the weights together with everything needed to use them.

A Trainer checkpoint (``last.pt``) holds weights and optimiser state, but not which network they
belong to, at which input size it runs, nor which of its outputs is the embedding. A *model
card file* adds exactly that, so :func:`load_model` rebuilds a trained model with no notebook
code:

* the architecture: its name in :data:`reid_core.models.MODELS` and constructor arguments;
* the input: height, width and the normalisation :math:`x' = (x/255 - \\mu)/\\sigma`;
* the embedding: which :class:`~reid_core.models.ReIDOutput` field (e.g. ``feat``, the BNNeck
  output :math:`f_i` of the strong baseline), flip averaging, L2 normalisation, the metric;
* where it came from: the training data and recipe, and its results;
* optionally a same-person distance threshold written by ``reid calibrate``.

The file is written atomically and read with ``torch.load(weights_only=True)``
(:mod:`reid_core.engine.checkpoint`): only tensors, numbers, strings and containers, so opening
a model file cannot run code.

Example:
    >>> card = ModelCard("baseline", num_classes=751, model_kwargs={"backbone": "resnet50"}, height=256, width=128)
    >>> save_model(model, card, "baseline_market.pt")  # doctest: +SKIP
    >>> loaded = load_model("baseline_market.pt")  # doctest: +SKIP
    >>> loaded.model(images).feat  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reid_core.data import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from reid_core.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from reid_core.evaluation.distance import METRICS
from reid_core.models import MODELS, ReIDOutput, build_model

__all__ = [
    "MODEL_CARD_FORMAT",
    "ModelCard",
    "LoadedModel",
    "chapter_model_path",
    "save_model",
    "load_model",
    "update_model_card",
]

MODEL_CARD_FORMAT = "reid_core.model_card/1"
"""Tag stored in every model file; a later layout gets a new number and a converter."""

_EMBEDDING_FIELDS = ("feat", "global_feat", "local", "feature_map")


@dataclass
class ModelCard:
    """What rebuilds and uses a trained re-ID model.

    Attributes:
        architecture: a key of :data:`reid_core.models.MODELS` (``"baseline"``, ...).
        num_classes: training identities C (the classifier's width), or ``None`` if the model has none.
        model_kwargs: the other constructor arguments (``backbone``, ``last_stride``, ...). ``pretrained``
            is not stored here: the weights come from the file, so rebuilding never downloads.
        height, width: input size in pixels.
        mean, std: per-channel normalisation of images scaled to [0, 1].
        embedding_field: the :class:`~reid_core.models.ReIDOutput` field used for retrieval.
        embedding: a sentence saying what that field is (e.g. "BNNeck output f_i").
        flip: average the embedding of an image and of its mirror image.
        normalize: L2-normalise the embedding.
        metric: distance between embeddings (``"euclidean"``, ``"sqeuclidean"``, ``"cosine"``).
        training: free-form record of the training run (dataset, profile, recipe, ...).
        results: free-form record of the model's results (percentages, as in the results JSON).
        calibration: the same-person thresholds from ``reid calibrate``
            (:meth:`reid_core.evaluation.calibration.Calibration.to_dict`), or ``None``.
    """

    architecture: str
    num_classes: int | None
    model_kwargs: dict[str, Any]
    height: int
    width: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    embedding_field: str = "feat"
    embedding: str = ""
    flip: bool = True
    normalize: bool = False
    metric: str = "euclidean"
    training: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.architecture not in MODELS:
            raise ValueError(f"architecture {self.architecture!r} is not a registered model; valid: {sorted(MODELS)}")
        if "pretrained" in self.model_kwargs:
            raise ValueError(
                "model_kwargs must not hold 'pretrained': the weights come from the file. "
                "Record the starting point in training={'pretrained': ...} instead"
            )
        if self.height < 1 or self.width < 1:
            raise ValueError(f"height and width must be >= 1, got {self.height} x {self.width}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), got {self.mean} and {self.std}")
        if self.embedding_field not in _EMBEDDING_FIELDS:
            raise ValueError(f"embedding_field must be one of {_EMBEDDING_FIELDS}, got {self.embedding_field!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (what ``weights_only=True`` reads back); tuples become lists."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> ModelCard:
        """Rebuild from :meth:`to_dict`; unknown or missing keys raise naming ``source``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(f"{source}: unknown model card keys {unknown}; this reid_core knows {sorted(names)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: invalid model card: {err}") from err

    def build(self) -> nn.Module:
        """A freshly initialised model of this architecture (random weights, no download)."""
        return build_model(self.architecture, self.num_classes, **{**self.model_kwargs, "pretrained": False})


@dataclass
class LoadedModel:
    """A model rebuilt by :func:`load_model`, in eval mode, with its card.

    Attributes:
        model: the network; ``model(images)`` gives a :class:`~reid_core.models.ReIDOutput`.
        card: its :class:`ModelCard`.
        path: the file it was read from.
    """

    model: nn.Module
    card: ModelCard
    path: Path

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live."""
        return next(self.model.parameters()).device

    def transform(self):  # noqa: ANN201 - a ReIDTransform
        """The test transform of the card: resize to (height, width) and normalise."""
        return build_transforms(
            self.card.height, self.card.width, is_train=False, mean=self.card.mean, std=self.card.std
        )


def _plain(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python numbers, recursively; rejects what weights_only cannot read."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalar
        return value.item()
    raise TypeError(
        f"a model card holds plain values only (numbers, strings, lists, dicts); got {type(value).__name__}"
    )


def _check_rebuilds(model: nn.Module, card: ModelCard) -> None:
    """Build the card's architecture on the meta device and compare its state dict and embedding field."""
    with torch.device("meta"):
        fresh = card.build().eval()
        expected = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
        actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if expected != actual:
            missing = sorted(set(expected) - set(actual))[:5]
            extra = sorted(set(actual) - set(expected))[:5]
            shapes = [k for k in set(expected) & set(actual) if expected[k] != actual[k]][:5]
            raise ValueError(
                f"the card does not rebuild this model ({card.architecture}, num_classes={card.num_classes}, "
                f"{card.model_kwargs}): missing keys {missing}, unexpected keys {extra}, other shapes {shapes}"
            )
        output = fresh(torch.zeros(1, 3, card.height, card.width))
    if not isinstance(output, ReIDOutput) or getattr(output, card.embedding_field) is None:
        raise ValueError(
            f"{card.architecture} gives no {card.embedding_field!r} output; "
            f"choose embedding_field among the fields it fills"
        )


def save_model(model: nn.Module, card: ModelCard, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s weights and ``card`` to ``path`` atomically.

    The card is checked first: its architecture is built (on the meta device, no memory, no
    weights) and must have exactly the model's parameter names and shapes, and fill the
    card's embedding field, so a file that cannot be loaded back is never written.

    Args:
        model: the trained network (any device; weights are saved on the CPU).
        card: what rebuilds and uses it.
        path: target file (``.pt``); its folder is created.

    Returns:
        The path written.

    Raises:
        ValueError: the card does not describe this model.
    """
    _check_rebuilds(model, card)
    state = {
        "format": MODEL_CARD_FORMAT,
        "card": card.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return save_checkpoint(state, path)


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], ModelCard]:
    state = load_checkpoint(path)
    tag = state.get("format")
    if tag != MODEL_CARD_FORMAT:
        hint = (
            " It looks like a Trainer checkpoint (weights and optimiser state, no architecture): "
            "save the trained model with reid_core.engine.model_card.save_model."
            if "optimizer" in state
            else ""
        )
        raise CheckpointError(
            f"{path} is not a reid_core model file (format {tag!r}, expected "
            f"{MODEL_CARD_FORMAT!r}; keys {sorted(state)[:8]}).{hint}"
        )
    if not isinstance(state.get("card"), dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"{path}: a model file needs a 'card' dict and a 'state_dict' dict")
    return state, ModelCard.from_dict(state["card"], source=str(path))


def load_model(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a model saved by :func:`save_model` (read with ``weights_only=True``).

    Args:
        path: the model file.
        device: where to put the model.

    Returns:
        A :class:`LoadedModel`, the model in eval mode.

    Raises:
        CheckpointError: the file is missing, unreadable, not a model file, or its weights do
            not fit the architecture its card names.
    """
    state, card = _read(path)
    model = card.build()
    try:
        model.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit {card.architecture} {card.model_kwargs}: {err}") from err
    return LoadedModel(model=model.to(device).eval(), card=card, path=Path(path))


def update_model_card(path: str | os.PathLike[str], **changes: Any) -> ModelCard:
    """Change fields of the card stored in ``path`` (e.g. ``calibration=...``), rewriting it atomically.

    Returns:
        The new card.
    """
    state, card = _read(path)
    new_card = replace(card, **changes)
    state["card"] = new_card.to_dict()
    save_checkpoint(state, path)
    return new_card


def chapter_model_path(results_dir: str | os.PathLike[str], notebook: str, profile: str, dataset: str) -> Path:
    """Where a chapter saves its trained model.

    The path is ``<results_dir>/../checkpoints/<notebook>/model_<profile>_<dataset>.pt``.

    Next to the chapters' training checkpoints (outside the results JSON folder), one file per
    profile and dataset, so a smoke run never overwrites the book's model.
    """
    return Path(results_dir).parent / "checkpoints" / notebook / f"model_{profile}_{dataset}.pt"
