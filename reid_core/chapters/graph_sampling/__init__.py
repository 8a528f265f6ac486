"""Chapter 05, Graph Sampling and QAConv: its experiment (``experiment``), QAConv 1.x's class
memory (``class_memory``) and its figures (``figures``).

Notebook: ``notebooks/05_graph_sampling.py``.
"""

from reid_core.chapters.graph_sampling.class_memory import ClassMemoryCriterion
from reid_core.chapters.graph_sampling.experiment import (
    ARMS,
    CONTROL_PRESETS,
    CurvePoint,
    GraphAfterAccuracy,
    LearningCurve,
    PooledBackbone,
    batch_hardness,
    classes_covered,
    epoch_seconds,
    evaluate_qaconv,
    family_index,
    fit_graph_cost,
    measure_graph_seconds,
    prepare_world,
    pretrained_feature_rank1,
    qaconv_net,
    qaconv_param_groups,
    same_family_fraction,
    time_to_reach,
    train_and_evaluate,
)
from reid_core.chapters.graph_sampling.figures import (
    one_image_per_identity,
    plot_batch_log,
    plot_epoch_time,
    plot_learning_curves,
    plot_pk_vs_gs_batches,
)

__all__ = [
    "ARMS",
    "CONTROL_PRESETS",
    "ClassMemoryCriterion",
    "CurvePoint",
    "GraphAfterAccuracy",
    "LearningCurve",
    "PooledBackbone",
    "batch_hardness",
    "classes_covered",
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
    "prepare_world",
    "pretrained_feature_rank1",
    "qaconv_net",
    "qaconv_param_groups",
    "same_family_fraction",
    "time_to_reach",
    "train_and_evaluate",
]
