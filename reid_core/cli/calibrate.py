"""``reid calibrate``: the distance below which two crops are called the same person, at chosen FPRs.

The thresholds are measured on the test identities of a dataset (query and gallery together,
identities never seen in training), with bootstrap intervals over identities, plotted as a
ROC / distance-histogram PNG, and stored in the model file, where ``reid rank`` reads them.

Example:
    reid calibrate --model baseline.pt --data data/synthreid/synth --dataset synthreid --fpr 1e-2 1e-3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from reid_core.cli.common import (
    FOLDER_DATASET,
    CLIError,
    add_model_arguments,
    embed_images,
    load_from_args,
    read_labelled_sets,
)
from reid_core.data import DATASETS
from reid_core.engine.model_card import update_model_card
from reid_core.evaluation import calibrate_threshold, plot_calibration

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="same-person distance thresholds at chosen false-positive rates",
        description="Measure, on the test identities of a dataset, the distance threshold t such that "
        "'same person iff distance < t' has the asked false-positive rate over pairs of different "
        "people; with bootstrap intervals over identities, a ROC PNG, and the result stored in the "
        "model file for reid rank.",
    )
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, metavar="ROOT", help="the dataset folder")
    parser.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help=f"one of {sorted(DATASETS)} or '{FOLDER_DATASET}'; default: the dataset the model was "
        "trained on, as its card says",
    )
    parser.add_argument(
        "--fpr", type=float, nargs="+", default=[1e-2, 1e-3], help="target false-positive rates (default 1e-2 1e-3)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default 1000)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default 0.95)")
    parser.add_argument(
        "--all-pairs", action="store_true", help="also use pairs seen by one camera (default: cross-camera pairs only)"
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=4000,
        help="use at most this many images, drawing whole identities (default 4000; 0 = all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the identity draw and the bootstrap")
    parser.add_argument(
        "--plot",
        metavar="PNG",
        default=None,
        help="where the ROC figure goes (default: next to the model, <model>_calibration.png)",
    )
    parser.add_argument("--no-store", action="store_true", help="do not write the thresholds into the model file")


def _dataset_name(args: argparse.Namespace, training: dict) -> str:
    if args.dataset is not None:
        return args.dataset
    name = str(training.get("dataset", "")).split("/")[0].lower()
    if name in DATASETS:
        return name
    raise CLIError(
        f"--dataset is needed: the model's card names no known training dataset ({training.get('dataset')!r})"
    )


def _draw_identities(pids: np.ndarray, max_images: int, seed: int) -> np.ndarray:
    """Indices of images of whole identities, drawn at random until max_images would be exceeded."""
    identities = np.unique(pids)
    rng = np.random.default_rng(seed)
    keep, total = [], 0
    for pid in rng.permutation(identities):
        n = int((pids == pid).sum())
        if total + n > max_images:
            continue
        keep.append(pid)
        total += n
    return np.flatnonzero(np.isin(pids, keep))


def run(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    dataset = _dataset_name(args, loaded.card.training)
    sets = read_labelled_sets(dataset, args.data)
    items = [item for item in sets.query + sets.gallery if item[1] > 0]
    left_out = len(sets.query) + len(sets.gallery) - len(items)
    if left_out:
        print(f"note: {left_out} junk / distractor test images (pid <= 0) have no identity and are left out")
    pids = np.array([pid for _, pid, _ in items])
    cams = np.array([c for _, _, c in items])
    if args.max_images and len(items) > args.max_images:
        index = _draw_identities(pids, args.max_images, args.seed)
        print(
            f"note: {len(items)} test images; using {len(index)} images of {len(np.unique(pids[index]))} of "
            f"{len(np.unique(pids))} identities drawn at random (--max-images {args.max_images}, seed {args.seed})"
        )
        items = [items[i] for i in index]
        pids, cams = pids[index], cams[index]
    feats = embed_images(loaded, [p for p, _, _ in items], args.batch_size, desc="calibration images")
    try:
        calibration = calibrate_threshold(
            feats,
            pids,
            cams,
            fprs=args.fpr,
            metric=loaded.card.metric,
            cross_camera=not args.all_pairs,
            num_bootstrap=args.bootstrap,
            confidence=args.confidence,
            seed=args.seed,
            source=f"the test identities of {sets.name}",
        )
    except ValueError as err:
        raise CLIError(str(err)) from err
    print(calibration.format())
    model_path = Path(args.model)
    plot = Path(args.plot) if args.plot else model_path.with_name(f"{model_path.stem}_calibration.png")
    plot_calibration(calibration, plot)
    print(f"wrote {plot}")
    if not args.no_store:
        update_model_card(model_path, calibration={**calibration.to_dict(), "dataset": sets.name})
        print(f"stored the thresholds in {model_path} (reid rank marks pairs same/different with them)")
    return 0
