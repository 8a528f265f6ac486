"""Render every SynthReID preset a profile's notebooks use (skips presets already rendered).

Usage: python tools/render_data.py --profile synth [--data-root data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reid_core.data.synthreid.presets import PROFILE_PRESETS, prepare_synthreid

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="synth", choices=sorted(PROFILE_PRESETS))
    parser.add_argument("--data-root", default=str(ROOT / "data"))
    args = parser.parse_args(argv)
    for preset in PROFILE_PRESETS[args.profile]:
        start = time.perf_counter()
        root = prepare_synthreid(args.data_root, preset)
        print(f"SynthReID {preset}: {root} ({time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
