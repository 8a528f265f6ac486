"""Training scenarios run under ``torchrun`` by tests/test_distributed.py, and in-process for the reference.

Usage (what the tests launch):
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_scenarios.py equivalence OUT
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_scenarios.py resumable OUT [--kill-at E]

``equivalence`` trains each variant of :data:`VARIANTS` for a few steps from the same initial
weights on the same global batches and writes, on rank 0, the final weights to ``OUT/<variant>.pt``;
every rank writes the dataset indices it read, in order, to ``OUT/<variant>_rank<r>.json``. The
test runs :func:`train_variant` in one process with the global batch and compares. In the same
launch (one start-up instead of several) it also extracts features of a test set split across
the ranks (``OUT/features.pt``), checks a gradient through the gather (``OUT/gather_rank<r>.pt``)
and runs ``resumable`` without interruption (``OUT/uninterrupted/final.pt``).

``resumable`` trains a model with dropout (so each rank's random state matters) with a
checkpoint per epoch; ``--kill-at E`` makes rank 1 kill itself (SIGKILL) in epoch E.

Every BatchNorm is kept in eval mode: on the CPU PyTorch has no SyncBatchNorm, and a BN in
training mode normalises each rank's share with that share's statistics, which a single
process with the whole batch would not do.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reid_core.collectives import gather_with_grad, process_rank
from reid_core.engine import (
    DistributedConfig,
    TrainConfig,
    Trainer,
    extract_features_distributed,
    init_distributed,
    shutdown_distributed,
)
from reid_core.losses import BaselineLoss, QAConvCriterion, build_metric_criterion
from reid_core.models import BaselineNet, QAConv, ReIDOutput
from reid_core.samplers import DistributedIdentitySampler, GraphSampler, GraphSamplingCallback, RandomIdentitySampler

NUM_IDS, PER_ID, HEIGHT, WIDTH = 8, 5, 16, 8
GLOBAL_BATCH, NUM_INSTANCES = 16, 4  # P = 4 identities x K = 4 images per step; 2 ranks hold 2 identities each
VARIANTS = ("baseline", "triplet", "triplet_local", "contrastive", "adacos", "qaconv", "qaconv_pairwise", "graph")


class RecordingDataset(Dataset):
    """Fixed random images (N, 3, H, W) with pids and cameras; remembers which indices were read."""

    def __init__(self, num_ids: int = NUM_IDS, per_id: int = PER_ID, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.pids = torch.arange(num_ids).repeat_interleave(per_id)  # (N,)
        centres = torch.randn(num_ids, 3, HEIGHT, WIDTH, generator=generator)  # (C, 3, H, W)
        noise = torch.randn(len(self.pids), 3, HEIGHT, WIDTH, generator=generator)  # (N, 3, H, W)
        self.images = centres[self.pids] + 0.8 * noise  # (N, 3, H, W)
        self.camids = torch.arange(len(self.pids)) % 3  # (N,)
        self.read: list[int] = []

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        self.read.append(int(index))
        return self.images[index], int(self.pids[index]), int(self.camids[index])


class SmallEmbedder(nn.Module):
    """conv -> ReLU -> (dropout) -> mean pool -> linear: a BN-free model with a feature map."""

    def __init__(self, dim: int = 12, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(6, dim)

    def forward(self, images: Tensor) -> ReIDOutput:
        fmap = torch.relu(self.conv(images))  # (B, 6, H, W)
        fmap = self.drop(fmap)
        feat = self.fc(fmap.mean(dim=(2, 3)))  # (B, dim)
        return ReIDOutput(feat=feat, feature_map=nn.functional.normalize(fmap, dim=1))


class FreezeAllBatchNorm:
    """Trainer callback: every BatchNorm of the model and criterion in eval mode (see the module doc)."""

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        for owner in (trainer.model, trainer.criterion):
            for module in owner.modules() if isinstance(owner, nn.Module) else ():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()


def build_variant(name: str, dataset: RecordingDataset) -> tuple[nn.Module, Any, Any, list[Any]]:
    """(model, criterion, global sampler, extra callbacks) of one variant, from fixed seeds."""
    torch.manual_seed(0)
    pids = dataset.pids.tolist()
    sampler: Any = RandomIdentitySampler(pids, GLOBAL_BATCH, NUM_INSTANCES, seed=1)
    callbacks: list[Any] = []
    if name == "baseline":
        return BaselineNet(NUM_IDS, backbone="resnet10"), BaselineLoss(), sampler, callbacks
    model = SmallEmbedder()
    if name in ("triplet", "triplet_local", "graph"):
        scope = "local" if name == "triplet_local" else "global"
        criterion = build_metric_criterion("triplet", 12, NUM_IDS, margin=0.5, batch_scope=scope)
        if name == "graph":
            sampler = GraphSampler(pids, GLOBAL_BATCH, NUM_INSTANCES, seed=2)
            items = [(str(i), pid, 0) for i, pid in enumerate(pids)]
            lookup = {str(i): dataset.images[i] for i in range(len(pids))}
            callbacks.append(GraphSamplingCallback(sampler, items, lambda x: x, "euclidean", image_loader=lookup.get))
        return model, criterion, sampler, callbacks
    if name == "contrastive":
        return model, build_metric_criterion("contrastive", 12, NUM_IDS, margin=1.0), sampler, callbacks
    if name == "adacos":
        return model, build_metric_criterion("adacos", 12, NUM_IDS), sampler, callbacks
    if name in ("qaconv", "qaconv_pairwise"):
        loss = "pairwise" if name == "qaconv_pairwise" else "triplet"
        weight = 0.02 if loss == "pairwise" else 1.0  # the pairwise loss sums over the batch: keep its steps small
        return (
            model,
            QAConvCriterion(QAConv(6, HEIGHT, WIDTH), loss=loss, margin=1.0, weight=weight),
            sampler,
            callbacks,
        )
    raise ValueError(f"unknown variant {name!r}; valid: {VARIANTS}")


def train_config(**changes: Any) -> TrainConfig:
    """SGD (not Adam: Adam's update is blind to a constant factor on the gradient), no warm-up."""
    options: dict[str, Any] = dict(
        epochs=2,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        scheduler="constant",
        warmup_epochs=0,
        amp=False,
        max_iters_per_epoch=2,
        progress=False,
        seed=0,
    )
    options.update(changes)
    return TrainConfig(**options)


def train_variant(name: str, distributed: bool) -> tuple[dict[str, Tensor], list[int], nn.Module]:
    """Train one variant; returns (final weights of model and criterion, indices read, model)."""
    dataset = RecordingDataset()
    model, criterion, sampler, callbacks = build_variant(name, dataset)
    if distributed:
        sampler = DistributedIdentitySampler(sampler)
    loader = DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler, drop_last=True, num_workers=0)
    # QAConv's loss reads the feature map only: the embedder's fc gets no gradient
    ddp = DistributedConfig(find_unused_parameters=name.startswith("qaconv"))
    trainer = Trainer(
        model,
        criterion,
        loader,
        train_config(),
        device="cpu",
        callbacks=[FreezeAllBatchNorm(), *callbacks],
        distributed=ddp,
    )
    trainer.fit()
    weights = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    if isinstance(criterion, nn.Module):
        weights.update({f"criterion.{k}": v.detach().clone() for k, v in criterion.state_dict().items()})
    return weights, list(dataset.read), model


def make_test_loader(num_items: int = 13) -> DataLoader:
    """A test set whose size does not divide by 2 (the shards differ in size)."""
    dataset = RecordingDataset(num_ids=num_items, per_id=1, seed=5)
    return DataLoader(dataset, batch_size=4, shuffle=False)


def gather_gradient(out: Path) -> None:
    """Each rank's loss uses every gathered row through a transposed view (as QAConv does)."""
    rank = process_rank()
    x = (torch.randn(3, 4, 5) + rank).requires_grad_()
    gathered = gather_with_grad(x)  # (6, 4, 5)
    base = torch.arange(120.0).view(6, 5, 4)
    (gathered.transpose(1, 2) * base * (rank + 1)).sum().backward()  # rank r weighs the rows by r + 1
    expected = 3 * base.transpose(1, 2)[3 * rank : 3 * rank + 3]  # (1 + 2) x this rank's rows of the weights
    torch.save({"grad": x.grad, "expected": expected}, out / f"gather_rank{rank}.pt")


def sync_bn_on_cpu(out: Path) -> None:
    """SyncBatchNorm has no CPU kernels: the trainer must say so instead of failing mid-step."""
    try:
        Trainer(
            BaselineNet(NUM_IDS, backbone="resnet10"),
            BaselineLoss(),
            [],
            train_config(),
            device="cpu",
            distributed=DistributedConfig(sync_bn=True),
        )
        message = "no error"
    except ValueError as err:
        message = str(err)
    (out / f"sync_bn_rank{process_rank()}.txt").write_text(message)


def equivalence(out: Path) -> None:
    rank = process_rank()
    gather_gradient(out)
    sync_bn_on_cpu(out)
    for name in VARIANTS:
        weights, read, model = train_variant(name, distributed=True)
        (out / f"{name}_rank{rank}.json").write_text(json.dumps(read))
        if rank == 0:
            torch.save(weights, out / f"{name}.pt")
        if name == "baseline":
            features = extract_features_distributed(model, make_test_loader(), device="cpu", progress=False)
            if rank == 0:
                torch.save(
                    {
                        "features": features.features,
                        "pids": torch.as_tensor(features.pids),
                        "camids": torch.as_tensor(features.camids),
                    },
                    out / "features.pt",
                )
    resumable(out / "uninterrupted", kill_at=None)


class KillRank:
    """Trainer callback: rank 1 sends itself SIGKILL after its first step of ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_iteration_end(self, trainer: Any, iteration: int, terms: dict[str, float]) -> None:
        if process_rank() == 1 and trainer.state.epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


def resumable(out: Path, kill_at: int | None) -> None:
    dataset = RecordingDataset()
    torch.manual_seed(0)
    model = SmallEmbedder(dropout=0.3)
    criterion = build_metric_criterion("triplet", 12, NUM_IDS, margin=0.5)
    sampler = DistributedIdentitySampler(
        RandomIdentitySampler(dataset.pids.tolist(), GLOBAL_BATCH, NUM_INSTANCES, seed=1)
    )
    loader = DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler, drop_last=True)
    callbacks = [] if kill_at is None else [KillRank(kill_at)]
    config = train_config(epochs=4, checkpoint_dir=str(out / "checkpoints"), progress=True)  # 2 steps per epoch
    Trainer(model, criterion, loader, config, device="cpu", callbacks=callbacks).fit()
    if process_rank() == 0:
        torch.save(model.state_dict(), out / "final.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=("equivalence", "resumable"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--kill-at", type=int, default=None, help="resumable: rank 1 dies in this epoch (0-based)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    init_distributed("cpu", timeout_s=60)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.scenario == "equivalence":
            equivalence(args.out)
        else:
            resumable(args.out, args.kill_at)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main()
