"""The distance code's matrix product on both CPU libraries (oneDNN and BLAS), and what is
built on it: chunked evaluation straight from features and the re-ranking's distance blocks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from reid_core.evaluation import distance
from reid_core.evaluation.distance import (
    compute_distance_matrix,
    gallery_matmul,
    make_distance_fn,
    matmul_uses_onednn,
    pairwise_distance,
    set_cpu_matmul,
)
from reid_core.evaluation.rank import evaluate_features, evaluate_rank_detailed
from reid_core.evaluation.rerank.from_features import FeatureDistances

BACKENDS = [
    "blas",
    pytest.param(
        "onednn",
        marks=pytest.mark.skipif(not distance._onednn_usable(), reason="torch has no usable oneDNN linear kernel here"),
    ),
]


@pytest.fixture
def restore_backend() -> Iterator[None]:
    previous = set_cpu_matmul("auto")
    yield
    set_cpu_matmul(previous)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha", [1.0, -2.0, -1.0])
def test_gallery_matmul_is_bias_plus_scaled_product(backend: str, alpha: float, restore_backend: None) -> None:
    set_cpu_matmul(backend)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(0)
    x, gal, bias = (
        torch.randn(37, 50, generator=gen),
        torch.randn(81, 50, generator=gen),
        torch.randn(81, generator=gen),
    )
    got = gallery_matmul(x, gal, bias, alpha=alpha)
    expected = bias.double() + alpha * (x.double() @ gal.double().T)  # worked in float64
    assert got.shape == (37, 81) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-4)
    assert matmul_uses_onednn(x) == (backend == "onednn")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gallery_matmul_writes_into_out_on_the_blas_path(backend: str, restore_backend: None) -> None:
    set_cpu_matmul(backend)  # type: ignore[arg-type]
    x, gal, bias = torch.ones(3, 4), torch.full((5, 4), 2.0), torch.arange(5.0)
    buffer = torch.empty(3, 5)
    got = gallery_matmul(x, gal, bias, alpha=-2.0, out=buffer)
    torch.testing.assert_close(got, (torch.arange(5.0) - 16.0).expand(3, 5))  # 0..4 - 2 * (4 * 1 * 2)
    assert (got.data_ptr() == buffer.data_ptr()) == (backend == "blas")


def test_float64_and_non_float32_inputs_use_blas(restore_backend: None) -> None:
    x = torch.randn(4, 6, dtype=torch.float64)
    assert not matmul_uses_onednn(x)
    got = gallery_matmul(x, x, torch.zeros(4, dtype=torch.float64))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, x @ x.T)


def test_set_cpu_matmul_rejects_unknown_names_and_returns_the_previous_setting(restore_backend: None) -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        set_cpu_matmul("mkl")  # type: ignore[arg-type]
    assert set_cpu_matmul("blas") == "auto"
    assert set_cpu_matmul("auto") == "blas"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_distance_fn_equals_pairwise_distance(backend: str, metric: str, restore_backend: None) -> None:
    set_cpu_matmul(backend)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(1)
    qf, gf = torch.randn(30, 24, generator=gen), torch.randn(70, 24, generator=gen)
    fn = make_distance_fn(qf, gf, metric)  # type: ignore[arg-type]
    expected = pairwise_distance(qf.double(), gf.double(), metric)  # type: ignore[arg-type]
    got = torch.cat([fn(0, 13), fn(13, 30)])
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_from_features_is_exact_with_ties(backend: str, restore_backend: None) -> None:
    """Small integer features: every distance is exact in float32 whichever library multiplies,
    so the many tied distances must rank exactly as the full matrix ranks them."""
    set_cpu_matmul(backend)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(2)
    qf, gf = torch.randint(0, 3, (40, 6), generator=gen).float(), torch.randint(0, 3, (300, 6), generator=gen).float()
    rng = np.random.default_rng(2)
    q_pids, g_pids = rng.integers(1, 9, 40), rng.integers(-1, 9, 300)
    q_camids, g_camids = rng.integers(0, 3, 40), rng.integers(0, 3, 300)
    full = compute_distance_matrix(qf.double(), gf.double(), "sqeuclidean")  # exact integers
    expected = evaluate_rank_detailed(full, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    cmc, mean_ap = evaluate_features(
        qf, gf, q_pids, g_pids, q_camids, g_camids, "sqeuclidean", max_rank=20, chunk_size=7
    )
    np.testing.assert_array_equal(cmc, expected.cmc)
    assert mean_ap == pytest.approx(expected.mAP, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_rerank_distance_blocks_on_both_libraries(backend: str, metric: str, restore_backend: None) -> None:
    set_cpu_matmul(backend)  # type: ignore[arg-type]
    feats = torch.randn(50, 12, generator=torch.Generator().manual_seed(3))
    blocks = FeatureDistances(feats, metric)  # type: ignore[arg-type]
    expected = pairwise_distance(feats.double(), metric=metric) ** 2  # type: ignore[arg-type]
    torch.testing.assert_close(blocks.block(0, 50, 0, 50).double(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(blocks.block(10, 20, 25, 50).double(), expected[10:20, 25:50], rtol=1e-5, atol=1e-4)
    assert torch.all(blocks.block(5, 9, 5, 9).diagonal() == 0)  # an image's distance to itself
