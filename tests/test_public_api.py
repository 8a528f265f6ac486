"""The public names the README and the book promise exist where they say, with the documented call shapes."""

from __future__ import annotations

import inspect

import numpy as np
import torch

import reid_core
from reid_core import alignment, data, evaluation, losses, models, samplers


def test_design_names_exist() -> None:
    for name in ("Market1501", "DukeMTMCreID", "CUHK03", "MSMT17", "render_synthreid"):
        assert hasattr(data, name), f"reid_core.data.{name}"
    for name in ("RandomIdentitySampler", "GraphSampler"):
        assert hasattr(samplers, name), f"reid_core.samplers.{name}"
    for name in ("ContrastiveLoss", "TripletLoss", "L2Softmax", "SphereFace", "CosFace", "ArcFace", "AdaCos"):
        assert hasattr(losses, name), f"reid_core.losses.{name}"
    for name in ("evaluate_rank", "re_ranking", "re_ranking_from_features"):
        assert hasattr(evaluation, name), f"reid_core.evaluation.{name}"
    assert hasattr(alignment, "aligned_distance")
    assert hasattr(models, "build_backbone") and reid_core.__version__


def test_documented_signatures() -> None:
    sig = inspect.signature(evaluation.evaluate_rank)
    assert list(sig.parameters)[:5] == ["distmat", "q_pids", "g_pids", "q_camids", "g_camids"]
    assert sig.parameters["max_rank"].default == 50
    rr = inspect.signature(evaluation.re_ranking).parameters
    assert (rr["k1"].default, rr["k2"].default, rr["lambda_value"].default) == (20, 6, 0.3)
    gs = inspect.signature(samplers.GraphSampler).parameters
    assert (gs["batch_size"].default, gs["num_instances"].default) == (64, 2)
    assert hasattr(samplers.GraphSampler, "update_graph")
    assert inspect.signature(losses.TripletLoss).parameters["margin"].default == 0.3
    cuhk = inspect.signature(data.CUHK03).parameters
    assert cuhk["split"].default == "labeled"


def test_heads_follow_the_shared_api() -> None:
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    for head in (
        losses.L2Softmax(8, 3),
        losses.SphereFace(8, 3),
        losses.CosFace(8, 3),
        losses.ArcFace(8, 3),
        losses.AdaCos(8, 3),
    ):
        assert head.weight.shape == (3, 8)
        assert head(emb, labels).shape == (6, 3) and head(emb, None).shape == (6, 3)


def test_evaluation_accepts_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    dist = rng.random((4, 10))
    args = (np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4, 1, 2, 3, 4, 0, 0]), np.zeros(4, int), np.ones(10, int))
    cmc_np, map_np = evaluation.evaluate_rank(dist, *args, max_rank=5)
    cmc_t, map_t = evaluation.evaluate_rank(torch.from_numpy(dist), *[torch.from_numpy(a) for a in args], max_rank=5)
    assert isinstance(cmc_np, np.ndarray) and len(cmc_np) == 5 and 0 <= map_np <= 1
    np.testing.assert_allclose(cmc_np, cmc_t) and np.testing.assert_allclose(map_np, map_t)
