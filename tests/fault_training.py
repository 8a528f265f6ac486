"""A small training run that the fault tests kill with SIGKILL at a known point, then resume.

Usage:
    python tests/fault_training.py CHECKPOINT_DIR WEIGHTS_OUT [--hang iteration:N | save:N] [--signal FILE]

Trains a tiny network for ``EPOCHS`` epochs on fixed random data with a shuffling loader (so the
resumed run must restore the random state to see the same batches), checkpointing every epoch,
and writes the final weights to ``WEIGHTS_OUT``. With ``--hang``, the run stops dead at the
``N``-th training iteration, or inside the ``N``-th checkpoint save (after the temporary file is
written, before it replaces ``last.pt``): it writes ``--signal`` and sleeps until it is killed.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reid_core.engine import TrainConfig, Trainer

EPOCHS = 4


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU())
        self.cls = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.body(x))  # (B, 3)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"id": nn.functional.cross_entropy(logits, labels)}


def hang(signal: Path) -> None:
    signal.write_text(str(os.getpid()))
    time.sleep(600)  # the test kills us long before


class HangAtIteration:
    """Trainer callback: hang at iteration ``n`` (1-based, counted over the whole run)."""

    def __init__(self, n: int, signal: Path) -> None:
        self.n, self.signal = n, signal

    def on_iteration_end(self, trainer: Trainer, iteration: int, terms: dict[str, float]) -> None:
        if iteration == self.n:
            hang(self.signal)


def hang_in_save(n: int, signal: Path) -> None:
    """Make the ``n``-th rename of a checkpoint's temporary file hang instead."""
    real_replace, calls = os.replace, [0]

    def replace(src: str, dst: str) -> None:
        if Path(dst).name == "last.pt":
            calls[0] += 1
            if calls[0] == n:
                hang(signal)
        real_replace(src, dst)

    os.replace = replace  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir")
    parser.add_argument("weights_out")
    parser.add_argument("--hang", default=None, help="iteration:N or save:N")
    parser.add_argument("--signal", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 3
    images = torch.randn(48, 3, 2, 2, generator=generator) + labels.view(-1, 1, 1, 1).float()
    loader = DataLoader(TensorDataset(images, labels), batch_size=8, shuffle=True)
    torch.manual_seed(0)
    model = TinyNet()
    callbacks = []
    if args.hang:
        kind, n = args.hang.split(":")
        if kind == "iteration":
            callbacks.append(HangAtIteration(int(n), Path(args.signal)))
        else:
            hang_in_save(int(n), Path(args.signal))
    config = TrainConfig(
        epochs=EPOCHS,
        optimizer="adam",
        lr=0.01,
        scheduler="step",
        milestones=(2,),
        warmup_epochs=1,
        progress=False,
        seed=3,
        checkpoint_dir=args.checkpoint_dir,
    )
    Trainer(model, cross_entropy, loader, config, device="cpu", callbacks=callbacks).fit()
    torch.save(model.state_dict(), args.weights_out)


if __name__ == "__main__":
    main()
