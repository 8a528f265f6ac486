"""Training and inference, paper-agnostic: the trainer (tqdm, AMP, checkpoints, callbacks), learning-rate
schedules, data loaders, feature extraction and evaluation of a model on a query/gallery split, the
same on several processes under ``torchrun`` (DistributedDataParallel), numeric precision (float32,
AMP, bfloat16) and independent runs side by side, one process per core.

Chapters: every notebook trains and evaluates through it.
"""

from reid_core.engine.callbacks import FreezeBackboneBN
from reid_core.engine.checkpoint import CheckpointError, load_checkpoint, remove_stale_temp_files, save_checkpoint
from reid_core.engine.distributed import (
    DistributedConfig,
    ParallelTraining,
    TrainingStep,
    extract_features_distributed,
    init_distributed,
    shard_bounds,
    shutdown_distributed,
)
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
from reid_core.engine.model_card import (
    MODEL_CARD_FORMAT,
    LoadedModel,
    ModelCard,
    chapter_model_path,
    load_model,
    save_model,
    update_model_card,
)
from reid_core.engine.parallel_runs import (
    RunFailedError,
    RunOutcome,
    default_run_workers,
    run_side_by_side,
    values_or_raise,
)
from reid_core.engine.precision import (
    PRECISIONS,
    autocast_context,
    autocast_dtype,
    check_precision,
    cpu_has_native_bf16,
)
from reid_core.engine.schedules import SCHEDULES, AdaptiveLossStep, build_lr_schedule
from reid_core.engine.trainer import Callback, TrainConfig, Trainer, default_device, seed_everything

__all__ = [
    "AdaptiveLossStep",
    "Callback",
    "CheckpointError",
    "CheckpointMismatchError",
    "DistributedConfig",
    "EvalResult",
    "FINGERPRINT_KEY",
    "Features",
    "FreezeBackboneBN",
    "LoadedModel",
    "MODEL_CARD_FORMAT",
    "ModelCard",
    "NOT_RECIPE",
    "PRECISIONS",
    "ParallelTraining",
    "RunFailedError",
    "RunOutcome",
    "SCHEDULES",
    "TrainConfig",
    "Trainer",
    "TrainingStep",
    "autocast_context",
    "autocast_dtype",
    "build_lr_schedule",
    "build_test_loader",
    "build_train_loader",
    "chapter_model_path",
    "check_fingerprint",
    "check_precision",
    "cpu_has_native_bf16",
    "default_device",
    "default_run_workers",
    "default_workers",
    "evaluate_distance",
    "evaluate_reid",
    "extract_features",
    "extract_features_distributed",
    "fingerprint_differences",
    "init_distributed",
    "load_checkpoint",
    "load_model",
    "metrics_from_cmc",
    "remove_stale_temp_files",
    "run_fingerprint",
    "run_side_by_side",
    "save_checkpoint",
    "save_model",
    "seed_everything",
    "shard_bounds",
    "shutdown_distributed",
    "update_model_card",
    "values_or_raise",
]
