"""Training throughput of the strong baseline (images/s), with and without mixed precision.

The `paper` profile's recipe on SynthReID: ResNet-50 (last stride 1) + BNNeck, 256x128 input,
P=16 x K=4, Adam, ID (label smoothing) + triplet loss. Times `--iters` training iterations
after `--warmup` ones, once in float32 and once with AMP (float16 autocast + GradScaler), both
with channels_last on CUDA, in the same process; prints images/s and the AMP/float32 ratio.

Usage: python bench/train_throughput.py [--device cuda] [--iters 30] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from reid_core.data.synthreid.reader import SynthReID
from reid_core.data.synthreid.world import render_synthreid
from reid_core.engine.loaders import build_train_loader
from reid_core.engine.trainer import TrainConfig, Trainer
from reid_core.losses.baseline_loss import BaselineLoss
from reid_core.models.baseline import BaselineNet


def measure(data: SynthReID, args: argparse.Namespace, amp: bool, device: torch.device) -> float:
    loader = build_train_loader(
        data.train, args.height, args.width, batch_size=64, num_instances=4, preload=True, workers=args.workers
    )
    model = BaselineNet(data.num_train_pids, backbone=args.backbone, last_stride=1)
    cfg = TrainConfig(
        epochs=1,
        lr=3.5e-4,
        warmup_epochs=0,
        scheduler="constant",
        amp=amp,
        channels_last=True,
        max_iters_per_epoch=args.warmup,
        progress=False,
    )
    trainer = Trainer(model, BaselineLoss(), loader, cfg, device=device)
    trainer.fit()  # warm-up (cudnn autotune, allocator)
    trainer.config.epochs, trainer.config.max_iters_per_epoch = 2, args.iters
    stats = trainer.fit()[-1]
    return stats["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="resnet18 at 128x64, 3 iterations (CPU check)")
    args = parser.parse_args()
    if args.quick:
        args.backbone, args.height, args.width, args.iters, args.warmup = "resnet18", 128, 64, 3, 1
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        render_synthreid(tmp, num_ids=120, images_per_id=12, seed=0, progress=False)
        data = SynthReID(tmp, verbose=False)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(
            f"device: {name}; {args.backbone} at {args.height}x{args.width}, batch 64 (P16 x K4), "
            f"{args.iters} timed iterations"
        )
        fp32 = measure(data, args, amp=False, device=device)
        print(f"float32: {fp32:8.1f} images/s")
        if device.type == "cuda":
            mixed = measure(data, args, amp=True, device=device)
            print(f"AMP    : {mixed:8.1f} images/s   (AMP / float32 = {mixed / fp32:.2f}x)")


if __name__ == "__main__":
    main()
