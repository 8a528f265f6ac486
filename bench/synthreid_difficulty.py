"""Is SynthReID hard? A colour-histogram matcher against a trained CNN baseline, same split.

Renders (or reuses) a SynthReID world, evaluates the classic hand-crafted matcher (per-stripe
colour histograms, euclidean distance) and the strong baseline trained for a few epochs, with
the Market-1501 protocol, and prints both rank-1/mAP and their ratio. A world where histograms
came close to the CNN would be too easy to show anything.

Usage:
    python bench/synthreid_difficulty.py                    # the book's "synth" preset
    python bench/synthreid_difficulty.py --quick            # a small world, 2 epochs
    python bench/synthreid_difficulty.py --camera-shift 0   # switch the camera colour casts off
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from reid_core.data.synthreid.presets import SYNTHREID_PRESETS, prepare_synthreid
from reid_core.data.synthreid.reader import SynthReID
from reid_core.engine.evaluate import evaluate_reid
from reid_core.engine.loaders import build_test_loader, build_train_loader
from reid_core.engine.trainer import TrainConfig, Trainer
from reid_core.evaluation.distance import compute_distance_matrix
from reid_core.evaluation.rank import evaluate_rank
from reid_core.losses.baseline_loss import BaselineLoss
from reid_core.models.baseline import BaselineNet
from reid_core.models.color_histogram import color_histogram_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None, help="where to render (default: a temporary folder)")
    parser.add_argument("--preset", default="synth", choices=sorted(SYNTHREID_PRESETS))
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--backbone", default="resnet10", help="the CNN baseline's backbone (chapter 1's synth recipe)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--camera-shift", type=float, default=None, help="override the preset's camera_shift")
    parser.add_argument("--quick", action="store_true", help="smoke preset, 2 epochs at 64x32")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.epochs, args.height, args.width = "smoke", 2, 64, 32
    overrides = {} if args.camera_shift is None else {"camera_shift": args.camera_shift}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = prepare_synthreid(args.data_root or tmp, args.preset, **overrides)
        data = SynthReID(root, verbose=False)
        q, g = data.query, data.gallery
        ids = [np.array([t[i] for t in items]) for items in (q, g) for i in (1, 2)]
        q_pids, q_cams, g_pids, g_cams = ids

        start = time.perf_counter()
        hq = torch.as_tensor(color_histogram_features([p for p, _, _ in q]))
        hg = torch.as_tensor(color_histogram_features([p for p, _, _ in g]))
        cmc_h, map_h = evaluate_rank(compute_distance_matrix(hq, hg), q_pids, g_pids, q_cams, g_cams)
        t_hist = time.perf_counter() - start

        start = time.perf_counter()
        loader = build_train_loader(data.train, args.height, args.width, batch_size=64, num_instances=4, preload=True)
        model = BaselineNet(data.num_train_pids, backbone=args.backbone)
        cfg = TrainConfig(
            epochs=args.epochs,
            lr=args.lr,
            warmup_epochs=1,
            scheduler="step",
            milestones=(int(args.epochs * 0.75),),
            progress=False,
        )
        Trainer(model, BaselineLoss(), loader, cfg).fit()
        result = evaluate_reid(
            model,
            build_test_loader(q, args.height, args.width, preload=True),
            build_test_loader(g, args.height, args.width, preload=True),
            progress=False,
        )
        t_cnn = time.perf_counter() - start

    print(f"SynthReID preset {args.preset!r} {overrides or ''}: {len(q)} queries, {len(g)} gallery images")
    print(f"colour histogram : R1 {cmc_h[0] * 100:5.1f}  mAP {map_h * 100:5.1f}   ({t_hist:.0f} s)")
    print(
        f"CNN baseline     : R1 {result.metrics['rank1']:5.1f}  mAP {result.metrics['mAP']:5.1f}   "
        f"({args.backbone} at {args.height}x{args.width}, {args.epochs} epochs, {t_cnn:.0f} s)"
    )
    hist_r1, hist_map = cmc_h[0] * 100, map_h * 100
    r1_ratio = f"{result.metrics['rank1'] / hist_r1:.1f}x" if hist_r1 > 0 else "unbounded (histogram rank-1 is 0)"
    map_ratio = result.metrics["mAP"] / max(hist_map, 1e-9)
    hard = result.metrics["rank1"] >= 2 * hist_r1 and result.metrics["rank1"] > hist_r1
    print(
        f"CNN / histogram: rank-1 {r1_ratio}, mAP {map_ratio:.1f}x  -> {'hard enough' if hard else 'TOO EASY'} "
        "(target: histogram far below the trained baseline, rank-1 ratio >= 2)"
    )


if __name__ == "__main__":
    main()
