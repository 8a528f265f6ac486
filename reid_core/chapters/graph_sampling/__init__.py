"""Chapter 05, Graph Sampling and QAConv: its experiment (``experiment``) and its figures (``figures``).

Notebook: ``notebooks/05_graph_sampling.py``.
"""

from reid_core.chapters.graph_sampling.experiment import (
    CurvePoint,
    LearningCurve,
    batch_hardness,
    epoch_seconds,
    evaluate_qaconv,
    family_index,
    fit_graph_cost,
    measure_graph_seconds,
    qaconv_param_groups,
    same_family_fraction,
    time_to_reach,
)
from reid_core.chapters.graph_sampling.figures import (
    one_image_per_identity,
    plot_batch_log,
    plot_epoch_time,
    plot_learning_curves,
    plot_pk_vs_gs_batches,
)

__all__ = [
    "CurvePoint",
    "LearningCurve",
    "batch_hardness",
    "epoch_seconds",
    "evaluate_qaconv",
    "family_index",
    "fit_graph_cost",
    "measure_graph_seconds",
    "one_image_per_identity",
    "plot_batch_log",
    "plot_epoch_time",
    "plot_learning_curves",
    "plot_pk_vs_gs_batches",
    "qaconv_param_groups",
    "same_family_fraction",
    "time_to_reach",
]
