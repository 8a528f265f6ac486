"""Chapter 03, AlignedReID: its experiment (``experiment``) and its figures (``figures``).

Notebook: ``notebooks/03_alignedreid.py``.
"""

from reid_core.chapters.alignedreid.experiment import (
    TEST_DISTANCES,
    AblationRow,
    DistanceBlocks,
    ExamplePair,
    ablation_markdown,
    ablation_rows,
    box_shifts,
    cross_camera_pair,
    distance_blocks,
    evaluate_test_distances,
    expected_path_offset,
    extract_global_local,
    mean_path_offsets,
    misaligned_pair,
)
from reid_core.chapters.alignedreid.figures import (
    plot_ablation_bars,
    plot_alignment,
    plot_path_offsets,
)

__all__ = [
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
