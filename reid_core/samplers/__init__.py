"""Identity samplers: flat ``Sampler``s whose consecutive ``batch_size`` indices form one batch.

``RandomIdentitySampler`` (PK: P identities x K images; chapters 01-04) and ``GraphSampler``
(each class with its nearest classes; chapter 05, Liao & Shao 2022); ``DistributedIdentitySampler``
gives each process of a ``torchrun`` job whole P x K groups of every global batch.
"""

from reid_core.samplers.class_distance import build_class_distance, load_rgb, pick_class_representatives
from reid_core.samplers.distributed import DistributedIdentitySampler
from reid_core.samplers.graph_epoch import GraphSamplingCallback, preloaded_image_lookup
from reid_core.samplers.graph_sampler import GraphSampler, nearest_classes
from reid_core.samplers.random_identity import RandomIdentitySampler

__all__ = [
    "DistributedIdentitySampler",
    "GraphSampler",
    "GraphSamplingCallback",
    "RandomIdentitySampler",
    "build_class_distance",
    "load_rgb",
    "nearest_classes",
    "pick_class_representatives",
    "preloaded_image_lookup",
]
