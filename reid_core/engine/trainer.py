"""A small, explicit training loop shared by every chapter.

The trainer knows nothing about a paper: a chapter gives it a model, a *criterion* and a data
loader. The criterion is called as ``criterion(output, labels) -> dict[str, Tensor]`` and returns
the loss terms already weighted; their sum is minimised and each term is logged, so a notebook
can plot the ID, triplet and mutual terms separately. If the criterion is an ``nn.Module`` with
parameters (a margin head's class weights), they are optimised too.

What it does for you: tqdm progress, mixed precision (AMP) and ``channels_last`` on CUDA,
warm-up + step/cosine/exp schedules per iteration, gradient clipping, atomic checkpoints with
resume (``weights_only=True``), seeding, and per-epoch statistics (mean loss terms, learning
rate, seconds, images per second). Callbacks hook the epoch boundaries (the graph sampler
rebuilds its graph there; QAConv's adaptive schedule decides when to stop).

Under ``torchrun`` the same code trains on several processes (:mod:`reid_core.engine.distributed`):
model and criterion are wrapped in DistributedDataParallel, the epoch statistics are pooled
over the ranks, and only rank 0 shows progress and writes checkpoints.

Example:
    >>> trainer = Trainer(model, criterion, loader, TrainConfig(epochs=10, lr=3.5e-4))
    >>> history = trainer.fit()
"""

from __future__ import annotations

import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from reid_core.engine.checkpoint import load_checkpoint, remove_stale_temp_files, save_checkpoint
from reid_core.engine.distributed import DistributedConfig, ParallelTraining
from reid_core.engine.fingerprint import FINGERPRINT_KEY, check_fingerprint, run_fingerprint
from reid_core.engine.precision import autocast_context, autocast_dtype, check_precision
from reid_core.engine.schedules import build_lr_schedule

__all__ = ["TrainConfig", "Trainer", "Callback", "seed_everything", "default_device"]

Criterion = Callable[[Any, Tensor], dict[str, Tensor]]


def default_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and torch (all devices); optionally ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def _fused_optimizer_ok(groups: list[dict[str, Any]]) -> bool:
    """True when torch's fused optimizer kernels can update every parameter of ``groups``.

    The fused Adam, AdamW and SGD compute the same update as the per-tensor loop in one kernel
    (on a 2-core CPU, 4 ms instead of 35 ms a step for a ResNet-10 with a 3,000-class head); they
    need floating-point parameters on the CPU or a CUDA device, all on one device type.
    """
    params = [p for group in groups for p in group["params"]]
    device_types = {p.device.type for p in params}
    return (
        bool(params)
        and len(device_types) == 1
        and device_types <= {"cpu", "cuda"}
        and all(p.is_floating_point() for p in params)
    )


@dataclass
class TrainConfig:
    """Optimisation recipe. Defaults follow the strong baseline (Luo et al. 2019).

    Attributes:
        epochs: number of epochs.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: base learning rate.
        weight_decay: L2 weight decay.
        momentum, nesterov: SGD only.
        scheduler: ``"step"``, ``"cosine"``, ``"exp"`` or ``"constant"``.
        milestones, gamma: step decay.
        warmup_epochs, warmup_factor: linear warm-up.
        decay_start: start epoch of the ``exp`` decay.
        amp: float16 mixed precision on CUDA, when ``precision`` is ``"auto"``.
        precision: ``"auto"`` (float16 AMP on CUDA if ``amp``, float32 on the CPU), ``"fp32"`` or
            ``"bf16"`` (bfloat16 autocast on CPU and CUDA); see :mod:`reid_core.engine.precision`.
        channels_last: memory format for images and model (CUDA only).
        grad_clip: max gradient norm, or ``None``.
        max_iters_per_epoch: cap iterations per epoch (``None`` = the whole loader).
        checkpoint_dir: where ``last.pt`` goes; ``None`` = no checkpoints.
        checkpoint_every: epochs between checkpoints (>= 1; the last epoch always checkpoints).
        resume: continue from ``checkpoint_dir/last.pt`` if it exists and was written by the
            same run: same recipe, model, optimizer and data (:mod:`reid_core.engine.fingerprint`);
            another run's checkpoint stops :meth:`Trainer.fit` with a ``CheckpointMismatchError``.
        seed: seeds Python, numpy and torch at the start of :meth:`Trainer.fit`.
        progress: show tqdm bars and a one-line summary per epoch, both on stderr (a notebook
            keeps them in its outputs; the book hides stderr and shows the history plots).
    """

    epochs: int = 120
    optimizer: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    scheduler: str = "step"
    milestones: Sequence[int] = (40, 70)
    gamma: float = 0.1
    warmup_epochs: float = 10.0
    warmup_factor: float = 0.1
    decay_start: int | None = None
    amp: bool = True
    precision: str = "auto"
    channels_last: bool = True
    grad_clip: float | None = None
    max_iters_per_epoch: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    resume: bool = True
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adam', 'adamw' or 'sgd', got {self.optimizer!r}")
        counts = {"epochs": self.epochs, "checkpoint_every": self.checkpoint_every, "seed": self.seed}
        if self.max_iters_per_epoch is not None:
            counts["max_iters_per_epoch"] = self.max_iters_per_epoch
        for name, value in counts.items():  # 2.5 epochs or "2" would fail (or round) far into a run
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"TrainConfig.{name} must be an int, got {type(value).__name__} {value!r}")
            if name != "seed" and value < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {value}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        check_precision(self.precision)


class Callback(Protocol):
    """Optional hooks; implement any subset (the trainer checks with ``hasattr``)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_iteration_end(self, trainer: Trainer, iteration: int, terms: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, stats: dict[str, float]) -> None: ...


@dataclass
class _State:
    epoch: int = 0  # next epoch to run
    iteration: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Train ``model`` with ``criterion`` on batches ``(images, pids, ...)`` from ``loader``.

    Args:
        model: returns whatever ``criterion`` takes (usually a :class:`ReIDOutput`).
        criterion: ``criterion(output, labels) -> dict`` of weighted loss terms.
        loader: yields ``(images, pids, *rest)``; ``images`` (B, 3, H, W).
        config: the :class:`TrainConfig`.
        device: defaults to CUDA when available.
        param_groups: optional optimizer groups ``[{"params": [...], "lr_mult": 0.1}, ...]``
            replacing the default (all parameters of model and criterion at ``lr``).
        callbacks: objects with any of the :class:`Callback` hooks. Under ``torchrun`` they run
            on every rank; ``on_iteration_end`` gets this rank's terms, ``on_epoch_end`` the
            statistics pooled over the ranks.
        distributed: how to wrap the model under ``torchrun`` (SyncBatchNorm, ...); ignored
            with one process.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Criterion,
        loader: Iterable,
        config: TrainConfig,
        device: torch.device | str | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        callbacks: Sequence[object] = (),
        distributed: DistributedConfig | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device)
        self.criterion = criterion.to(self.device) if isinstance(criterion, nn.Module) else criterion
        self.loader = loader
        self.callbacks = list(callbacks)
        self.use_cuda = self.device.type == "cuda"
        self.autocast_dtype = autocast_dtype(config.precision, self.device, amp=config.amp)
        self.use_amp = self.autocast_dtype == torch.float16  # float16 needs the gradient scaler; bfloat16 does not
        self.memory_format = (
            torch.channels_last if (config.channels_last and self.use_cuda) else torch.contiguous_format
        )
        if self.memory_format == torch.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # model + criterion as one module, DDP-wrapped under torchrun; self.model stays the bare model
        self.parallel = ParallelTraining(self.model, self.criterion, self.device, distributed or DistributedConfig())
        self.optimizer = self._build_optimizer(param_groups)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.schedule = build_lr_schedule(
            config.scheduler,
            config.epochs,
            config.milestones,
            config.gamma,
            config.warmup_epochs,
            config.warmup_factor,
            config.decay_start,
        )
        self.lr_scale = 1.0  # callbacks (e.g. AdaptiveLossStep) may change it
        self.stop_training = False
        self._fingerprint: dict[str, Any] | None = None
        self.state = _State()

    # ------------------------------------------------------------------ setup
    def _build_optimizer(self, param_groups: list[dict[str, Any]] | None) -> torch.optim.Optimizer:
        cfg = self.config
        if param_groups is None:
            params = list(self.model.parameters())
            if isinstance(self.criterion, nn.Module):
                params += list(self.criterion.parameters())
            param_groups = [{"params": [p for p in params if p.requires_grad], "lr_mult": 1.0}]
        groups = []
        for group in param_groups:
            group = dict(group)
            group.setdefault("lr_mult", 1.0)
            group["params"] = [p for p in group["params"] if p.requires_grad]
            group["lr"] = cfg.lr * group["lr_mult"]
            groups.append(group)
        fused = _fused_optimizer_ok(groups)  # one kernel per step: Adam's update is ~1/6 of a small CPU step
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                groups,
                lr=cfg.lr,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov,
                weight_decay=cfg.weight_decay,
                fused=fused,
            )
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)

    def _set_lr(self, epoch_float: float) -> float:
        factor = self.schedule(epoch_float) * self.lr_scale
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * group["lr_mult"] * factor
        return self.config.lr * factor

    # ------------------------------------------------------------ checkpoint
    @property
    def checkpoint_path(self) -> Path | None:
        return Path(self.config.checkpoint_dir) / "last.pt" if self.config.checkpoint_dir else None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimizer, scaler, counters, history, RNG."""
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.state.epoch,
            "iteration": self.state.iteration,
            "history": self.state.history,
            "lr_scale": self.lr_scale,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()},
            "torch_rng": torch.get_rng_state(),
            FINGERPRINT_KEY: self.fingerprint(),
        }
        if isinstance(self.criterion, nn.Module):
            state["criterion"] = self.criterion.state_dict()
        if self.use_cuda:
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def fingerprint(self) -> dict[str, Any]:
        """What this run trains: recipe, model, optimizer and data (:mod:`reid_core.engine.fingerprint`).

        Taken when :meth:`fit` starts and kept, so that every checkpoint of the run holds the same
        one (a graph sampler's number of batches changes once its first graph is built).
        """
        if self._fingerprint is None:
            self._fingerprint = run_fingerprint(self.config, self.model, self.criterion, self.optimizer, self.loader)
        return self._fingerprint

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if isinstance(self.criterion, nn.Module) and "criterion" in state:
            self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.state = _State(
            epoch=int(state["epoch"]), iteration=int(state["iteration"]), history=list(state["history"])
        )
        self.lr_scale = float(state.get("lr_scale", 1.0))
        torch.set_rng_state(state["torch_rng"])
        if self.use_cuda and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.parallel.restore_random_states(state)  # under torchrun: this rank's own state

    def save(self) -> Path | None:
        """Write ``checkpoint_dir/last.pt`` atomically (no-op without a checkpoint_dir).

        Under ``torchrun`` every rank must call it (the ranks' random states are gathered);
        rank 0 writes and the others return ``None``.
        """
        if self.checkpoint_path is None:
            return None
        state = {**self.state_dict(), **self.parallel.random_states()}
        return save_checkpoint(state, self.checkpoint_path) if self.parallel.is_main else None

    # --------------------------------------------------------------- training
    def _call(self, name: str, *args: Any) -> None:
        for cb in self.callbacks:
            hook = getattr(cb, name, None)
            if hook is not None:
                hook(self, *args)

    def fit(self) -> list[dict[str, float]]:
        """Run the remaining epochs; returns the per-epoch history (also in ``self.state``)."""
        cfg = self.config
        seed_everything(cfg.seed + self.parallel.rank)  # each rank its own augmentations
        self._fingerprint = None
        fingerprint = self.fingerprint()  # before the first epoch changes anything
        if self.checkpoint_path is not None and self.parallel.is_main:
            for stale in remove_stale_temp_files(self.checkpoint_path):
                warnings.warn(f"removed {stale}, the temporary file of a save that was interrupted", stacklevel=2)
        if cfg.resume and self.checkpoint_path is not None and self.checkpoint_path.is_file():
            state = load_checkpoint(self.checkpoint_path, map_location=self.device)
            check_fingerprint(state, fingerprint, self.checkpoint_path)  # another run's checkpoint stops here
            self.load_state_dict(state)
            if cfg.progress and self.parallel.is_main:
                tqdm.write(f"resumed from {self.checkpoint_path} at epoch {self.state.epoch}")
        while self.state.epoch < cfg.epochs and not self.stop_training:
            stats = self._run_epoch(self.state.epoch)
            self.state.history.append(stats)
            self._call("on_epoch_end", self.state.epoch, stats)
            self.stop_training, self.lr_scale = self.parallel.agree(self.stop_training, self.lr_scale)
            self.state.epoch += 1
            last = self.state.epoch >= cfg.epochs or self.stop_training
            if self.checkpoint_path is not None and (self.state.epoch % cfg.checkpoint_every == 0 or last):
                self.save()
        return self.state.history

    def _run_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        if isinstance(self.criterion, nn.Module):
            self.criterion.train()
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        batch_sampler = getattr(self.loader, "batch_sampler", None)
        if hasattr(batch_sampler, "set_epoch"):
            batch_sampler.set_epoch(epoch)
        self._call("on_epoch_start", epoch)  # after model.train(): a hook may freeze BN
        try:
            n_iters = len(self.loader)  # type: ignore[arg-type]
        except TypeError:
            n_iters = cfg.max_iters_per_epoch or 0
        if cfg.max_iters_per_epoch is not None:
            n_iters = min(n_iters, cfg.max_iters_per_epoch) if n_iters else cfg.max_iters_per_epoch
        sums: dict[str, float] = {}
        seen = 0
        start = time.perf_counter()
        show = cfg.progress and self.parallel.is_main
        bar = tqdm(
            total=n_iters or None,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not show,
            leave=False,
            mininterval=2.0,
        )
        lr = self._set_lr(epoch)
        for i, batch in enumerate(self.loader):
            if cfg.max_iters_per_epoch is not None and i >= cfg.max_iters_per_epoch:
                break
            lr = self._set_lr(epoch + i / max(n_iters, 1))
            terms = self._step(batch)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            seen += int(batch[0].shape[0])
            self.state.iteration += 1
            self._call("on_iteration_end", self.state.iteration, terms)
            bar.update(1)
            if i % 10 == 0:
                bar.set_postfix(loss=f"{terms['loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
        bar.close()
        if self.use_cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        n = max(i + 1 if seen else 0, 1)
        sums, seen = self.parallel.pool_epoch(sums, seen)  # every rank's images; terms averaged over ranks
        stats = {k: v / n for k, v in sums.items()}
        stats.update(
            epoch=float(epoch + 1),
            lr=lr,
            seconds=seconds,
            images=float(seen),
            images_per_second=seen / max(seconds, 1e-9),
        )
        if show:
            terms_text = " ".join(
                f"{k}={v:.4f}"
                for k, v in stats.items()
                if k not in ("epoch", "lr", "seconds", "images", "images_per_second")
            )
            tqdm.write(
                f"epoch {epoch + 1}/{cfg.epochs} {terms_text} lr={lr:.2e} {stats['images_per_second']:.0f} img/s",
                file=sys.stderr,
            )
        return stats

    def _step(self, batch: Sequence[Any]) -> dict[str, float]:
        images = batch[0].to(self.device, non_blocking=True, memory_format=self.memory_format)
        labels = batch[1].to(self.device, non_blocking=True)
        with autocast_context(self.autocast_dtype, self.device):
            terms = self.parallel.step(images, labels)  # criterion(model(images), labels)
        if not terms:
            raise ValueError("criterion returned no loss terms")
        loss = sum(t.float() for t in terms.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {float(loss.detach())} (terms: { {k: float(v.detach()) for k, v in terms.items()} })"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.config.grad_clip
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["loss"] = float(loss.detach())
        return out
