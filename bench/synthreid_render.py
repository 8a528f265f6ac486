"""Time SynthReID rendering against its budget: 10,000 images at 128x64 in under 60 s (issue 3).

The world is the default one (16 images per identity, 6 cameras, every knob on) with enough
identities, distractors and junk to make exactly ``--num-images`` files. The time covers
everything :func:`render_synthreid` does: planning, drawing in ``--workers`` processes, JPEG
encoding, writing the files and the metadata.

Usage:
    python bench/synthreid_render.py            # 10,000 images
    python bench/synthreid_render.py --quick    # 1,000 images, projected to 10,000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from reid_core.data.synthreid.world import render_synthreid

BUDGET_S = 60.0
BUDGET_IMAGES = 10_000
IMAGES_PER_ID = 16


def world_for(num_images: int) -> dict[str, int]:
    """Identities, distractors and junk that add up to exactly ``num_images`` files."""
    if num_images < 3 * IMAGES_PER_ID:
        raise ValueError(f"--num-images must be at least {3 * IMAGES_PER_ID}, got {num_images}")
    num_ids = max(2, int(num_images * 0.96) // IMAGES_PER_ID)
    rest = num_images - num_ids * IMAGES_PER_ID
    return {"num_ids": num_ids, "num_distractors": rest * 2 // 3, "num_junk": rest - rest * 2 // 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=BUDGET_IMAGES, help="images to render (default 10,000)")
    parser.add_argument("--quick", action="store_true", help="render 1,000 images and project the time to 10,000")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: the CPUs available)")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--style", default="a", choices=["a", "b"])
    parser.add_argument("--root", type=Path, default=None, help="output folder (default: a temporary one, removed)")
    args = parser.parse_args()
    num_images = 1_000 if args.quick else args.num_images
    world = world_for(num_images)
    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.mkdtemp(prefix="synthreid_bench_")
        root = Path(tmp) / "world"
    try:
        start = time.perf_counter()
        info = render_synthreid(
            root,
            style=args.style,
            height=args.height,
            width=args.width,
            images_per_id=IMAGES_PER_ID,
            workers=args.workers,
            **world,
        )
        seconds = time.perf_counter() - start
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    total = info.num_train_images + info.num_query_images + info.num_gallery_images
    rate = total / seconds
    projected = BUDGET_IMAGES / rate
    ratio = projected / BUDGET_S
    print(
        f"rendered {total} images ({args.height}x{args.width}, style {args.style}, "
        f"{info.num_train_ids}+{info.num_test_ids} ids) in {seconds:.1f} s: {rate:.0f} images/s"
    )
    print(
        f"time for {BUDGET_IMAGES:,} images{' (projected)' if total != BUDGET_IMAGES else ''}: "
        f"{projected:.1f} s; ratio to the {BUDGET_S:.0f} s budget: {ratio:.2f} "
        f"({'target met' if ratio <= 1.0 else 'target NOT met'})"
    )


if __name__ == "__main__":
    main()
