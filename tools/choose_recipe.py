"""Choose chapter 01's fine-tuning recipe on a validation split, and record the choice.

The candidates differ in fine-tuning epochs and learning rate; everything else is the
notebook's ``synth`` profile (read from the notebook itself). Each candidate trains the strong
baseline from the pretrained backbone with every seed, on the training identities minus a
held-out fifth (``reid_core.data.carve_validation``), and is scored on the held-out fifth. The
test split is never read. The rule: the highest mean validation mAP; a candidate within one
standard error of the best mean that costs fewer epochs wins instead (cheaper, and the data
cannot tell them apart).

The record, ``book/recipes/01_reid_basics.json``, holds every candidate's per-seed scores and
the rule; chapter 01 shows it. Runs go side by side, one per core.

Usage: python tools/choose_recipe.py [--seeds 0 1] [--data-root data] [--results-dir results]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from functools import partial
from pathlib import Path

from reid_core.book import pretrained_for_profile, read_notebook_profiles
from reid_core.chapters.basics import source_for, train_baseline_arm
from reid_core.data import prepare_synthreid
from reid_core.engine import run_side_by_side, values_or_raise
from reid_core.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_reid_basics.py"
CANDIDATES = (
    ("4 epochs, lr 1e-3", {"epochs": 4, "lr": 1e-3, "milestones": (3,)}),
    ("8 epochs, lr 1e-3", {"epochs": 8, "lr": 1e-3, "milestones": (6,)}),
    ("8 epochs, lr 3.5e-4", {"epochs": 8, "lr": 3.5e-4, "milestones": (6,)}),
)
RULE = (
    "highest mean validation mAP; a candidate with fewer epochs whose mean is within one standard "
    "error (over seeds) of the best wins instead"
)


def choose(candidates: list[dict]) -> str:
    """The chosen candidate's name under :data:`RULE`."""
    best = max(candidates, key=lambda c: statistics.mean(c["mAP"]))
    values = best["mAP"]
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    close = [c for c in candidates if statistics.mean(c["mAP"]) >= statistics.mean(values) - stderr]
    return min(close, key=lambda c: (c["epochs"], -statistics.mean(c["mAP"])))["name"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--data-root", default=str(ROOT / "data"))
    parser.add_argument("--results-dir", default=str(ROOT / "results"))
    parser.add_argument("--out", default=str(ROOT / "book" / "recipes" / "01_reid_basics.json"))
    args = parser.parse_args(argv)
    synth = read_notebook_profiles(NOTEBOOK)["synth"]
    weights = pretrained_for_profile("synth", args.data_root, args.results_dir)
    source = source_for("synth", "synthreid", args.data_root, prepare_synthreid(args.data_root, synth["preset"]))
    configs = [
        dict(arm="baseline", seed=seed, recipe={**synth, **change}) for _, change in CANDIDATES for seed in args.seeds
    ]
    runs = values_or_raise(
        run_side_by_side(
            partial(train_baseline_arm, source=source, weights=weights, split="validation"), configs, desc="candidates"
        )
    )
    candidates = []
    for index, (name, change) in enumerate(CANDIDATES):
        mine = runs[index * len(args.seeds) : (index + 1) * len(args.seeds)]
        candidates.append(
            {
                "name": name,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in change.items()},
                "seeds": args.seeds,
                "rank1": [r["metrics"]["rank1"] for r in mine],
                "mAP": [r["metrics"]["mAP"] for r in mine],
                "train_seconds": [round(r["train_seconds"], 1) for r in mine],
            }
        )
        print(f"{name}: R1 {candidates[-1]['rank1']}  mAP {candidates[-1]['mAP']}", flush=True)
    record = {
        "notebook": NOTEBOOK.name,
        "split": "validation: a fifth of the synth world's training identities (carve_validation, seed 0)",
        "pretrained": weights.provenance["fingerprint"] if weights else None,
        "candidates": candidates,
        "rule": RULE,
        "chosen": choose(candidates),
    }
    out = atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"chosen: {record['chosen']} -> {out}")


if __name__ == "__main__":
    main()
