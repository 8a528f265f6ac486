"""Chapter 02, Metric learning (from siamese networks to AdaCos): its experiment (``experiment``) and its
figures (``figures``).

Notebook: ``notebooks/02_metric_learning.py``.
"""

from reid_core.chapters.metric_learning.experiment import (
    ARM_TITLES,
    REID_ARMS,
    UNSEEN_LOSSES,
    TrainedEmbedding,
    angular_statistics,
    embed,
    head_parameter_count,
    leave_one_out_retrieval,
    make_pk_loader,
    reid_run,
    reid_runs,
    relabel,
    train_embedding,
    unseen_classes_run,
)
from reid_core.chapters.metric_learning.figures import (
    plot_digit_grid,
    plot_head_parameters,
    plot_scale_history,
    plot_sphere_embeddings,
    plot_target_logits,
    seam_distance,
    seam_rotation,
    sphere_to_lonlat,
    unit_directions,
)

__all__ = [
    "ARM_TITLES",
    "REID_ARMS",
    "UNSEEN_LOSSES",
    "TrainedEmbedding",
    "angular_statistics",
    "embed",
    "head_parameter_count",
    "leave_one_out_retrieval",
    "make_pk_loader",
    "plot_digit_grid",
    "plot_head_parameters",
    "plot_scale_history",
    "plot_sphere_embeddings",
    "plot_target_logits",
    "reid_run",
    "reid_runs",
    "relabel",
    "seam_distance",
    "seam_rotation",
    "sphere_to_lonlat",
    "train_embedding",
    "unit_directions",
    "unseen_classes_run",
]
