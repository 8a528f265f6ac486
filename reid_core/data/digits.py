"""scikit-learn's 8x8 digits (shipped with the package, offline), standardised and split per class.

A small metric-learning dataset with classes that can be held out: train on some digits, test
retrieval on digits never seen in training.

Chapter: 02 (metric learning).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["DigitsSplit", "load_digits_split"]


@dataclass
class DigitsSplit:
    """Digits split into train and test images, with their digit labels (0-9).

    Attributes:
        train_images: (N, 1, 8, 8) float32, standardised with the train mean and std.
        train_labels: (N,) int64 digits.
        test_images: (M, 1, 8, 8) float32, standardised with the same statistics.
        test_labels: (M,) int64 digits.
    """

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor

    def subset(
        self, train_classes: Sequence[int] | None = None, test_classes: Sequence[int] | None = None
    ) -> DigitsSplit:
        """Keep only some digits in the train part and/or the test part (``None`` keeps all)."""

        def keep(images: Tensor, labels: Tensor, classes: Sequence[int] | None) -> tuple[Tensor, Tensor]:
            if classes is None:
                return images, labels
            mask = torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))  # (N,)
            if not mask.any():
                raise ValueError(
                    f"classes {list(classes)} select no image (labels present: {labels.unique().tolist()})"
                )
            return images[mask], labels[mask]

        train = keep(self.train_images, self.train_labels, train_classes)
        test = keep(self.test_images, self.test_labels, test_classes)
        return DigitsSplit(train[0], train[1], test[0], test[1])


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as read-only (1797, 8, 8) float32 images and (1797,) int64 labels (read once)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32)
    labels = np.asarray(digits.target, dtype=np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def load_digits_split(test_fraction: float = 0.3, seed: int = 0) -> DigitsSplit:
    """scikit-learn's digits (1,797 images, 8x8, values 0-16), split per class at random.

    Args:
        test_fraction: share of each class's images held out for testing, in (0, 1).
        seed: the split's random seed.

    Returns:
        The :class:`DigitsSplit`, standardised with the mean and std of the train pixels.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    images, labels = _raw_digits()  # (1797, 8, 8), (1797,)
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):  # stratified: the same share of every digit
        idx = rng.permutation(np.flatnonzero(labels == c))
        test_mask[idx[: int(round(test_fraction * len(idx)))]] = True
    train = images[~test_mask]
    mean, std = float(train.mean()), float(train.std())
    norm = torch.from_numpy((images - mean) / std).unsqueeze(1)  # (1797, 1, 8, 8)
    lab = torch.from_numpy(labels.copy())  # the cached array is read-only
    test = torch.from_numpy(test_mask)
    return DigitsSplit(norm[~test], lab[~test], norm[test], lab[test])
