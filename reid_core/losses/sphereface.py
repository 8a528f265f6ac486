r"""SphereFace / A-Softmax (Liu et al., CVPR 2017): a multiplicative angular margin.

The class weights are normalised (and carry no bias) but the feature is not, so a logit is
:math:`\lVert x\rVert\cos\theta_j`. The target uses :math:`\psi(\theta)` instead of
:math:`\cos\theta`, with an integer margin ``m`` (the paper uses 4):

.. math::
    \psi(\theta) = (-1)^k\cos(m\theta) - 2k, \qquad
    \theta \in \Big[\frac{k\pi}{m}, \frac{(k+1)\pi}{m}\Big],\ k = 0, \dots, m - 1

:math:`\psi` is continuous and decreasing on :math:`[0, \pi]` (plain :math:`\cos(m\theta)` is
not). :math:`\cos(m\theta) = T_m(\cos\theta)`, the Chebyshev polynomial (``8c^4 - 8c^2 + 1``
for m = 4), so no ``acos`` lies on the gradient path; :math:`k = \lfloor m\theta/\pi\rfloor`
only selects the piece, and rounding it at a piece boundary is harmless because
:math:`\psi` is continuous there.

A-Softmax with m = 4 does not train from scratch; the official Caffe layer anneals from
plain softmax by mixing in the cosine with a weight :math:`\lambda`:

.. math::
    f_{y} = \frac{\lambda\lVert x\rVert\cos\theta_y + \lVert x\rVert\psi(\theta_y)}{1 + \lambda},
    \qquad \lambda = \max\big(\lambda_{min},\ base\,(1 + \gamma\,it)^{-power}\big)

with base = 1000, gamma = 0.12, power = 1, lambda_min = 5 (the SphereFace prototxt). As in
that layer, the counter ``it`` is incremented *before* lambda is computed, once per
training-mode forward with labels; it is a buffer, so it is saved in the ``state_dict``.
Chapter: ``notebooks/02_metric_learning.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reid_core.losses.margin_head import MarginHead

__all__ = ["SphereFace", "chebyshev_cos_multiple", "sphereface_psi"]


def chebyshev_cos_multiple(cos_theta: Tensor, m: int) -> Tensor:
    r""":math:`\cos(m\theta) = T_m(\cos\theta)` by the recurrence :math:`T_{n+1} = 2cT_n - T_{n-1}`.

    Args:
        cos_theta: any shape, values in [-1, 1].
        m: a non-negative integer.

    Returns:
        Same shape as ``cos_theta``.
    """
    t_prev, t_cur = torch.ones_like(cos_theta), cos_theta  # T_0, T_1
    if m == 0:
        return t_prev
    for _ in range(m - 1):
        t_prev, t_cur = t_cur, 2.0 * cos_theta * t_cur - t_prev
    return t_cur


def sphereface_psi(cos_theta: Tensor, m: int) -> Tensor:
    r""":math:`\psi(\theta) = (-1)^k \cos(m\theta) - 2k` with :math:`k = \lfloor m\theta/\pi \rfloor`.

    Args:
        cos_theta: any shape, values in [-1, 1].
        m: the integer margin (>= 1).

    Returns:
        Same shape as ``cos_theta``, values in [-(2m - 1), 1]; differentiable in ``cos_theta``.
    """
    with torch.no_grad():  # k picks the piece; it carries no gradient
        theta = torch.acos(cos_theta.clamp(-1.0, 1.0))  # (...)
        k = torch.floor(m * theta / math.pi).clamp(0, m - 1)  # (...) theta = pi gives k = m
        sign = 1.0 - 2.0 * torch.remainder(k, 2)  # (-1)^k
    return sign * chebyshev_cos_multiple(cos_theta, m) - 2.0 * k


class SphereFace(MarginHead):
    """A-Softmax head with the annealed target logit; ``head(embeddings, labels) -> logits`` (B, C).

    Without labels the logits are :math:`\\lVert x\\rVert\\cos\\theta_j` (the scale of this
    head is the feature norm, not a constant).

    Args:
        embedding_dim: D.
        num_classes: C.
        m: integer multiplicative angular margin (>= 1; the paper uses 4).
        base, gamma, power, lambda_min: the annealing schedule of lambda (see module docstring).

    Attributes:
        iteration: 0-d int64 buffer, the number of training-mode forwards with labels so far.

    Example:
        >>> head = SphereFace(128, 10)
        >>> logits = head(torch.randn(4, 128), torch.tensor([0, 1, 2, 3]))  # (4, 10)
        >>> head.current_lambda()  # after one training step
        892.857...
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        m: int = 4,
        base: float = 1000.0,
        gamma: float = 0.12,
        power: float = 1.0,
        lambda_min: float = 5.0,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        if int(m) != m or m < 1:
            raise ValueError(f"m must be a positive integer, got {m}")
        if base < 0 or gamma < 0 or power < 0 or lambda_min < 0:
            raise ValueError(f"base, gamma, power, lambda_min must be >= 0, got {base}, {gamma}, {power}, {lambda_min}")
        self.m = int(m)
        self.base, self.gamma, self.power, self.lambda_min = float(base), float(gamma), float(power), float(lambda_min)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.int64))

    def lambda_at(self, iteration: Tensor | int) -> Tensor:
        """``max(lambda_min, base (1 + gamma it)^-power)`` as a float64 tensor (no host sync)."""
        it = torch.as_tensor(iteration, dtype=torch.float64, device=self.iteration.device)
        return (self.base * (1.0 + self.gamma * it) ** (-self.power)).clamp_min(self.lambda_min)

    def current_lambda(self) -> float:
        """The lambda the next forward outside training (or the last training forward) uses."""
        return float(self.lambda_at(self.iteration))

    def update_state(self, cosine: Tensor, labels: Tensor) -> None:
        """Advance the annealing counter (before lambda is read, as in the Caffe layer)."""
        self.iteration += 1

    def target_logit(self, cos_target: Tensor) -> Tensor:
        """``(lambda cos + psi) / (1 + lambda)`` on the (B, 1) target cosines."""
        lam = self.lambda_at(self.iteration).to(cos_target.dtype)  # 0-d
        return (lam * cos_target + sphereface_psi(cos_target, self.m)) / (1.0 + lam)  # (B, 1)

    def scale_logits(self, logits: Tensor, x: Tensor) -> Tensor:
        """Multiply by the feature norm ``||x||`` (B, 1); zero-norm rows give zero logits."""
        norm = (x * x).sum(dim=1, keepdim=True).clamp_min(1e-24).sqrt()  # (B, 1)
        return logits * norm  # (B, C)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, m={self.m}, base={self.base}, gamma={self.gamma}, "
            f"power={self.power}, lambda_min={self.lambda_min}"
        )
