"""Chapter 03, AlignedReID: its experiment (``experiment``) and its figures (``figures``).

Notebook: ``notebooks/03_alignedreid.py``.
"""

from reid_core.chapters.alignedreid.experiment import (
    ARMS,
    TEST_DISTANCES,
    AblationRow,
    DistanceBlocks,
    ExamplePair,
    WorldSpec,
    ablation_markdown,
    ablation_rows,
    band_offset_bound,
    box_shifts,
    build_alignedreid,
    cross_camera_pair,
    distance_blocks,
    evaluate_run_model,
    evaluate_test_distances,
    expected_path_offset,
    extract_global_local,
    mean_path_offsets,
    misaligned_pair,
    path_offsets,
    train_and_evaluate,
    train_and_evaluate_many,
    widest_path_offsets,
)
from reid_core.chapters.alignedreid.figures import (
    plot_ablation_bars,
    plot_alignment,
    plot_path_offsets,
)

__all__ = [
    "ARMS",
    "WorldSpec",
    "build_alignedreid",
    "evaluate_run_model",
    "path_offsets",
    "train_and_evaluate",
    "train_and_evaluate_many",
    "widest_path_offsets",
    "band_offset_bound",
    "AblationRow",
    "DistanceBlocks",
    "ExamplePair",
    "TEST_DISTANCES",
    "ablation_markdown",
    "ablation_rows",
    "box_shifts",
    "cross_camera_pair",
    "distance_blocks",
    "evaluate_test_distances",
    "expected_path_offset",
    "extract_global_local",
    "mean_path_offsets",
    "misaligned_pair",
    "plot_ablation_bars",
    "plot_alignment",
    "plot_path_offsets",
]
