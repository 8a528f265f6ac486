"""Run a chapter's training recipe outside the notebook, on one or several processes, with torchrun.

One machine with N GPUs (or N CPU processes with gloo):

    torchrun --standalone --nproc_per_node=N tools/train_ddp.py --chapter 01 --profile paper \\
        --dataset market1501 --data-root /data/reid

Two machines with 4 GPUs each: the same command on both, with the rendezvous on the first one:

    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST0:29500 \\
        --rdzv_id=reid01 tools/train_ddp.py --chapter 01 --profile paper --dataset market1501 --data-root /data/reid

``python tools/train_ddp.py ...`` runs the same recipe in one process.

Chapters: ``01`` (the strong baseline of Luo et al. 2019, as ``notebooks/01_reid_basics.py``
trains it). The recipe is the notebook's ``PROFILES`` entry, read from the notebook itself, so
the two cannot drift apart. The profile's ``batch_size`` is the *global* batch: each of the N
processes trains on ``batch_size / N`` images (whole P x K groups, see
``reid_core.samplers.DistributedIdentitySampler``), and the batch-hard triplet loss mines over
the global batch, so N processes train with the paper's batch whatever N is. Only rank 0 writes
the checkpoints (``paper`` profile: the notebook's folder, so the notebook resumes from them),
the log and the results JSON (``results_dir/01_reid_basics/<run>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reid_core.book import checkpoint_dir, read_notebook_profiles, select_profile, write_result
from reid_core.collectives import is_distributed, process_count, process_rank
from reid_core.data import SynthReID, build_dataset, prepare_synthreid
from reid_core.engine import (
    DistributedConfig,
    TrainConfig,
    Trainer,
    build_test_loader,
    build_train_loader,
    default_workers,
    evaluate_reid,
    init_distributed,
    seed_everything,
    shutdown_distributed,
)
from reid_core.losses import BaselineLoss
from reid_core.models import BaselineNet
from reid_core.samplers import DistributedIdentitySampler, RandomIdentitySampler

CHAPTERS = {"01": "01_reid_basics"}


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=30", "milestones=[20, 25]"]`` -> ``{"epochs": 30, "milestones": [20, 25]}`` (JSON values)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--override takes key=value, got {pair!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text  # a bare word: a string
    return overrides


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def load_data(profile: str, cfg: dict[str, Any], dataset: str, data_root: str) -> tuple[Any, str]:
    """The dataset reader. SynthReID is rendered by rank 0 first, then checked by the first process
    of every other machine (rendered there too where ``data_root`` is not a shared folder)."""
    if profile == "paper":
        return build_dataset(dataset, data_root, verbose=False), dataset
    if process_rank() == 0:
        prepare_synthreid(data_root, cfg["preset"])
    barrier()
    if int(os.environ.get("LOCAL_RANK", 0)) == 0 and process_rank() != 0:
        prepare_synthreid(data_root, cfg["preset"], progress=False)
    barrier()
    root = prepare_synthreid(data_root, cfg["preset"], progress=False)  # every rank: the folder, now ready
    return SynthReID(root, verbose=False), f"synthreid/{cfg['preset']}"


def train_baseline(args: argparse.Namespace, device: torch.device) -> None:
    """Chapter 01: the strong baseline (ResNet + BNNeck, label-smoothed ID loss + batch-hard triplet)."""
    notebook = CHAPTERS[args.chapter]
    profiles = read_notebook_profiles(ROOT / "notebooks" / f"{notebook}.py")
    cfg = select_profile(profiles, args.profile, parse_overrides(args.override))
    seed_everything(args.seed)
    data, dataset_name = load_data(args.profile, cfg, args.dataset, args.data_root)
    world = process_count()
    preload = args.profile != "paper"
    workers = (
        args.workers if args.workers is not None else default_workers() // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    )

    pids = [pid for _, pid, _ in data.train]
    sampler = DistributedIdentitySampler(
        RandomIdentitySampler(pids, cfg["batch_size"], cfg["num_instances"], seed=args.seed)
    )
    train_loader = build_train_loader(
        data.train,
        cfg["height"],
        cfg["width"],
        batch_size=sampler.batch_size,
        num_instances=cfg["num_instances"],
        sampler=sampler,
        preload=preload,
        workers=workers,
    )
    query_loader = build_test_loader(data.query, cfg["height"], cfg["width"], preload=preload, workers=workers)
    gallery_loader = build_test_loader(data.gallery, cfg["height"], cfg["width"], preload=preload, workers=workers)
    first_on_machine = int(os.environ.get("LOCAL_RANK", 0)) == 0
    if not first_on_machine:
        barrier()  # the machine's first process downloads the ImageNet weights once, the others wait
    model = BaselineNet(data.num_train_pids, backbone=cfg["backbone"], pretrained=cfg["pretrained"], last_stride=1)
    if first_on_machine:
        barrier()
    criterion = BaselineLoss(id_weight=1.0, triplet_weight=1.0, margin=0.3, label_smoothing=0.1)
    checkpoints = args.checkpoint_dir or checkpoint_dir(args.results_dir, notebook, args.dataset, args.profile)
    train_cfg = TrainConfig(
        epochs=cfg["epochs"],
        optimizer="adam",
        lr=cfg["lr"],
        weight_decay=5e-4,
        scheduler="step",
        milestones=cfg["milestones"],
        gamma=0.1,
        warmup_epochs=cfg["warmup_epochs"],
        warmup_factor=0.1,
        max_iters_per_epoch=cfg["max_iters"],
        seed=args.seed,
        checkpoint_dir=checkpoints,
    )
    if process_rank() == 0:
        print(
            f"{world} process(es) on {device}: global batch {cfg['batch_size']} = {world} x {sampler.batch_size}, "
            f"{len(train_loader)} iterations per epoch, {data.num_train_pids} training identities",
            flush=True,
        )

    start = time.perf_counter()
    Trainer(
        model, criterion, train_loader, train_cfg, device=device, distributed=DistributedConfig(sync_bn=args.sync_bn)
    ).fit()
    train_seconds = time.perf_counter() - start
    result = evaluate_reid(
        model, query_loader, gallery_loader, metric="euclidean", flip=True, device=device, split_across_processes=True
    )
    if process_rank() == 0:
        print(f"strong baseline: {result} (trained in {train_seconds:.0f} s)", flush=True)
        params = {k: v for k, v in cfg.items() if k != "preset"}
        params.update(processes=world, batch_per_process=sampler.batch_size, sync_bn=args.sync_bn)
        path = write_result(
            args.results_dir,
            notebook,
            args.run,
            method=f"strong baseline ({cfg['backbone']})",
            dataset=dataset_name,
            profile=args.profile,
            train_seconds=train_seconds,
            device=f"{world} x {device.type}",
            params=params,
            **result.metrics,
        )
        print(f"results: {path}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapter", required=True, choices=sorted(CHAPTERS))
    parser.add_argument("--profile", default="synth", help="a profile of the chapter's notebook (smoke, synth, paper)")
    parser.add_argument(
        "--dataset", default="synthreid", help="paper profile: market1501, dukemtmcreid, cuhk03, msmt17"
    )
    parser.add_argument("--data-root", default=str(ROOT / "data"))
    parser.add_argument("--results-dir", default=str(ROOT / "results"))
    parser.add_argument("--checkpoint-dir", default=None, help="default: the notebook's (paper profile only)")
    parser.add_argument("--run", default="baseline-ddp", help="name of the results JSON")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="loader processes per rank")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm over the global batch (CUDA)")
    parser.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a profile setting, e.g. -o epochs=30 -o 'milestones=[20, 25]'",
    )
    args = parser.parse_args(argv)
    device = init_distributed(args.device)
    try:
        train_baseline(args, device)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main()
