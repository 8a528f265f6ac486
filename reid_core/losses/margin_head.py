r"""The shared base of the softmax-family heads: L2-softmax, SphereFace, CosFace, ArcFace, AdaCos.

Every head holds one weight vector :math:`W_j` per class (a ``weight`` of shape (C, D)) and
turns a batch of embeddings into logits for ``F.cross_entropy``. They differ only in three
places, which are the hooks a subclass overrides:

1. ``similarity``: the (B, C) matrix the margin acts on; by default the cosine
   :math:`\cos\theta_{ij} = \hat x_i \cdot \hat W_j` of the L2-normalised feature and weight.
2. ``target_logit``: the value that replaces the target entry :math:`\cos\theta_{i,y_i}`
   (``cos - m`` for CosFace, ``cos(theta + m)`` for ArcFace, ...); identity by default.
3. ``scale_logits``: the scale applied at the end (a fixed ``s``, the feature norm, ...).

plus ``update_state``, called once per training-mode forward with labels, for heads whose
state moves during training (SphereFace's annealing counter, AdaCos's dynamic scale).

.. math::
    z_{ij} = s \cdot \begin{cases} g(\cos\theta_{ij}) & j = y_i \\ \cos\theta_{ij} & j \ne y_i \end{cases}

The margin math always runs in float32 (float64 if the input is float64) with autocast
switched off: under float16 a cosine of 0.9999 rounds to 1 and ``acos``/``sqrt`` near
:math:`\pm 1` lose every digit. Cosines are clamped to [-1, 1] and square roots clamped away
from 0, so values and gradients stay finite at :math:`\cos = \pm 1`; an all-zero embedding
(or weight row) has cosine 0 and a zero gradient (:func:`safe_normalize`).

Chapter: ``notebooks/02_metric_learning.py`` (the L2-softmax family).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MarginHead", "safe_normalize", "safe_sqrt", "check_scale"]

_SQRT_EPS = 1e-7  # floor under sqrt(1 - cos^2): bounds the gradient near cos = +-1


def safe_normalize(x: Tensor, dim: int = -1) -> Tensor:
    r"""L2-normalise along ``dim``; an all-zero row maps to 0 with a zero gradient.

    The direction of a zero vector is undefined, and ``x / max(||x||, eps)`` (``F.normalize``)
    gives it a gradient of ``1 / eps`` = 1e12, which is ``inf`` once cast to float16 and
    would make a ``GradScaler`` skip every step. Here the inverse norm is set to 0 for an
    exact zero row instead, so both the value and the gradient there are 0; every other row
    is :math:`x / \lVert x\rVert` with its exact gradient.

    Args:
        x: any shape, e.g. (B, D).
        dim: the axis to normalise.

    Returns:
        Same shape as ``x``; rows of norm 1, or 0 for an all-zero row.
    """
    sq_norm = (x * x).sum(dim=dim, keepdim=True)  # (..., 1)
    nonzero = sq_norm > 0
    # The clamp only keeps rsqrt finite on the rows that ``where`` discards (no 0 * inf = NaN).
    inv_norm = torch.where(nonzero, sq_norm.clamp_min(torch.finfo(x.dtype).tiny).rsqrt(), torch.zeros_like(sq_norm))
    return x * inv_norm


def safe_sqrt(x: Tensor, eps: float = _SQRT_EPS) -> Tensor:
    """``sqrt(max(x, eps))``: finite gradient everywhere (zero below ``eps``).

    Args:
        x: any shape, e.g. ``1 - cos^2`` (B, 1).
        eps: the floor; the gradient never exceeds ``1 / (2 sqrt(eps))``.

    Returns:
        Same shape as ``x``.
    """
    return x.clamp_min(eps).sqrt()


class MarginHead(nn.Module):
    """Base class: a (C, D) class-weight matrix and the hooks each paper changes.

    Subclasses override ``target_logit`` (the margin), ``scale_logits`` (the scale) and, if
    they carry training state, ``update_state``; see the module docstring.

    Args:
        embedding_dim: D, the size of each embedding.
        num_classes: C, the number of training classes.

    Attributes:
        weight: (C, D) class weight vectors, Xavier-uniform initialised.
    """

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.embedding_dim, self.num_classes = embedding_dim, num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))  # (C, D)
        nn.init.xavier_uniform_(self.weight)

    # ---- hooks ---------------------------------------------------------------------------
    def similarity(self, x: Tensor, weight: Tensor) -> Tensor:
        r"""Cosine :math:`\hat x_i \cdot \hat W_j`, clamped to [-1, 1]. x (B, D), weight (C, D) -> (B, C)."""
        return (safe_normalize(x) @ safe_normalize(weight).T).clamp(-1.0, 1.0)  # (B, C)

    def target_logit(self, cos_target: Tensor) -> Tensor:
        """The margin: maps the target cosines (B, 1) to the values used in their place (B, 1)."""
        return cos_target

    def scale_logits(self, logits: Tensor, x: Tensor) -> Tensor:
        """The scale: (B, C) margin-adjusted cosines and the (B, D) input -> (B, C) logits."""
        raise NotImplementedError(f"{type(self).__name__} must define scale_logits")

    def update_state(self, cosine: Tensor, labels: Tensor) -> None:
        """Called once per training-mode forward with labels, before the margin is applied.

        Args:
            cosine: (B, C) the similarity matrix (detach before storing anything from it).
            labels: (B,) target classes.
        """

    # ---- the shared forward --------------------------------------------------------------
    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits for cross-entropy, with the margin on the target class when ``labels`` is given.

        Args:
            embeddings: (B, D) features, any floating dtype (computed in float32 at least).
            labels: (B,) integer class indices in [0, C), or ``None`` for the plain scaled
                logits (inference, retrieval).

        Returns:
            (B, C) logits in float32 (float64 for float64 input).
        """
        self._check_inputs(embeddings, labels)
        dtype = torch.promote_types(torch.promote_types(embeddings.dtype, self.weight.dtype), torch.float32)
        # Autocast would re-cast the matmul to float16; the margin needs the full precision.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x = embeddings.to(dtype)  # (B, D)
            cosine = self.similarity(x, self.weight.to(dtype))  # (B, C)
            if labels is not None:
                labels = labels.to(device=cosine.device, dtype=torch.int64)  # gather/scatter index
                if self.training:
                    self.update_state(cosine.detach(), labels)
                index = labels.unsqueeze(1)  # (B, 1)
                target = self.target_logit(cosine.gather(1, index))  # (B, 1)
                # One-hot mixing without building the one-hot: only the target entry changes.
                cosine = cosine.scatter(1, index, target)  # (B, C)
            return self.scale_logits(cosine, x)  # (B, C)

    def _check_inputs(self, embeddings: Tensor, labels: Tensor | None) -> None:
        """Raise a ValueError naming the argument when a shape, dtype or label is wrong."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"embeddings must be (B, {self.embedding_dim}), got {tuple(embeddings.shape)}")
        if not embeddings.is_floating_point():
            raise ValueError(f"embeddings must be a floating tensor, got {embeddings.dtype}")
        if labels is None:
            return
        if labels.shape != embeddings.shape[:1]:
            raise ValueError(f"labels must be ({embeddings.shape[0]},) to match embeddings, got {tuple(labels.shape)}")
        if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
        # Checked here: an out-of-range index would surface on CUDA as an opaque device assert.
        if ((labels < 0) | (labels >= self.num_classes)).any():
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got min {int(labels.min())}, max {int(labels.max())}"
            )

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}"


def check_scale(s: float) -> float:
    """Validate a fixed logit scale ``s`` (> 0, finite) and return it as a float."""
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"s must be a positive finite number, got {s}")
    return float(s)
