"""ONNX export: dynamic batch axis, onnxruntime reproduces PyTorch, metadata, and a refused mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'reid_core[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

from reid_fixtures import HEIGHT, WIDTH, tiny_card  # noqa: E402

from reid_core.engine.model_card import load_model, save_model  # noqa: E402
from reid_core.export import EmbeddingGraph, OnnxMismatchError, export_onnx  # noqa: E402
from reid_core.models import build_model  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model = build_model("baseline", 4, backbone="resnet10", last_stride=1)
    path = save_model(model, tiny_card(4, normalize=True, metric="cosine"), folder / "model.pt")
    loaded = load_model(path)
    report = export_onnx(loaded, folder / "model.onnx", latency_repeats=3)
    return loaded, report


def test_batch_axis_is_dynamic_and_outputs_match(exported) -> None:  # noqa: ANN001
    loaded, report = exported
    proto = onnx.load(str(report.path))
    (images,) = proto.graph.input
    dims = images.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
    assert [d.dim_value for d in dims[1:]] == [3, HEIGHT, WIDTH]
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    graph = EmbeddingGraph(loaded.model, "feat", flip=True, normalize=True).eval()
    for batch in (1, 7):  # sizes the export never saw
        x = torch.randn(batch, 3, HEIGHT, WIDTH)
        got = session.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            # reference by hand: flip-averaged BNNeck feature, L2-normalised
            feat = (loaded.model(x).feat + loaded.model(torch.flip(x, dims=[3])).feat) / 2
            expected = torch.nn.functional.normalize(feat, dim=1).numpy()
            assert np.allclose(graph(x).numpy(), expected, atol=1e-6)
        assert got.shape == (batch, 512)
        assert np.abs(got - expected).max() <= 1e-4


def test_report_and_metadata(exported) -> None:  # noqa: ANN001
    loaded, report = exported
    assert set(report.max_abs_diff) == {2, 5} and max(report.max_abs_diff.values()) <= 1e-4
    assert report.torch_ms_per_image > 0 and report.onnx_ms_per_image > 0 and report.embedding_dim == 512
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    card = json.loads(props["reid_core.model_card"])
    assert card["height"] == HEIGHT and card["metric"] == "cosine" and card["normalize"] is True
    assert "normalised with mean" in props["reid_core.input"]
    assert "PyTorch" in report.format() and "onnxruntime" in report.format()


@pytest.mark.slow  # a second export (about 10 s)
def test_a_mismatch_leaves_no_file(exported, tmp_path: Path) -> None:  # noqa: ANN001
    loaded, _ = exported
    target = tmp_path / "bad.onnx"
    with pytest.raises(OnnxMismatchError, match="differs from PyTorch"):
        export_onnx(loaded, target, tolerance=1e-12, latency_repeats=1)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="two distinct"):
        export_onnx(loaded, target, check_batch_sizes=(3, 3))
