"""Datasets: readers for the re-ID benchmarks, SynthReID, image loading and transforms.

Chapters: every notebook; ``book/datasets.md`` documents the layouts and the protocol.
"""

from reid_core.data.base import DatasetLayoutError, ReIDDataset
from reid_core.data.cuhk03 import CUHK03, extract_cuhk03_images
from reid_core.data.dukemtmc import DukeMTMCreID
from reid_core.data.image_dataset import ImageDataset, ImageLoadError, read_image
from reid_core.data.market1501 import Market1501, MarketLayoutDataset
from reid_core.data.msmt17 import MSMT17
from reid_core.data.registry import DATASETS, build_dataset
from reid_core.data.synthreid import SynthReIDConfig, SynthReIDInfo, ensure_synthreid, render_synthreid
from reid_core.data.synthreid_presets import SYNTHREID_PRESETS, prepare_synthreid
from reid_core.data.synthreid_reader import SynthReID
from reid_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomErasing, build_transforms, denormalize

__all__ = [
    "CUHK03", "DATASETS", "DatasetLayoutError", "DukeMTMCreID", "IMAGENET_MEAN", "IMAGENET_STD", "ImageDataset",
    "ImageLoadError", "MSMT17", "Market1501", "MarketLayoutDataset", "RandomErasing", "ReIDDataset", "SYNTHREID_PRESETS",
    "SynthReID", "SynthReIDConfig", "SynthReIDInfo", "build_dataset", "build_transforms", "denormalize",
    "ensure_synthreid", "extract_cuhk03_images", "prepare_synthreid", "read_image", "render_synthreid",
]
