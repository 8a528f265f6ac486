"""Training and inference, paper-agnostic: the trainer (tqdm, AMP, checkpoints, callbacks), learning-rate
schedules, data loaders, feature extraction and evaluation of a model on a query/gallery split, and
the same on several processes under ``torchrun`` (DistributedDataParallel).

Chapters: every notebook trains and evaluates through it.
"""

from reid_core.engine.callbacks import FreezeBackboneBN
from reid_core.engine.distributed import (
    DistributedConfig,
    ParallelTraining,
    TrainingStep,
    extract_features_distributed,
    init_distributed,
    shard_bounds,
    shutdown_distributed,
)
from reid_core.engine.checkpoint import CheckpointError, load_checkpoint, remove_stale_temp_files, save_checkpoint
from reid_core.engine.evaluate import EvalResult, evaluate_distance, evaluate_reid, metrics_from_cmc
from reid_core.engine.features import Features, extract_features
from reid_core.engine.fingerprint import (
    FINGERPRINT_KEY,
    NOT_RECIPE,
    CheckpointMismatchError,
    check_fingerprint,
    fingerprint_differences,
    run_fingerprint,
)
from reid_core.engine.loaders import build_test_loader, build_train_loader, default_workers
from reid_core.engine.schedules import SCHEDULES, AdaptiveLossStep, build_lr_schedule
from reid_core.engine.trainer import Callback, TrainConfig, Trainer, default_device, seed_everything

__all__ = [
    "AdaptiveLossStep",
    "Callback",
    "CheckpointError",
    "DistributedConfig",
    "CheckpointMismatchError",
    "EvalResult",
    "FINGERPRINT_KEY",
    "Features",
    "FreezeBackboneBN",
    "ParallelTraining",
    "NOT_RECIPE",
    "SCHEDULES",
    "TrainConfig",
    "Trainer",
    "TrainingStep",
    "build_lr_schedule",
    "build_test_loader",
    "build_train_loader",
    "check_fingerprint",
    "default_device",
    "default_workers",
    "evaluate_distance",
    "evaluate_reid",
    "extract_features",
    "extract_features_distributed",
    "init_distributed",
    "fingerprint_differences",
    "load_checkpoint",
    "metrics_from_cmc",
    "remove_stale_temp_files",
    "run_fingerprint",
    "save_checkpoint",
    "seed_everything",
    "shard_bounds",
    "shutdown_distributed",
]
