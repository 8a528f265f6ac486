"""Numeric precision of training and feature extraction: which autocast dtype, on which device.

Three settings, shared by :class:`~reid_core.engine.trainer.TrainConfig` and
:func:`~reid_core.engine.features.extract_features`:

* ``"auto"`` (the default, and the behaviour before the setting existed): float16 autocast
  (AMP, with a gradient scaler when training) on CUDA when ``amp`` is on; float32 on the CPU.
* ``"fp32"``: no autocast anywhere.
* ``"bf16"``: bfloat16 autocast on the CPU and on CUDA. bfloat16 keeps float32's 8 exponent
  bits (no overflow, so no gradient scaler) and 8 significant bits (a relative rounding error
  of at most :math:`2^{-8}` per stored value); convolutions and matrix products read bf16
  inputs and accumulate in float32. CPUs with ``avx512_bf16`` or AMX run it in hardware; the
  others emulate it, slower than float32 (:func:`cpu_has_native_bf16` says which).

Under autocast only the ops on PyTorch's lower-precision list (convolutions, linear layers,
matrix products) run in the low dtype; reductions such as losses and norms stay in float32.
Weights, optimizer state and returned features are always float32.

Chapters: every chapter's training and evaluation (bf16 on the CPU where it does not cost accuracy).
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

__all__ = ["PRECISIONS", "autocast_context", "autocast_dtype", "check_precision", "cpu_has_native_bf16"]

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast_dtype(precision: str, device: torch.device | str, amp: bool = True) -> torch.dtype | None:
    """The dtype autocast should use for ``precision`` on ``device``, or ``None`` for plain float32.

    Args:
        precision: one of :data:`PRECISIONS`.
        device: where the model runs.
        amp: consulted by ``"auto"`` only: float16 AMP on CUDA when true.

    Returns:
        ``torch.float16``, ``torch.bfloat16`` or ``None``.
    """
    check_precision(precision)
    device_type = torch.device(device).type
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and amp and device_type == "cuda":
        return torch.float16
    return None


def autocast_context(dtype: torch.dtype | None, device: torch.device | str) -> AbstractContextManager[object]:
    """``torch.autocast`` on ``device``'s type with ``dtype``, or a no-op context for ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (avx512_bf16 or AMX tiles), so bf16 is not emulated."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
