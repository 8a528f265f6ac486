"""Chapter 04, EnsembleNet: its experiment (``experiment``) and its figures (``figures``).

Notebook: ``notebooks/04_ensemblenet.py``.
"""

from reid_core.chapters.ensemblenet.experiment import (
    PartSlice,
    branch_feature_slices,
    concat_features,
    ensemblenet_parameter_groups,
    evaluate_query_subset,
    local_part_only_pids,
    part_feature_slices,
    slice_features,
)
from reid_core.chapters.ensemblenet.figures import (
    plot_branch_curve,
    plot_part_activations,
    plot_part_rank1,
)

__all__ = [
    "PartSlice",
    "branch_feature_slices",
    "concat_features",
    "ensemblenet_parameter_groups",
    "evaluate_query_subset",
    "local_part_only_pids",
    "part_feature_slices",
    "plot_branch_curve",
    "plot_part_activations",
    "plot_part_rank1",
    "slice_features",
]
