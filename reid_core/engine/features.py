"""Feature extraction for evaluation, with horizontal-flip averaging.

A pedestrian mirrored left-right is the same pedestrian, so averaging the features of an image
and of its mirror is a free test-time augmentation used by most re-ID codebases:
:math:`f(x) \\leftarrow \\tfrac12\\,(f(x) + f(\\mathrm{flip}(x)))`. For a spatial map the mirror's
map is flipped back before averaging, so position (i, j) means the same place in both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from reid_core.engine.precision import autocast_context, autocast_dtype
from reid_core.modes import eval_mode

__all__ = ["Features", "extract_features"]


@dataclass
class Features:
    """Extracted features with their labels.

    Attributes:
        features: (N, ...) float32 on CPU (shape depends on the field: (N, D), (N, S, d), (N, C, h, w)).
        pids: (N,) identities.
        camids: (N,) 0-based cameras.
    """

    features: Tensor
    pids: np.ndarray
    camids: np.ndarray


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    field: str = "feat",
    flip: bool = True,
    normalize: bool = False,
    amp: bool = True,
    precision: str = "auto",
    progress: bool = True,
    desc: str = "features",
) -> Features:
    """Run ``model`` in eval mode over ``loader`` and collect one output field.

    Args:
        model: returns a :class:`~reid_core.models.outputs.ReIDOutput` (or anything with ``field``).
        loader: yields ``(images, pids, camids, ...)``.
        device: where to run (default: the model's device).
        field: which output field to keep (``"feat"``, ``"local"``, ``"feature_map"``, ...).
        flip: average with the horizontally mirrored image.
        normalize: L2-normalise the result along its last feature axis (dim 1 for maps).
        amp: float16 autocast on CUDA, when ``precision`` is ``"auto"``.
        precision: ``"auto"`` (float16 on CUDA if ``amp``, float32 on the CPU), ``"fp32"`` or ``"bf16"``
            (bfloat16 autocast; see :mod:`reid_core.engine.precision`). Features come back float32 either way.
        progress: tqdm bar.

    Returns:
        :class:`Features` on the CPU.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    feats, pids, camids = [], [], []
    dtype = autocast_dtype(precision, device, amp=amp)
    with eval_mode(model):
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, mininterval=2.0):
            images = batch[0].to(device, non_blocking=True)
            with autocast_context(dtype, device):
                out = _field(model(images), field)
                if flip:
                    mirrored = _field(model(torch.flip(images, dims=[3])), field)
                    if out.dim() == 4:  # (B, C, h, w): flip the map back
                        mirrored = torch.flip(mirrored, dims=[3])
                    out = (out.float() + mirrored.float()) / 2
            out = out.float()
            if normalize:
                out = nn.functional.normalize(out, dim=1 if out.dim() == 4 else -1)
            feats.append(out.cpu())
            pids.append(np.asarray(batch[1]))
            camids.append(np.asarray(batch[2]))
    if not feats:
        raise ValueError("extract_features: the loader yielded no batches")
    return Features(torch.cat(feats), np.concatenate(pids), np.concatenate(camids))


def _field(output: object, field: str) -> Tensor:
    value = getattr(output, field, None)
    if value is None:
        raise ValueError(f"model output has no field {field!r} (or it is None); got {type(output).__name__}")
    return value
