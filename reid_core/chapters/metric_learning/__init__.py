"""Chapter 02, Metric learning (from siamese networks to AdaCos): its experiment (``experiment``) and its
figures (``figures``).

Notebook: ``notebooks/02_metric_learning.py``.
"""

from reid_core.chapters.metric_learning.experiment import (
    TrainedEmbedding,
    angular_statistics,
    embed,
    head_parameter_count,
    leave_one_out_retrieval,
    make_pk_loader,
    relabel,
    train_embedding,
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
    "relabel",
    "seam_distance",
    "seam_rotation",
    "sphere_to_lonlat",
    "train_embedding",
    "unit_directions",
]
