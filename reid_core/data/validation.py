"""A validation split carved from the training identities, for choosing recipes without the test split.

Recipes (learning rates, epochs, pretraining worlds) are chosen on identities the test never
sees: a fraction of the *training* identities is held out and arranged as a small re-ID test of
its own, in Market-1501's convention: for each held-out identity, one query image per camera
(the first image of that camera in sorted order), the identity's other images in the gallery.
The evaluation's rule (drop gallery images of the query's identity seen by the query's camera)
then leaves only other-camera matches, as on the test split.

The remaining training identities are relabelled ``0..C'-1`` (sorted by their old label), so a
model trained on them has a classifier of the right size.

Chapters: 01 (the pretraining recipe and the fine-tuning recipe are chosen on it) and every
chapter that says how its recipe was chosen.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from reid_core.data.base import Item

__all__ = ["ValidationSplit", "carve_validation"]


@dataclass(frozen=True)
class ValidationSplit:
    """Training identities left for training, and the held-out ones as query and gallery.

    Attributes:
        train: the training items of the kept identities, labels relabelled ``0..C'-1``.
        query: one item per camera of each held-out identity (original training labels).
        gallery: the held-out identities' other items.
        held_out: the held-out training labels, sorted.
    """

    train: list[Item]
    query: list[Item]
    gallery: list[Item]
    held_out: list[int]

    @property
    def num_train_pids(self) -> int:
        """The number of identities left for training."""
        return len({pid for _, pid, _ in self.train})


def carve_validation(train: Sequence[Item], fraction: float = 0.2, seed: int = 0) -> ValidationSplit:
    """Hold out ``fraction`` of the training identities (at least one) as a validation re-ID test.

    Only identities seen by at least two cameras can be held out (a query needs a match from
    another camera); the held-out ones are drawn among those with ``random.Random(seed)``.

    Args:
        train: a reader's ``train`` list of ``(path, pid, camid)``.
        fraction: the share of the training identities to hold out, in (0, 1).
        seed: the draw's seed (same seed, same split).

    Raises:
        ValueError: ``fraction`` outside (0, 1), an empty ``train``, or fewer identities seen by
            two cameras than the split needs (the message gives both counts).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    if not train:
        raise ValueError("carve_validation: the training list is empty")
    by_pid: dict[int, list[Item]] = defaultdict(list)
    for item in train:
        by_pid[item[1]].append(item)
    pids = sorted(by_pid)
    wanted = max(1, round(fraction * len(pids)))
    eligible = [pid for pid in pids if len({cam for _, _, cam in by_pid[pid]}) >= 2]
    if len(eligible) < wanted or wanted >= len(pids):
        raise ValueError(
            f"carve_validation: {wanted} of {len(pids)} training identities requested, "
            f"{len(eligible)} are seen by two or more cameras (and at least one must stay for training)"
        )
    held_out = sorted(random.Random(seed).sample(eligible, wanted))
    held = set(held_out)
    query: list[Item] = []
    gallery: list[Item] = []
    for pid in held_out:
        first_of_camera: dict[int, Item] = {}
        for item in sorted(by_pid[pid]):
            first_of_camera.setdefault(item[2], item)
        chosen = set(first_of_camera.values())
        query += sorted(chosen, key=lambda item: (item[2], item[0]))
        gallery += [item for item in sorted(by_pid[pid]) if item not in chosen]
    kept = [pid for pid in pids if pid not in held]
    new_label = {pid: label for label, pid in enumerate(kept)}
    rest = [(path, new_label[pid], cam) for path, pid, cam in train if pid not in held]
    return ValidationSplit(train=rest, query=query, gallery=gallery, held_out=held_out)
