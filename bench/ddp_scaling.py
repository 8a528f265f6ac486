"""Training throughput (images/s) on 1 and N processes with torchrun (DistributedDataParallel).

The strong baseline's training step (BaselineNet + ID + batch-hard triplet loss, Adam) on a
fixed global batch (P x K images per step, split across the processes: strong scaling), on
in-memory random images, so the figure is the step itself (no JPEG decoding). Each case runs
``torchrun --standalone --nproc_per_node=n`` on this script (``--worker``) and reads back the
trainer's global images/s of a timed epoch after a warm-up epoch. The reference is 1 process;
the ratio is n-process images/s over it.

On the CPU every process uses ``--threads`` threads (gloo); ``--reference-threads`` adds a
1-process run with n x threads, the fair comparison when the n processes use n cores. On CUDA
each process takes one GPU (NCCL), n = 1 .. the number of GPUs.

Usage: python bench/ddp_scaling.py [--device cpu|cuda] [--processes 1 2] [--iters 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reid_core.collectives import process_count, process_rank
from reid_core.engine import TrainConfig, Trainer, init_distributed, shutdown_distributed
from reid_core.losses import BaselineLoss
from reid_core.models import BaselineNet
from reid_core.samplers import DistributedIdentitySampler, RandomIdentitySampler


def worker(args: argparse.Namespace) -> None:
    """One process of a case: train, then rank 0 writes the timed epoch's statistics."""
    torch.set_num_threads(args.threads)
    device = init_distributed(args.device)
    try:
        generator = torch.Generator().manual_seed(0)
        pids = torch.arange(args.ids).repeat_interleave(args.images_per_id)  # (N,)
        images = torch.randn(len(pids), 3, args.height, args.width, generator=generator)  # (N, 3, H, W)
        sampler = DistributedIdentitySampler(RandomIdentitySampler(pids.tolist(), args.batch, 4, seed=0))
        loader = DataLoader(TensorDataset(images, pids), batch_size=sampler.batch_size, sampler=sampler, drop_last=True)
        model = BaselineNet(args.ids, backbone=args.backbone, last_stride=1)
        config = TrainConfig(
            epochs=1,
            lr=3.5e-4,
            warmup_epochs=0,
            scheduler="constant",
            amp=True,
            max_iters_per_epoch=args.warmup,
            progress=False,
        )
        trainer = Trainer(model, BaselineLoss(), loader, config, device=device)
        trainer.fit()  # warm-up: allocator, cudnn, DDP's first-iteration bucket rebuild
        trainer.config.epochs, trainer.config.max_iters_per_epoch = 2, args.iters
        stats = trainer.fit()[-1]
        if process_rank() == 0:
            stats.update(processes=process_count(), threads=args.threads, batch_per_process=sampler.batch_size)
            Path(args.out).write_text(json.dumps(stats))
    finally:
        shutdown_distributed()


def run_case(args: argparse.Namespace, processes: int, threads: int) -> dict[str, float]:
    """Launch one case under torchrun; returns rank 0's statistics."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stats.json"
        forwarded = [
            "--worker",
            "--out",
            str(out),
            "--threads",
            str(threads),
            "--device",
            args.device,
            "--backbone",
            args.backbone,
            "--height",
            str(args.height),
            "--width",
            str(args.width),
            "--batch",
            str(args.batch),
            "--ids",
            str(args.ids),
            "--images-per-id",
            str(args.images_per_id),
            "--iters",
            str(args.iters),
            "--warmup",
            str(args.warmup),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            str(Path(__file__).resolve()),
            *forwarded,
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
        if result.returncode != 0:
            raise RuntimeError(f"case {processes} x {threads} threads failed:\n{result.stderr[-4000:]}")
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=None,
        help="process counts to time (default: 1 2 on the CPU, 1..#GPUs on CUDA)",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument(
        "--reference-threads",
        action="store_true",
        help="CPU: also time 1 process with max(processes) x threads threads",
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="global batch (P x 4)")
    parser.add_argument("--ids", type=int, default=64)
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--quick", action="store_true", help="64x32 input, 3 timed iterations (a check that it runs)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.height, args.width, args.iters, args.warmup = 64, 32, 3, 1
    if args.worker:
        worker(args)
        return
    if args.processes is None:
        args.processes = [1, 2] if args.device == "cpu" else list(range(1, torch.cuda.device_count() + 1))
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)"
    print(
        f"device: {name}; {args.backbone} at {args.height}x{args.width}, global batch {args.batch} "
        f"(P{args.batch // 4} x K4) split across the processes, {args.iters} timed iterations, "
        f"{args.threads} thread(s) per process",
        flush=True,
    )
    cases = [(n, args.threads) for n in sorted(set(args.processes) | {1})]
    if args.device == "cpu" and args.reference_threads and max(args.processes) > 1:
        cases.insert(1, (1, max(args.processes) * args.threads))
    reference = None
    for processes, threads in cases:
        stats = run_case(args, processes, threads)
        speed = stats["images_per_second"]
        reference = speed if reference is None else reference
        print(
            f"{processes} process(es) x {threads} thread(s), {stats['batch_per_process']:3d} images each: "
            f"{speed:8.1f} images/s   ({speed / reference:.2f}x the 1-process run)",
            flush=True,
        )


if __name__ == "__main__":
    main()
