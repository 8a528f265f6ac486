"""Pairwise distances between feature sets: differentiable for losses, chunked for evaluation.

Euclidean distance through the expansion ``|x|^2 + |y|^2 - 2 x.y`` turns an N x M x D
problem into one matrix product. Its square root has an infinite derivative at 0 (a pair of
identical features, e.g. an anchor with itself), so the gradient path clamps at a small
epsilon; the values are exact elsewhere.

Chapters: 01 (evaluation), 02 (contrastive/triplet losses), 03 (global distance).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "pairwise_distance",
    "compute_distance_matrix",
    "make_distance_fn",
    "available_memory_bytes",
    "check_memory",
    "gallery_matmul",
    "matmul_uses_onednn",
    "set_cpu_matmul",
    "METRICS",
]

Metric = Literal["euclidean", "sqeuclidean", "cosine"]
METRICS = ("euclidean", "sqeuclidean", "cosine")
_EPS = 1e-12
CpuMatmul = Literal["auto", "onednn", "blas"]
_CPU_MATMULS = ("auto", "onednn", "blas")
# Which library multiplies float32 blocks on the CPU (see gallery_matmul), and whether
# oneDNN passed its one-time check on this machine (None: not checked yet).
_cpu_matmul: str = "auto"
_onednn_checked: bool | None = None


def pairwise_distance(x: Tensor, y: Tensor | None = None, metric: Metric = "euclidean") -> Tensor:
    """All-pairs distance between the rows of ``x`` and ``y`` (differentiable).

    Args:
        x: (N, D) features.
        y: (M, D) features; ``None`` means ``x`` (then the diagonal is exactly 0).
        metric: ``"euclidean"`` (``||x - y||``), ``"sqeuclidean"`` (``||x - y||^2``) or
            ``"cosine"`` (``1 - cos(x, y)``).

    Returns:
        (N, M) distances, in the dtype of ``x``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    same = y is None
    y = x if y is None else y
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected x (N, D) and y (M, D) with the same D, got {tuple(x.shape)} and {tuple(y.shape)}")
    if metric == "cosine":
        return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T  # (N, M)
    sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0) - 2.0 * (x @ y.T)  # (N, M)
    sq = sq.clamp_min(0.0)
    if same:
        # The expansion leaves rounding noise on the diagonal; the true value is 0.
        sq = sq * (1.0 - torch.eye(sq.shape[0], dtype=sq.dtype, device=sq.device))
    if metric == "sqeuclidean":
        return sq
    return sq.clamp_min(_EPS).sqrt() * (sq > 0)


@torch.no_grad()
def compute_distance_matrix(qf: Tensor, gf: Tensor, metric: Metric = "euclidean", chunk_size: int = 4096) -> Tensor:
    """Query-by-gallery distances, computed ``chunk_size`` queries at a time.

    Peak extra memory is one (chunk_size, M) block besides the (N, M) result.

    Args:
        qf: (N, D) query features.
        gf: (M, D) gallery features.
        metric: see :func:`pairwise_distance`.
        chunk_size: queries per block.

    Returns:
        (N, M) float32 distances on the device of ``qf``.

    Raises:
        MemoryError: when the result and one block's temporaries will not fit (the message
            names the chunked and top-k alternatives).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    check_memory(
        # the float32 result, plus ~6 float32 temporaries of one block's expansion
        4 * qf.shape[0] * gf.shape[0] + 4 * 6 * min(chunk_size, qf.shape[0]) * gf.shape[0],
        qf.device,
        what=f"compute_distance_matrix: a {qf.shape[0]} x {gf.shape[0]} float32 matrix",
        advice="evaluate ranks without the full matrix with "
        "reid_core.evaluation.rank.evaluate_features(qf, gf, ..., chunk_size=...), or search a "
        "top-k with reid_core.evaluation.retrieval",
    )
    out = torch.empty(qf.shape[0], gf.shape[0], dtype=torch.float32, device=qf.device)
    gf = gf.to(qf.device)
    for start in range(0, qf.shape[0], chunk_size):
        block = qf[start : start + chunk_size]
        out[start : start + block.shape[0]] = pairwise_distance(block, gf, metric).float()
    return out


def set_cpu_matmul(backend: CpuMatmul) -> str:
    """Choose the library behind :func:`gallery_matmul` for float32 CPU tensors.

    ``"auto"`` (the default) uses oneDNN when it is built into torch and passes a one-time
    check against the BLAS result, else BLAS; ``"onednn"`` insists on oneDNN (``RuntimeError``
    if it is missing or fails the check); ``"blas"`` always uses ``torch.addmm`` (MKL or
    OpenBLAS). Both give float32 products; they differ only in rounding.

    Args:
        backend: ``"auto"``, ``"onednn"`` or ``"blas"``.

    Returns:
        The previous setting, so a caller can restore it.
    """
    global _cpu_matmul
    if backend not in _CPU_MATMULS:
        raise ValueError(f"backend must be one of {_CPU_MATMULS}, got {backend!r}")
    if backend == "onednn" and not _onednn_usable():
        raise RuntimeError("oneDNN matmul is not available in this torch build (or failed its check); use 'blas'")
    previous, _cpu_matmul = _cpu_matmul, backend
    return previous


def _onednn_usable() -> bool:
    """Whether torch's oneDNN linear kernel exists and agrees with BLAS (checked once)."""
    global _onednn_checked
    if _onednn_checked is None:
        _onednn_checked = False
        op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
        if op is not None and torch.backends.mkldnn.is_available():
            try:
                gen = torch.Generator().manual_seed(0)
                x, y, b = (torch.randn(n, 96, generator=gen) for n in (33, 70, 1))
                got = op(x, y, b[0, :70].contiguous(), "none", [], "")
                want = torch.addmm(b[0, :70], x, y.T)
                _onednn_checked = bool(got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-4))
            except (RuntimeError, TypeError, ValueError, NotImplementedError):
                _onednn_checked = False  # a torch whose private kernel changed: use BLAS
    return _onednn_checked


def matmul_uses_onednn(x: Tensor) -> bool:
    """Whether :func:`gallery_matmul` on tensors like ``x`` goes through oneDNN (no ``out=``)."""
    return _cpu_matmul != "blas" and x.device.type == "cpu" and x.dtype == torch.float32 and _onednn_usable()


def gallery_matmul(x: Tensor, gallery: Tensor, bias: Tensor, alpha: float = 1.0, out: Tensor | None = None) -> Tensor:
    """``bias + alpha * x @ gallery.T``, the one product behind every exact search.

    On the CPU in float32 this goes through oneDNN's linear kernel when it is usable (see
    :func:`set_cpu_matmul`): on the AMD EPYC (AVX-512) machine of this project's benches it
    multiplies (512 x 2048) by (2048 x 82,161) at 320 GFLOP/s on 2 cores, where ``addmm``
    (MKL, torch's BLAS there) reaches 130 (``bench/scale.py``). Elsewhere (CUDA, float64, no
    oneDNN) it is ``torch.addmm``.

    Args:
        x: (B, D) rows.
        gallery: (M, D) rows, contiguous.
        bias: (M,) added to every row of the product.
        alpha: scale of the product (a power of two keeps it exact, e.g. -2).
        out: optional (B, M) buffer for the BLAS path to write into (saves the page faults of
            a fresh allocation); oneDNN's kernel cannot write into a given buffer, so on that
            path the result is a new tensor. Use the returned tensor either way.

    Returns:
        (B, M) tensor.
    """
    if matmul_uses_onednn(x) and gallery.dtype == bias.dtype == torch.float32:
        scaled = x * alpha if alpha != 1.0 else x.contiguous()  # (B, D)
        return torch.ops.mkldnn._linear_pointwise(scaled, gallery.contiguous(), bias.contiguous(), "none", [], "")
    if out is not None:
        return torch.addmm(bias.unsqueeze(0), x, gallery.T, alpha=alpha, out=out)
    return torch.addmm(bias.unsqueeze(0), x, gallery.T, alpha=alpha)


def make_distance_fn(qf: Tensor, gf: Tensor, metric: Metric = "euclidean") -> Callable[[int, int], Tensor]:
    """A function giving query-by-gallery distance blocks on demand, for chunked evaluation.

    ``fn(start, end)`` returns the distances of ``qf[start:end]`` to every row of ``gf`` as a
    float32 ``(end - start, M)`` block, with the values of :func:`pairwise_distance`, so a
    consumer that walks the queries in blocks never holds more than one block: the peak
    memory is bounded by the block, not by ``N x M``. The gallery's squared norms (or its
    normalised copy, for cosine) are computed once, not per block, and each block is one
    :func:`gallery_matmul` (oneDNN on the CPU) plus in-place updates.

    Args:
        qf: (N, D) query features.
        gf: (M, D) gallery features (moved to the device of ``qf``).
        metric: see :func:`pairwise_distance`.

    Returns:
        A callable ``(start, end) -> (end - start, M)`` float32 tensor on the device of ``qf``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if qf.dim() != 2 or gf.dim() != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"expected qf (N, D) and gf (M, D) with the same D, got {tuple(qf.shape)} and {tuple(gf.shape)}"
        )
    with torch.no_grad():
        gf = gf.to(device=qf.device, dtype=qf.dtype).contiguous()
        if metric == "cosine":
            gf = F.normalize(gf, dim=1)  # (M, D)
            bias = torch.ones(gf.shape[0], dtype=gf.dtype, device=gf.device)  # (M,): the 1 of 1 - cos
        else:
            bias = (gf * gf).sum(1)  # (M,): |y|^2, once for all blocks

    @torch.no_grad()
    def distance_block(start: int, end: int) -> Tensor:
        if not 0 <= start < end <= qf.shape[0]:
            raise ValueError(f"expected 0 <= start < end <= {qf.shape[0]}, got start={start}, end={end}")
        q = qf[start:end]  # (B, D)
        if metric == "cosine":
            # 1 - cos(x, y) = 1 - x_hat . y_hat
            return gallery_matmul(F.normalize(q, dim=1), gf, bias, alpha=-1.0).float()  # (B, M)
        sq = gallery_matmul(q, gf, bias, alpha=-2.0)  # (B, M): |y|^2 - 2 x.y
        sq.add_((q * q).sum(1, keepdim=True)).clamp_min_(0.0)  # (B, M): ||x - y||^2
        if metric == "euclidean":
            sq.sqrt_()
        return sq.float()

    return distance_block


def available_memory_bytes(device: torch.device | str = "cpu") -> int:
    """Memory that a new allocation on ``device`` can use now, in bytes.

    On the CPU this is ``MemAvailable`` from ``/proc/meminfo`` (free memory plus the page cache
    the kernel can drop), falling back to ``os.sysconf`` free pages elsewhere. On CUDA it is the
    driver's free memory plus what PyTorch's caching allocator holds reserved but unused.

    Args:
        device: the device the allocation is for.

    Returns:
        Bytes available.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        # No way to ask (e.g. not Linux): do not block the work on a guess.
        return np.iinfo(np.int64).max


def check_memory(nbytes: int, device: torch.device | str, what: str, advice: str, limit: int | None = None) -> None:
    """Raise :class:`MemoryError` before allocating ``nbytes`` that will not fit on ``device``.

    Being refused with a message that names the size and a way out is better than being
    killed by the operating system half-way through an evaluation.

    Args:
        nbytes: the estimated peak bytes of the planned work.
        device: where it will be allocated.
        what: the work, named for the message (e.g. ``"evaluate_rank: 512 x 82161 block"``).
        advice: what to do instead (a smaller ``chunk_size``, another API).
        limit: the bytes allowed; ``None`` means :func:`available_memory_bytes` of ``device``.

    Raises:
        MemoryError: when ``nbytes`` exceeds the limit.
    """
    available = available_memory_bytes(device) if limit is None else limit
    if nbytes > available:
        raise MemoryError(
            f"{what} needs about {nbytes / 2**30:.2f} GiB on {torch.device(device)}, but only "
            f"{available / 2**30:.2f} GiB is available; {advice}"
        )
