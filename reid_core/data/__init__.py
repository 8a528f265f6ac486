"""Datasets: readers for the re-ID benchmarks, SynthReID, image loading, per-sample and batched transforms.

Chapters: every notebook; ``book/datasets.md`` documents the layouts and the protocol.
"""

from reid_core.data.base import (
    IMAGE_EXTENSIONS,
    MARKET_NAME_PATTERN,
    DatasetLayoutError,
    DatasetNote,
    Item,
    ReIDDataset,
    drop_junk,
    extension_case_twins,
    find_dataset_dir,
    list_images,
    not_read_note,
    parse_market_folder,
    relabel,
    report_notes,
)
from reid_core.data.batch_transforms import AugmentedLoader, AugmentParams, BatchAugment, NormalizingCollate
from reid_core.data.cuhk03 import CUHK03, extract_cuhk03_images, read_cuhk03_split
from reid_core.data.decoded_store import CACHE_ENV, DecodedImageStore, default_store
from reid_core.data.digits import DigitsSplit, load_digits_split
from reid_core.data.dukemtmc import DukeMTMCreID
from reid_core.data.image_dataset import ImageDataset, ImageLoadError, read_image
from reid_core.data.market1501 import MARKET_SUBFOLDERS, Market1501, MarketLayoutDataset, read_market_layout
from reid_core.data.msmt17 import MSMT17, read_msmt17_list
from reid_core.data.registry import DATASETS, build_dataset
from reid_core.data.synthreid import (
    PROFILE_PRESETS,
    RENDERER_VERSION,
    SYNTHREID_PRESETS,
    SynthReID,
    SynthReIDConfig,
    SynthReIDInfo,
    ensure_synthreid,
    prepare_synthreid,
    preset_root,
    render_synthreid,
)
from reid_core.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomErasing,
    ReIDTransform,
    build_transforms,
    denormalize,
)
from reid_core.data.validation import ValidationSplit, carve_validation

__all__ = [
    "AugmentParams",
    "AugmentedLoader",
    "BatchAugment",
    "CACHE_ENV",
    "CUHK03",
    "DATASETS",
    "DatasetLayoutError",
    "DatasetNote",
    "DecodedImageStore",
    "DigitsSplit",
    "DukeMTMCreID",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "ImageLoadError",
    "Item",
    "MARKET_NAME_PATTERN",
    "MARKET_SUBFOLDERS",
    "MSMT17",
    "Market1501",
    "MarketLayoutDataset",
    "NormalizingCollate",
    "PROFILE_PRESETS",
    "RENDERER_VERSION",
    "RandomErasing",
    "ReIDDataset",
    "ReIDTransform",
    "SYNTHREID_PRESETS",
    "SynthReID",
    "SynthReIDConfig",
    "SynthReIDInfo",
    "ValidationSplit",
    "build_dataset",
    "build_transforms",
    "carve_validation",
    "default_store",
    "denormalize",
    "drop_junk",
    "ensure_synthreid",
    "extension_case_twins",
    "extract_cuhk03_images",
    "find_dataset_dir",
    "list_images",
    "load_digits_split",
    "not_read_note",
    "parse_market_folder",
    "prepare_synthreid",
    "preset_root",
    "read_cuhk03_split",
    "read_image",
    "read_market_layout",
    "read_msmt17_list",
    "relabel",
    "render_synthreid",
    "report_notes",
]
