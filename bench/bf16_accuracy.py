"""Does bf16 autocast cost accuracy? The same recipe and seeds in fp32 and in bf16, compared.

For chapter 01's ``synth`` recipe (the strong baseline fine-tuned from the pretrained backbone),
or chapter 02's re-ID recipe, every seed trains twice, once in float32 and once with bfloat16
autocast (training and feature extraction), and is scored on the validation split carved from
the training identities (a precision is a recipe choice: the test split is not read). It prints
rank-1 and mAP per seed, the mean with its 95% interval per precision, the paired difference
bf16 - fp32 with its interval, and the verdict: bf16 is kept where the paired interval holds 0
and its mean lies within the range of the fp32 seeds; otherwise the chapter keeps fp32.

Runs go side by side (one process per core, one thread each), so this also shows the
throughput of each precision as the chapters use it.

Usage: python bench/bf16_accuracy.py --chapter 01 [--seeds 0 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from reid_core.book import mean_interval, paired_difference, pretrained_for_profile, read_notebook_profiles
from reid_core.chapters.basics import source_for, train_baseline_arm
from reid_core.data import prepare_synthreid
from reid_core.engine import run_side_by_side, values_or_raise

ROOT = Path(__file__).resolve().parents[1]


def chapter_01_runs(seeds: list[int], quick: bool, data_root: str, results_dir: str) -> tuple[list, list]:
    synth = read_notebook_profiles(ROOT / "notebooks" / "01_reid_basics.py")["synth"]
    if quick:
        synth = {**synth, "epochs": 2, "milestones": (1,), "max_iters": 5}
    weights = pretrained_for_profile("synth", data_root, results_dir)
    source = source_for("synth", "synthreid", data_root, prepare_synthreid(data_root, synth["preset"]))
    configs = [
        dict(arm="baseline", seed=seed, recipe={**synth, "precision": precision})
        for precision in ("fp32", "bf16")
        for seed in seeds
    ]
    runs = values_or_raise(
        run_side_by_side(
            partial(train_baseline_arm, source=source, weights=weights, split="validation"), configs, desc="fp32/bf16"
        )
    )
    return runs[: len(seeds)], runs[len(seeds) :]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapter", choices=["01"], default="01")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="a few iterations: checks the script, not the question")
    parser.add_argument("--data-root", default=str(ROOT / "data"))
    parser.add_argument("--results-dir", default=str(ROOT / "results"))
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    fp32, bf16 = chapter_01_runs(args.seeds, args.quick, args.data_root, args.results_dir)
    print(f"chapter {args.chapter}, synth recipe, validation split, seeds {args.seeds}")
    print(
        f"{'seed':>6} | {'fp32 R1':>8} {'bf16 R1':>8} | {'fp32 mAP':>9} {'bf16 mAP':>9} | {'fp32 s':>7} {'bf16 s':>7}"
    )
    for a, b in zip(fp32, bf16, strict=True):
        print(
            f"{a['seed']:>6} | {a['metrics']['rank1']:8.1f} {b['metrics']['rank1']:8.1f} | "
            f"{a['metrics']['mAP']:9.1f} {b['metrics']['mAP']:9.1f} | "
            f"{a['train_seconds']:7.1f} {b['train_seconds']:7.1f}"
        )
    record = {"chapter": args.chapter, "seeds": args.seeds, "quick": args.quick}
    keep = True
    for key in ("rank1", "mAP"):
        x = [r["metrics"][key] for r in fp32]
        y = [r["metrics"][key] for r in bf16]
        diff = paired_difference(y, x)
        within = min(x) <= mean_interval(y).mean <= max(x)
        holds_zero = not (diff.low > 0 or diff.high < 0)
        keep &= within and holds_zero
        print(
            f"{key}: fp32 {mean_interval(x)}  bf16 {mean_interval(y)}  bf16 - fp32 {diff.mean:+.2f} "
            f"[{diff.low:+.2f}, {diff.high:+.2f}]  bf16 mean within the fp32 seeds' range: {within}"
        )
        record[key] = {"fp32": x, "bf16": y, "difference": [diff.mean, diff.low, diff.high], "within_range": within}
    speed = sum(r["train_seconds"] for r in fp32) / sum(r["train_seconds"] for r in bf16)
    print(f"training time fp32 / bf16 (side by side, 1 thread per run): {speed:.2f}x")
    print("verdict:", "bf16 costs no accuracy measurable here: keep it" if keep else "bf16 differs: keep fp32")
    record |= {"fp32_over_bf16_time": speed, "keep_bf16": keep}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
