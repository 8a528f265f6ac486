"""Training and feature-extraction speed on the CPU: today's path against bf16, batched augmentation and
one process per core, alone and together; and three seeds of a shortened `synth` recipe.

Set-ups, each measured in fresh spawned processes (peak memory = their largest resident set):

* ``today``: 1 process with every core's thread, float32, per-sample transforms;
* ``+bf16``: the same with bfloat16 autocast (``precision="bf16"``);
* ``+batch aug``: the same with ``build_train_loader(batch_augment=True)``;
* ``+procs``: one process per core, 1 thread each, running the same case side by side (a barrier
  starts the timed parts together; images/s is the sum over the processes);
* ``+kernels``: the kernel-level changes alone: the fused optimizer (one kernel per step instead of a
  loop over the parameter tensors), the stem's max pool in channels-last layout on the CPU, and the
  test batches normalised at once (``NormalizingCollate``) instead of image by image;
* ``all``: one process per core, bf16, batched augmentation and the kernel-level changes.

Every set-up but ``+kernels`` and ``all`` runs the earlier kernels (``legacy_kernels``), so ``today``
is the path before any of these changes.

Models: ResNet-10 and ResNet-18 at 64x32 (batch 64, P16 x K4) and ResNet-50 at 256x128 (batch 16)
inside the strong baseline (BNNeck, ID + triplet loss, Adam). Training images/s are timed over
``--iters`` iterations after ``--warmup`` ones; extraction images/s over the query + gallery
images with flip averaging (each image counted once, as in evaluation).

Then three seeds of chapter 01's `synth` recipe on a world of chapter 01's size (``--recipe-num-ids``
500 identities, 47 batches an epoch), shortened to ``--recipe-iters`` iterations per epoch
(ResNet-10, 64x32, training + evaluation): today's one after another in one process
(float32, per-sample) against side by side (bf16, batched augmentation) with one process per core
and with all three at once. The ratio is what matters; the targets are 1.5x for the three seeds
and 1.5x for feature extraction. Timings on a shared machine are noisy (and a 2-thread process
suffers most when other jobs hold the cores): say whether other jobs ran.

On CUDA (``--device cuda``): ResNet-50 at 256x128, batch 64: float32, AMP, AMP with the batched
augmentation on the device, in one process.

``--accuracy`` (instead of the timings): rank-1 and mAP of the shortened recipe at float32 and bf16,
three seeds each, run side by side.

Usage: python bench/train_speed.py [--quick] [--device cuda] [--accuracy --recipe-epochs 8 --recipe-iters 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from reid_core.data import ImageDataset, SynthReID, build_transforms, render_synthreid
from reid_core.engine import (
    TrainConfig,
    Trainer,
    build_test_loader,
    build_train_loader,
    cpu_has_native_bf16,
    evaluate_reid,
    extract_features,
    run_side_by_side,
    seed_everything,
    values_or_raise,
)
from reid_core.engine import trainer as trainer_module
from reid_core.losses import BaselineLoss
from reid_core.models import BaselineNet

MODELS = {  # name -> backbone, height, width, batch size
    "resnet10": ("resnet10", 64, 32, 64),
    "resnet18": ("resnet18", 64, 32, 64),
    "resnet50": ("resnet50", 256, 128, 16),
}
SETUPS = {  # name -> (precision, batch_augment, side by side, tuned kernels)
    "today": ("fp32", False, False, False),
    "+bf16": ("bf16", False, False, False),
    "+batch aug": ("fp32", True, False, False),
    "+procs": ("fp32", False, True, False),
    "+kernels": ("fp32", False, False, True),
    "all": ("bf16", True, True, True),
}


@contextmanager
def legacy_kernels(active: bool) -> Iterator[None]:
    """While active, the trainer builds its optimizer without the fused kernels (the per-tensor loop)."""
    if not active:
        yield
        return
    original = trainer_module._fused_optimizer_ok
    trainer_module._fused_optimizer_ok = lambda groups: False
    try:
        yield
    finally:
        trainer_module._fused_optimizer_ok = original


def _model(num_classes: int, backbone: str, tuned: bool) -> BaselineNet:
    """The strong baseline; ``tuned=False`` puts back the plain (B, C, H, W) max pool in the stem."""
    model = BaselineNet(num_classes, backbone=backbone, pretrained=False, last_stride=1)
    if not tuned:
        pool = model.backbone.stem[3]
        model.backbone.stem[3] = nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding)
    return model


def _test_loader(items: list, height: int, width: int, tuned: bool) -> DataLoader:
    """The test loader; ``tuned=False``: the per-image test transform (resize, scale, normalise each image)."""
    if tuned:
        return build_test_loader(items, height, width, batch_size=128, preload=True, workers=0)
    dataset = ImageDataset(items, transform=build_transforms(height, width, is_train=False), preload=True)
    return DataLoader(dataset, batch_size=128, shuffle=False)


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * (1 if sys.platform == "darwin" else 1024)


def _wait(barrier: Any) -> None:
    if barrier is not None:
        barrier.wait()


def measure_case(
    world: str,
    backbone: str,
    height: int,
    width: int,
    batch_size: int,
    precision: str,
    batch_augment: bool,
    iters: int,
    warmup: int,
    device: str = "cpu",
    amp: bool = False,
    extract_limit: int = 512,
    barrier: Any = None,
    tuned: bool = True,
) -> dict[str, float]:
    """Training and extraction images/s of one set-up in this process (threads set by the caller).

    ``tuned=False``: the kernels before this round (see :func:`legacy_kernels`)."""
    with legacy_kernels(not tuned):
        seed_everything(0)
        data = SynthReID(world, verbose=False)
        # on a GPU machine, loader processes feed the per-sample path
        workers = None if device.startswith("cuda") else 0
        loader = build_train_loader(
            data.train,
            height,
            width,
            batch_size=batch_size,
            num_instances=4,
            preload=True,
            workers=workers,
            batch_augment=batch_augment,
            device=device,
        )
        model = _model(data.num_train_pids, backbone, tuned)
        config = TrainConfig(
            epochs=1,
            lr=3.5e-4,
            warmup_epochs=0,
            scheduler="constant",
            amp=amp,
            precision=precision,
            max_iters_per_epoch=warmup,
            progress=False,
        )
        trainer = Trainer(model, BaselineLoss(), loader, config, device=device)
        trainer.fit()  # warm-up: allocator, oneDNN primitive caches, cudnn autotune
        _wait(barrier)
        trainer.config.epochs, trainer.config.max_iters_per_epoch = 2, iters
        train_ips = trainer.fit()[-1]["images_per_second"]
        test_items = (data.query + data.gallery)[:extract_limit]
        test_loader = _test_loader(test_items, height, width, tuned)
        extract_features(model, [next(iter(test_loader))], device=device, amp=amp, precision=precision, progress=False)
        _wait(barrier)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        extract_features(model, test_loader, device=device, amp=amp, precision=precision, progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        extract_ips = len(test_items) / (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else _peak_rss_bytes()
        return {"train_ips": train_ips, "extract_ips": extract_ips, "peak_bytes": float(peak)}


def run_recipe(
    world: str, seed: int, precision: str, batch_augment: bool, epochs: int, iters: int, tuned: bool = True
) -> dict[str, float]:
    """Chapter 01's `synth` recipe (ResNet-10, 64x32, P16 x K4, Adam 1e-3, warm-up 1 epoch, step at
    3/4), shortened to ``epochs`` x ``iters``; returns rank-1, mAP (percent) and seconds.
    ``tuned=False``: the kernels before this round (see :func:`legacy_kernels`)."""
    with legacy_kernels(not tuned):
        start = time.perf_counter()
        seed_everything(seed)
        data = SynthReID(world, verbose=False)
        loader = build_train_loader(
            data.train,
            64,
            32,
            batch_size=64,
            num_instances=4,
            preload=True,
            workers=0,
            seed=seed,
            batch_augment=batch_augment,
            device="cpu",
        )
        model = _model(data.num_train_pids, "resnet10", tuned)
        config = TrainConfig(
            epochs=epochs,
            optimizer="adam",
            lr=1e-3,
            weight_decay=5e-4,
            scheduler="step",
            milestones=(max(1, 3 * epochs // 4),),
            gamma=0.1,
            warmup_epochs=1,
            warmup_factor=0.1,
            max_iters_per_epoch=iters,
            seed=seed,
            precision=precision,
            progress=False,
        )
        Trainer(model, BaselineLoss(label_smoothing=0.1), loader, config, device="cpu").fit()
        query, gallery = _test_loader(data.query, 64, 32, tuned), _test_loader(data.gallery, 64, 32, tuned)
        result = evaluate_reid(
            model, query, gallery, metric="euclidean", flip=True, device="cpu", progress=False, precision=precision
        )
        return {"rank1": result.metrics["rank1"], "mAP": result.metrics["mAP"], "seconds": time.perf_counter() - start}


def recipes_one_after_another(world: str, seeds: list[int], **recipe: Any) -> list[dict[str, float]]:
    """Today's way: the seeds one after another in one process."""
    return [run_recipe(world, seed, **recipe) for seed in seeds]


def _rate(value: float) -> str:
    """Images per second with three significant digits (ResNet-50 on a CPU trains a few a second)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _mib(value: float) -> str:
    return f"{value / 2**20:7.0f}"


def bench_setups(world: str, args: argparse.Namespace, cores: int) -> None:
    import multiprocessing as mp

    manager = mp.get_context("spawn").Manager()
    print(
        "\n| model | set-up | processes x threads | train img/s | vs today | extract img/s | vs today "
        "| peak MiB (all processes) |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models:
        backbone, height, width, batch = MODELS[name]
        heavy = name == "resnet50"
        iters, warmup = (max(2, args.iters // 4), 1) if heavy else (args.iters, args.warmup)
        base: dict[str, float] = {}
        for setup, (precision, batch_augment, side_by_side, tuned) in SETUPS.items():
            case = partial(
                measure_case,
                world,
                backbone,
                height,
                width,
                batch,
                precision,
                batch_augment,
                iters,
                warmup,
                extract_limit=128 if heavy else 512,
                tuned=tuned,
            )
            if side_by_side:
                barrier = manager.Barrier(cores)
                outcomes = run_side_by_side(
                    case,
                    [{"barrier": barrier}] * cores,
                    workers=cores,
                    threads_per_worker=1,
                    desc=f"{name} {setup}",
                    progress=False,
                )
                layout = f"{cores} x 1"
            else:
                outcomes = run_side_by_side(case, [{}], workers=1, threads_per_worker=cores, progress=False)
                layout = f"1 x {cores}"
            results = values_or_raise(outcomes)
            row = {key: sum(r[key] for r in results) for key in ("train_ips", "extract_ips", "peak_bytes")}
            base = base or row
            print(
                f"| {name} {height}x{width} b{batch} | {setup} | {layout} | {_rate(row['train_ips'])} | "
                f"{row['train_ips'] / base['train_ips']:.2f}x | {_rate(row['extract_ips'])} | "
                f"{row['extract_ips'] / base['extract_ips']:.2f}x | {_mib(row['peak_bytes'])} |",
                flush=True,
            )
    manager.shutdown()


def bench_three_seeds(world: str, args: argparse.Namespace, cores: int) -> None:
    seeds = [0, 1, 2]
    recipe = dict(epochs=args.recipe_epochs, iters=args.recipe_iters)
    print(
        f"\nthree seeds of the shortened synth recipe (ResNet-10 64x32, {args.recipe_epochs} epochs x "
        f"{args.recipe_iters} iterations, then evaluation), wall time including process start and data loading:"
    )
    start = time.perf_counter()
    today = run_side_by_side(
        partial(recipes_one_after_another, world, seeds, precision="fp32", batch_augment=False, tuned=False, **recipe),
        [{}],
        workers=1,
        threads_per_worker=cores,
        progress=False,
    )
    values_or_raise(today)
    today_seconds = time.perf_counter() - start
    print(
        f"  today, one after another (1 x {cores} threads, fp32, per-sample, earlier kernels): {today_seconds:7.1f} s"
    )
    for workers in sorted({cores, len(seeds)}):
        start = time.perf_counter()
        outcomes = run_side_by_side(
            partial(run_recipe, world, precision="bf16", batch_augment=True, **recipe),
            [{"seed": s} for s in seeds],
            workers=workers,
            threads_per_worker=1,
            desc="3 seeds",
            progress=False,
        )
        values_or_raise(outcomes)
        seconds = time.perf_counter() - start
        print(
            f"  side by side, {workers} processes x 1 thread, bf16, batched aug, tuned kernels: {seconds:7.1f} s   "
            f"speed-up {today_seconds / seconds:.2f}x (target 1.5x)"
        )


def bench_accuracy(world: str, args: argparse.Namespace, cores: int) -> None:
    seeds = [0, 1, 2]
    recipe = dict(epochs=args.recipe_epochs, iters=args.recipe_iters, batch_augment=False)
    print(
        f"\naccuracy of the shortened recipe ({args.recipe_epochs} epochs x at most {args.recipe_iters} iterations), "
        "float32 vs bf16 (training and extraction), per seed:"
    )
    print("| precision | seed | rank-1 | mAP |\n| --- | ---: | ---: | ---: |")
    for precision in ("fp32", "bf16"):
        outcomes = run_side_by_side(
            partial(run_recipe, world, precision=precision, **recipe),
            [{"seed": s} for s in seeds],
            workers=cores,
            threads_per_worker=1,
            progress=False,
        )
        results = values_or_raise(outcomes)
        for seed, result in zip(seeds, results):
            print(f"| {precision} | {seed} | {result['rank1']:.1f} | {result['mAP']:.1f} |")
        rank1 = torch.tensor([r["rank1"] for r in results])
        mean_ap = torch.tensor([r["mAP"] for r in results])
        print(
            f"| {precision} | mean +- sd | {rank1.mean():.1f} +- {rank1.std():.1f} | "
            f"{mean_ap.mean():.1f} +- {mean_ap.std():.1f} |",
            flush=True,
        )


def bench_cuda(world: str, args: argparse.Namespace) -> None:
    print("\n| model | set-up | train img/s | vs fp32 | extract img/s | vs fp32 | peak GPU MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    torch.backends.cudnn.benchmark = True
    base: dict[str, float] = {}
    for setup, amp, batch_augment in (("fp32", False, False), ("AMP", True, False), ("AMP + batch aug", True, True)):
        torch.cuda.reset_peak_memory_stats()
        row = measure_case(
            world,
            "resnet50",
            256,
            128,
            64,
            "auto",
            batch_augment,
            args.iters,
            args.warmup,
            device="cuda",
            amp=amp,
            extract_limit=1024,
        )
        base = base or row
        print(
            f"| resnet50 256x128 b64 | {setup} | {_rate(row['train_ips'])} | "
            f"{row['train_ips'] / base['train_ips']:.2f}x | {_rate(row['extract_ips'])} | "
            f"{row['extract_ips'] / base['extract_ips']:.2f}x | "
            f"{_mib(row['peak_bytes'])} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--iters", type=int, default=20, help="timed training iterations (a quarter for ResNet-50)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--recipe-epochs", type=int, default=8, help="chapter 01's synth recipe: 8")
    parser.add_argument("--recipe-iters", type=int, default=40, help="iterations per epoch (chapter 01: 47)")
    parser.add_argument("--num-ids", type=int, default=120, help="identities of the set-up table's SynthReID world")
    parser.add_argument(
        "--recipe-num-ids",
        type=int,
        default=500,
        help="identities of the three-seed part's world (chapter 01's synth world: 500, so an epoch has 47 batches)",
    )
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="instead of timing: rank-1/mAP of the recipe at float32 and bf16, 3 seeds each",
    )
    parser.add_argument("--skip-seeds", action="store_true", help="skip the three-seed recipe timing")
    parser.add_argument("--seeds-only", action="store_true", help="only the three-seed recipe timing")
    parser.add_argument("--quick", action="store_true", help="a minute-long check: ResNet-10, few iterations")
    args = parser.parse_args()
    if args.quick:
        args.models, args.iters, args.warmup, args.recipe_epochs, args.recipe_iters = ["resnet10"], 3, 1, 2, 3
        args.num_ids = args.recipe_num_ids = 40
    os.environ["TQDM_DISABLE"] = "1"  # no preload bars from the worker processes (they inherit it)
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    print(
        f"{cores} cores, load average {load:.1f} at start (above ~0.5 other jobs share the cores: figures are noisy);"
        f" CPU bf16 in hardware: {cpu_has_native_bf16()}; torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        render_synthreid(tmp, num_ids=args.num_ids, images_per_id=12, seed=0, progress=False)
        if args.device == "cuda":
            print(f"device: {torch.cuda.get_device_name()}")
            bench_cuda(tmp, args)
        elif args.accuracy:
            bench_accuracy(tmp, args, cores)
        else:
            if not args.seeds_only:
                bench_setups(tmp, args, cores)
            if not args.skip_seeds:
                recipe_world = os.path.join(tmp, "recipe")
                render_synthreid(recipe_world, num_ids=args.recipe_num_ids, images_per_id=12, seed=0, progress=False)
                bench_three_seeds(recipe_world, args, cores)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
