"""Chapter 04, EnsembleNet: its experiment (``experiment``) and its figures (``figures``).

Notebook: ``notebooks/04_ensemblenet.py``.
"""

from reid_core.chapters.ensemblenet.experiment import (
    ARMS,
    MEMBER_SEED_STRIDE,
    ArmSpec,
    PartSlice,
    branch_feature_slices,
    concat_features,
    ensemblenet_parameter_groups,
    evaluate_query_subset,
    forward_macs,
    load_split,
    local_part_only_pids,
    part_feature_slices,
    run_group,
    slice_features,
    train_and_evaluate,
)
from reid_core.chapters.ensemblenet.figures import (
    plot_branch_curve,
    plot_part_activations,
    plot_part_rank1,
)

__all__ = [
    "ARMS",
    "ArmSpec",
    "MEMBER_SEED_STRIDE",
    "PartSlice",
    "branch_feature_slices",
    "concat_features",
    "ensemblenet_parameter_groups",
    "evaluate_query_subset",
    "forward_macs",
    "load_split",
    "local_part_only_pids",
    "part_feature_slices",
    "plot_branch_curve",
    "plot_part_activations",
    "plot_part_rank1",
    "run_group",
    "slice_features",
    "train_and_evaluate",
]
