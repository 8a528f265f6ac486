"""Render every SynthReID preset a profile's notebooks use, then pretrain the profile's backbone.

Both steps skip what is already done: a preset whose folder records the same arguments, a
pretrained backbone whose recipe fingerprint is cached in ``checkpoints/pretrained/`` (next to
the results folder). The ``paper`` profile starts from ImageNet weights and pretrains nothing.

Usage: python tools/render_data.py --profile synth [--data-root data] [--results-dir results]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reid_core.book.pretrained import pretrained_for_profile
from reid_core.data.synthreid.presets import PROFILE_PRESETS, prepare_synthreid

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="synth", choices=sorted(PROFILE_PRESETS))
    parser.add_argument("--data-root", default=str(ROOT / "data"))
    parser.add_argument("--results-dir", default=str(ROOT / "results"), help="backbones go to ../checkpoints")
    args = parser.parse_args(argv)
    for preset in PROFILE_PRESETS[args.profile]:
        start = time.perf_counter()
        root = prepare_synthreid(args.data_root, preset)
        print(f"SynthReID {preset}: {root} ({time.perf_counter() - start:.1f} s)", flush=True)
    start = time.perf_counter()
    weights = pretrained_for_profile(args.profile, args.data_root, args.results_dir)
    if weights is not None:
        print(f"pretrained backbone: {weights.path} ({time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
