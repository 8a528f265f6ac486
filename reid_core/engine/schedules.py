r"""Learning-rate schedules, as a factor of the base learning rate per iteration.

Every schedule is a function ``factor(epoch_float) -> float`` where ``epoch_float`` is the
fractional epoch (``epoch + iteration / iters_per_epoch``), so warm-up is smooth within an
epoch and step decays land on epoch boundaries.

- Linear warm-up (Goyal et al. 2017; Luo et al. 2019 use 10 epochs from 0.1x... of the base lr):
  factor rises from ``warmup_factor`` to 1 over ``warmup_epochs``.
- ``step``: multiply by ``gamma`` at each milestone epoch.
- ``cosine``: :math:`\tfrac12(1 + \cos(\pi t / T))`, down to ``min_factor``.
- ``exp``: constant until ``decay_start``, then
  :math:`0.001^{(e + 1 - t_0)/(T + 1 - t_0)}` (Hermans et al. 2017; the AlignedReID
  re-production uses it with T = 300, t0 = 151).
- ``constant``.

:class:`AdaptiveLossStep` is QAConv 2.1's schedule (Liao & Shao 2022): one x0.1 step when the
epoch loss falls below 70% of the loss after the second epoch, then 50% more epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["build_lr_schedule", "AdaptiveLossStep", "SCHEDULES"]

SCHEDULES = ("step", "cosine", "exp", "constant")


def build_lr_schedule(
    name: str,
    epochs: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    warmup_factor: float = 0.1,
    decay_start: int | None = None,
    min_factor: float = 0.0,
) -> Callable[[float], float]:
    """Build ``factor(epoch_float)``; see the module docstring for each schedule.

    Args:
        name: one of :data:`SCHEDULES`.
        epochs: total epochs T.
        milestones: epochs at which ``step`` multiplies by ``gamma``.
        gamma: step decay factor.
        warmup_epochs: length of the linear warm-up (0 = none).
        warmup_factor: factor at the start of the warm-up.
        decay_start: t0 for ``exp`` (default: half of ``epochs``).
        min_factor: floor of ``cosine``.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {name!r}; valid names: {SCHEDULES}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    t0 = epochs // 2 if decay_start is None else decay_start
    steps = sorted(milestones)

    def decay(e: float) -> float:
        if name == "step":
            return gamma ** sum(1 for m in steps if e >= m)
        if name == "cosine":
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(e, epochs) / epochs))
        if name == "exp":
            whole = math.floor(e)
            return 1.0 if whole < t0 else 0.001 ** ((whole + 1 - t0) / (epochs + 1 - t0))
        return 1.0

    def factor(e: float) -> float:
        if warmup_epochs > 0 and e < warmup_epochs:
            return warmup_factor + (1 - warmup_factor) * e / warmup_epochs
        return decay(e)

    return factor


@dataclass
class AdaptiveLossStep:
    """QAConv 2.1's adaptive schedule, used as a trainer callback.

    After epoch 2 (1-based) the mean loss is the reference; the first epoch whose loss is below
    ``ratio`` x reference multiplies the learning rate by ``gamma`` once, and training then
    stops after ``min(max_epochs, e + e // 2)`` epochs (e = that epoch, 1-based).

    Attributes:
        lr_scale: the factor the trainer applies on top of its schedule (1, then ``gamma``).
        final_epochs: set when the step happens.
    """

    ratio: float = 0.7
    gamma: float = 0.1
    max_epochs: int = 60
    base_loss: float | None = None
    step_epoch: int | None = None
    final_epochs: int | None = None
    lr_scale: float = 1.0
    log: list[str] = field(default_factory=list)

    def on_epoch_end(self, trainer: object, epoch: int, stats: dict[str, float]) -> None:
        """Update the state from the epoch's mean total loss; ``epoch`` is 0-based."""
        e = epoch + 1
        loss = stats["loss"]
        if e == 2:
            self.base_loss = loss
        elif self.base_loss is not None and self.step_epoch is None and loss < self.ratio * self.base_loss:
            self.step_epoch = e
            self.lr_scale = self.gamma
            trainer.lr_scale = self.lr_scale  # type: ignore[attr-defined]
            self.final_epochs = min(self.max_epochs, e + e // 2)
            self.log.append(
                f"epoch {e}: loss {loss:.4f} < {self.ratio} x {self.base_loss:.4f}; lr x{self.gamma}, stop "
                f"after {self.final_epochs}"
            )
        limit = self.final_epochs if self.final_epochs is not None else self.max_epochs
        if e >= limit:
            trainer.stop_training = True  # type: ignore[attr-defined]
