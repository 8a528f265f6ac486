r"""What the processes of a ``torchrun`` job exchange: rank, gathers, pooled means, broadcasts.

Under ``torchrun --nproc_per_node=N`` every process trains on its own share of each batch and
``DistributedDataParallel`` averages the gradients. A loss that compares the samples of a
batch with each other (batch-hard triplet, QAConv's pair losses, AdaCos's batch statistics)
then sees only this process's share unless it gathers the others'. These helpers are how the
losses and samplers talk to ``torch.distributed`` (the engine starts the job and wraps the
model: :mod:`reid_core.engine.distributed`); with no process group (a notebook, one process)
every function is the identity or the plain reduction, and the losses compute their one-process loss.

Global-batch semantics. Process r holds rows :math:`x_{rB}, \dots, x_{rB+B-1}` of the global
batch of :math:`NB` samples. A pair loss computes its (B, NB) block of the global matrix (its
rows against every column, gathered with :func:`gather_with_grad`) and the mean over its
anchors with :func:`pooled_mean`, which returns

.. math::
    \tilde L_r = \frac{N}{n} \sum_{a \in \text{rows of } r} \ell_a, \qquad n = \sum_r n_r,

so that DDP's average of the N gradients, :math:`\frac1N \sum_r \nabla \tilde L_r`, is the
gradient of the global mean :math:`\frac1n \sum_a \ell_a`. The gather's backward sums, over
processes, the gradients that every process's loss sends to this process's samples, so the
gradient also flows through the columns.

Chapters: every chapter's losses; the engine's multi-process training.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "BatchScope",
    "BATCH_SCOPES",
    "batch_columns",
    "broadcast_from_main",
    "check_batch_scope",
    "collective_device",
    "gather_rows",
    "gather_with_grad",
    "is_distributed",
    "is_main_process",
    "pooled_mean",
    "process_count",
    "process_rank",
    "self_pairs",
    "sum_over_processes",
]

BatchScope = Literal["global", "local"]
BATCH_SCOPES = ("global", "local")


def is_distributed() -> bool:
    """True inside a process group of more than one process (``torchrun --nproc_per_node>=2``)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def process_count() -> int:
    """N, the number of processes of the job (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def process_rank() -> int:
    """r, this process's rank in ``0..N-1`` (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """True on rank 0, the process that writes checkpoints, logs and results."""
    return process_rank() == 0


def check_batch_scope(batch_scope: str) -> None:
    """Raise a ValueError naming ``batch_scope`` unless it is ``"global"`` or ``"local"``."""
    if batch_scope not in BATCH_SCOPES:
        raise ValueError(f"batch_scope must be 'global' or 'local', got {batch_scope!r}")


def collective_device() -> torch.device:
    """Where the process group's tensors must be: the current CUDA device for NCCL, else the CPU."""
    if dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _batch_sizes(x: Tensor) -> list[int]:
    """The first dimension of ``x`` on every process, in rank order."""
    size = torch.tensor([x.shape[0]], dtype=torch.int64, device=collective_device())
    sizes = [torch.zeros_like(size) for _ in range(process_count())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: sum the (N * B, ...) gradient over processes, keep this piece."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rank, ctx.rows = process_rank(), x.shape[0]
        pieces = [torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(process_count())]
        dist.all_gather(pieces, x.contiguous())
        return torch.cat(pieces)  # (N * B, ...)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        total = grad.contiguous()  # (N * B, ...) a collective reads raw memory: no transposed views
        dist.all_reduce(total, op=dist.ReduceOp.SUM)  # every process's loss's gradient on every row
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]  # (B, ...) this process's rows


def gather_with_grad(x: Tensor) -> Tensor:
    """Every process's ``x`` concatenated in rank order, differentiable.

    Backward: the gradient of the (N * B, ...) result is summed over processes (every
    process's loss may use every row) and this process keeps the rows of its ``x``. Written
    with public collectives (``all_gather``, ``all_reduce``) because the backward of
    ``torch.distributed.nn.functional.all_gather`` (deprecated in torch 2.14) mixes up the
    gradient when it is not contiguous on gloo, which a feature map transposed by QAConv
    gives (``tests/test_distributed.py`` checks such a gradient).

    Args:
        x: (B, ...) this process's rows; B must be the same on every process.

    Returns:
        (N * B, ...) rows of process 0, then process 1, ...; ``x`` itself without a group.

    Raises:
        ValueError: the processes hold different B (a loader that does not drop its last batch).
    """
    if not is_distributed():
        return x
    sizes = _batch_sizes(x)
    if len(set(sizes)) != 1:
        raise ValueError(
            f"a global-batch loss needs the same batch size on every process, got {sizes} in rank order: "
            "use the distributed identity samplers with drop_last=True"
        )
    return _GatherWithGrad.apply(x.to(collective_device())).to(x.device)  # (N * B, ...)


@torch.no_grad()
def gather_rows(x: Tensor) -> Tensor:
    """Every process's ``x`` concatenated in rank order, no gradient, any first dimension.

    Args:
        x: (n_r, ...) this process's rows; n_r may differ between processes, the other
            dimensions and the dtype may not.

    Returns:
        (sum_r n_r, ...) on ``x``'s device; ``x`` itself without a group.
    """
    if not is_distributed():
        return x
    sizes = _batch_sizes(x)
    device = collective_device()
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=device)  # (n_max, ...)
    padded[: x.shape[0]] = x.to(device)
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[:n] for piece, n in zip(pieces, sizes)]).to(x.device)  # (sum n_r, ...)


@torch.no_grad()
def sum_over_processes(x: Tensor) -> Tensor:
    """The elementwise sum of ``x`` over processes (a new tensor; ``x`` unchanged)."""
    if not is_distributed():
        return x.clone()
    total = x.to(collective_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(x.device)


@torch.no_grad()
def broadcast_from_main(x: Tensor) -> Tensor:
    """Rank 0's ``x`` on every process (same shape and dtype everywhere); ``x`` without a group."""
    if not is_distributed():
        return x
    buffer = x.to(collective_device(), copy=True)
    dist.broadcast(buffer, src=0)
    return buffer.to(x.device)


def batch_columns(x: Tensor, labels: Tensor, batch_scope: BatchScope) -> tuple[Tensor, Tensor, int]:
    """The columns of a pair loss's matrix: this process's batch, or the whole global batch.

    Args:
        x: (B, ...) this process's embeddings or feature maps (the rows).
        labels: (B,) their identities.
        batch_scope: ``"local"``: the columns are the rows themselves; ``"global"``: every
            process's rows, gathered with gradient (the same as local with one process).

    Returns:
        ``(columns, column_labels, first)``: (M, ...) columns, (M,) their labels and the
        column index of this process's first row (``columns[first + i]`` is ``x[i]``).
    """
    check_batch_scope(batch_scope)
    if batch_scope == "local" or not is_distributed():
        return x, labels, 0
    columns = gather_with_grad(x)  # (N * B, ...)
    column_labels = gather_rows(labels.to(x.device))  # (N * B,)
    return columns, column_labels, process_rank() * x.shape[0]


def self_pairs(num_rows: int, num_columns: int, first: int, device: torch.device | str) -> Tensor:
    """(num_rows, num_columns) bool, True where column ``first + i`` is row i itself."""
    rows = torch.arange(num_rows, device=device).unsqueeze(1)  # (B, 1)
    columns = torch.arange(num_columns, device=device).unsqueeze(0)  # (1, M)
    return columns == rows + first  # (B, M)


def pooled_mean(values: Tensor, batch_scope: BatchScope) -> Tensor | None:
    r"""The mean of per-anchor (or per-pair) losses over the local or the global batch.

    Locally (or with one process): ``values.mean()``. Globally: :math:`\frac{N}{n}\sum_i v_i`
    with n the number of values on all processes, so DDP's gradient average yields the
    gradient of the global mean (see the module docstring). Every process must call it at
    the same step (it is a collective in the global scope).

    Args:
        values: (n_r,) this process's values (may be empty).
        batch_scope: ``"global"`` or ``"local"``.

    Returns:
        The scalar, or ``None`` when there is no value at all (locally, or on every process).
    """
    check_batch_scope(batch_scope)
    if batch_scope == "local" or not is_distributed():
        return values.mean() if values.numel() else None
    count = sum_over_processes(torch.tensor(float(values.numel()), dtype=torch.float64))
    if float(count) == 0:
        return None
    return values.sum() * (process_count() / float(count))
