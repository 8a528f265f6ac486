"""Export a model's embedding to ONNX, check it with onnxruntime, and time both on the CPU.

The exported graph computes exactly what ``reid extract`` computes from a normalised image
batch: the model card's embedding field, averaged with the mirrored image's when the card says
``flip``, L2-normalised when it says ``normalize``. Its input is ``images`` (B, 3, H, W) float32,
already resized to the card's size and normalised with its mean and std (both are written into
the file's metadata); its output is ``embedding`` (B, D). The batch axis is dynamic.

A file is only kept if onnxruntime reproduces PyTorch on two batch sizes within a tolerance
(max absolute difference, default 1e-4); it is written to a temporary name and renamed after
the check.

Exported with ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export`` based exporter,
which needs ``onnxscript``). Requires the ``onnx`` extra: ``pip install 'reid_core[onnx]'``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.engine.model_card import LoadedModel

__all__ = ["EmbeddingGraph", "OnnxExportReport", "OnnxMismatchError", "export_onnx", "require_optional"]


class OnnxMismatchError(RuntimeError):
    """onnxruntime's output differs from PyTorch's by more than the tolerance."""


def require_optional(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or raise ImportError saying which extra installs it."""
    try:
        return import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is not installed; it comes with the '{extra}' extra: pip install 'reid_core[{extra}]'"
        ) from err


class EmbeddingGraph(nn.Module):
    """Normalised images -> the card's embedding, as :func:`reid_core.engine.features.extract_features` gives it.

    Args:
        model: a re-ID model returning :class:`~reid_core.models.ReIDOutput`.
        field: the embedding field; it must be (B, D).
        flip: average with the horizontally mirrored image.
        normalize: L2-normalise the result.
    """

    def __init__(self, model: nn.Module, field: str = "feat", flip: bool = True, normalize: bool = False) -> None:
        super().__init__()
        self.model, self.field, self.flip, self.normalize = model, field, flip, normalize

    def _embed(self, images: Tensor) -> Tensor:
        value = getattr(self.model(images), self.field)
        if value is None or value.dim() != 2:
            raise ValueError(
                f"the embedding field {self.field!r} must be a (B, D) tensor, got "
                f"{None if value is None else tuple(value.shape)}"
            )
        return value  # (B, D)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) normalised -> (B, D) embedding."""
        out = self._embed(images)  # (B, D)
        if self.flip:
            out = (out + self._embed(torch.flip(images, dims=[3]))) / 2  # (B, D)
        if self.normalize:
            out = F.normalize(out, dim=1)
        return out


@dataclass
class OnnxExportReport:
    """What :func:`export_onnx` wrote and measured.

    Attributes:
        path: the ONNX file.
        opset: its opset version.
        embedding_dim: D.
        max_abs_diff: batch size -> max |onnxruntime - PyTorch| over that batch.
        tolerance: the bound the differences had to meet.
        latency_batch: batch size of the timing runs.
        torch_ms_per_image, onnx_ms_per_image: median CPU time per image.
        threads: CPU threads both runtimes used.
    """

    path: Path
    opset: int
    embedding_dim: int
    max_abs_diff: dict[int, float]
    tolerance: float
    latency_batch: int
    torch_ms_per_image: float
    onnx_ms_per_image: float
    threads: int

    def format(self) -> str:
        diffs = ", ".join(f"batch {b}: {d:.2e}" for b, d in self.max_abs_diff.items())
        return (
            f"wrote {self.path} (opset {self.opset}, input images (batch, 3, H, W), output embedding "
            f"(batch, {self.embedding_dim}), dynamic batch axis)\n"
            f"onnxruntime vs PyTorch, max |diff|: {diffs} (tolerance {self.tolerance:.0e})\n"
            f"CPU latency per image (batch {self.latency_batch}, {self.threads} thread(s), median): "
            f"PyTorch {self.torch_ms_per_image:.2f} ms, onnxruntime {self.onnx_ms_per_image:.2f} ms "
            f"(ratio {self.torch_ms_per_image / self.onnx_ms_per_image:.2f})"
        )


def _median_seconds(runs: Sequence[Callable[[], object]], repeats: int, warmup: int = 2) -> list[float]:
    """Median wall time of each callable; the runs alternate, so that a load that comes and goes
    on a shared machine slows them alike."""
    for _ in range(warmup):
        for run in runs:
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, spent in zip(runs, times):
            start = time.perf_counter()
            run()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def export_onnx(
    loaded: LoadedModel,
    path: str | os.PathLike[str],
    *,
    opset: int = 18,
    check_batch_sizes: Sequence[int] = (2, 5),
    tolerance: float = 1e-4,
    latency_batch: int = 8,
    latency_repeats: int = 10,
    threads: int | None = None,
    seed: int = 0,
) -> OnnxExportReport:
    """Export ``loaded``'s embedding to ``path`` and check it (see the module docstring).

    Args:
        loaded: from :func:`reid_core.engine.model_card.load_model`.
        path: the ``.onnx`` file to write.
        opset: ONNX opset version.
        check_batch_sizes: batch sizes compared with PyTorch (at least two, to exercise the dynamic axis).
        tolerance: largest accepted max |difference|.
        latency_batch: batch size for the latency measurement.
        latency_repeats: timed runs per runtime (after two warm-up runs), alternating between the two.
        threads: CPU threads of both runtimes while timing (default: PyTorch's current setting).
        seed: seed of the random check inputs (normal, the scale of normalised images).

    Returns:
        An :class:`OnnxExportReport`.

    Raises:
        ImportError: onnx / onnxruntime / onnxscript missing (names the extra).
        OnnxMismatchError: the outputs differ by more than ``tolerance`` (no file is left).
    """
    onnx = require_optional("onnx", "onnx")
    ort = require_optional("onnxruntime", "onnx")
    require_optional("onnxscript", "onnx")  # the dynamo exporter's ONNX builder
    if len(set(check_batch_sizes)) < 2 or min(check_batch_sizes) < 1:
        raise ValueError(f"check_batch_sizes needs two distinct sizes >= 1, got {tuple(check_batch_sizes)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    card = loaded.card
    graph = EmbeddingGraph(loaded.model, card.embedding_field, card.flip, card.normalize).cpu().eval()
    generator = torch.Generator().manual_seed(seed)

    def images(batch: int) -> Tensor:
        return torch.randn(batch, 3, card.height, card.width, generator=generator)  # (B, 3, H, W)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            torch.onnx.export(
                graph,
                (images(2),),
                str(tmp),
                input_names=["images"],
                output_names=["embedding"],
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        proto = onnx.load(str(tmp))
        metadata = {
            "reid_core.model_card": json.dumps({k: v for k, v in card.to_dict().items() if k != "calibration"}),
            "reid_core.input": f"RGB images resized to {card.height}x{card.width}, scaled to [0, 1], "
            f"normalised with mean {list(card.mean)} and std {list(card.std)}",
        }
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

        threads = threads or torch.get_num_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        diffs: dict[int, float] = {}
        embedding_dim = 0
        with torch.no_grad():
            for batch in check_batch_sizes:
                x = images(batch)
                expected = graph(x).numpy()  # (B, D)
                got = session.run(["embedding"], {"images": x.numpy()})[0]  # (B, D)
                if got.shape != expected.shape:
                    raise OnnxMismatchError(
                        f"batch {batch}: onnxruntime gives shape {got.shape}, PyTorch {expected.shape}"
                    )
                diffs[batch] = float(np.abs(got - expected).max())
                embedding_dim = expected.shape[1]
            worst = max(diffs.values())
            if not worst <= tolerance:
                raise OnnxMismatchError(
                    f"onnxruntime differs from PyTorch by up to {worst:.3e} (> {tolerance:.0e}) "
                    f"on batches {diffs}; no file written to {path}"
                )
            x = images(latency_batch)
            x_np = x.numpy()
            saved_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                torch_s, onnx_s = _median_seconds(
                    [lambda: graph(x), lambda: session.run(["embedding"], {"images": x_np})], latency_repeats
                )
            finally:
                torch.set_num_threads(saved_threads)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return OnnxExportReport(
        path=path,
        opset=opset,
        embedding_dim=embedding_dim,
        max_abs_diff=diffs,
        tolerance=tolerance,
        latency_batch=latency_batch,
        torch_ms_per_image=1000 * torch_s / latency_batch,
        onnx_ms_per_image=1000 * onnx_s / latency_batch,
        threads=threads,
    )
