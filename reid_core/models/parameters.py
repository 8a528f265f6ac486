"""Parameter counts of a model or of parts of it.

Chapters: 02 (head size against the number of classes), 04 (EnsembleNet against an ensemble).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

__all__ = ["TRAINING_ONLY_MODULES", "count_parameters"]


TRAINING_ONLY_MODULES = ("classifier",)
"""Attribute names of sub-modules used only in training (identity classifiers): a test-time
parameter count leaves them out."""


def count_parameters(module: nn.Module, exclude: Iterable[str] = (), trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module``, optionally without some sub-modules.

    Args:
        module: any module.
        exclude: attribute names of sub-modules to leave out wherever they sit in the tree
            (e.g. :data:`TRAINING_ONLY_MODULES` = ``("classifier",)`` for a test-time count).
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The count (shared parameters are counted once).
    """
    excluded = set(exclude)
    seen: set[int] = set()
    total = 0
    for name, param in module.named_parameters():
        if excluded.intersection(name.split(".")[:-1]):
            continue
        if trainable_only and not param.requires_grad:
            continue
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
    return total
