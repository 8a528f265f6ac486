"""Tests for the AlignedReID chapter's code: reid_core.chapters.alignedreid, with the parts it moved into
concept packages (reid_core.models.normalized_local, reid_core.alignment.unaligned).

References are written independently: distances cell by cell from their definitions, rank-1
by sorting each query's filtered gallery, the example pair by hand from a small table.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.patches import ConnectionPatch
from torch import Tensor, nn

from reid_core.alignment import aligned_distance
from reid_core.alignment.unaligned import unaligned_local_distance
from reid_core.chapters.alignedreid.experiment import (
    AblationRow,
    DistanceBlocks,
    ablation_markdown,
    ablation_rows,
    box_shifts,
    cross_camera_pair,
    distance_blocks,
    evaluate_test_distances,
    expected_path_offset,
    extract_global_local,
    mean_path_offsets,
    misaligned_pair,
)
from reid_core.chapters.alignedreid.figures import plot_ablation_bars, plot_alignment, plot_path_offsets
from reid_core.engine.features import Features
from reid_core.evaluation.rerank.k_reciprocal import re_ranking
from reid_core.models.normalized_local import NormalizedLocal
from reid_core.models.outputs import ReIDOutput


def _stripes(n: int, s: int = 4, d: int = 5, seed: int = 0) -> Tensor:
    return torch.randn(n, s, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------------- row-by-row distance
def test_unaligned_local_distance_matches_definition() -> None:
    x, y = _stripes(3, seed=1), _stripes(4, seed=2)
    got = unaligned_local_distance(x, y)
    for a in range(3):
        for b in range(4):
            ref = sum(math.tanh(float((x[a, i] - y[b, i]).norm()) / 2) for i in range(x.shape[1]))
            assert got[a, b].item() == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_alignment_recovers_a_shifted_copy_the_row_by_row_distance_does_not() -> None:
    # y shows x's body one stripe lower (its first stripe is new background): the aligned path
    # can follow the shift, the row-by-row comparison cannot.
    x = _stripes(1, s=8, d=16, seed=3) * 3
    y = torch.cat([torch.zeros(1, 1, 16, dtype=x.dtype), x[:, :-1]], dim=1)  # (1, 8, 16)
    other = _stripes(1, s=8, d=16, seed=4) * 3
    assert aligned_distance(x, y).item() < aligned_distance(x, other).item()
    assert unaligned_local_distance(x, y).item() > 0.8 * unaligned_local_distance(x, other).item()


def test_unaligned_local_distance_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same S"):
        unaligned_local_distance(_stripes(2, s=4), _stripes(2, s=5))


# ------------------------------------------------------------------------------ distance blocks
def _features(x: Tensor, pids: list[int], cams: list[int]) -> Features:
    return Features(x.float(), np.array(pids), np.array(cams))


def test_distance_blocks_match_their_definitions() -> None:
    gq, gg = torch.randn(3, 6), torch.randn(5, 6)
    lq, lg = _stripes(3).float(), _stripes(5, seed=9).float()
    q, g = _features(gq, [1, 2, 3], [0, 0, 0]), _features(gg, [1, 2, 3, 4, 5], [1] * 5)
    glob = distance_blocks("global", q, g, with_rerank_blocks=True)
    brute = torch.tensor([[float((a - b).norm()) for b in gg] for a in gq])
    torch.testing.assert_close(glob.q_g, brute, atol=1e-4, rtol=1e-4)
    assert glob.q_q.shape == (3, 3) and glob.g_g.shape == (5, 5)
    loc = distance_blocks("local", _features(lq, [1, 2, 3], [0] * 3), _features(lg, [1, 2, 3, 4, 5], [1] * 5))
    torch.testing.assert_close(loc.q_g, aligned_distance(lq, lg))
    assert loc.q_q is None and loc.g_g is None
    with pytest.raises(ValueError, match="kind must be one of"):
        distance_blocks("global+local", q, g)
    with pytest.raises(ValueError, match="3 dims"):
        distance_blocks("local", q, g)


def test_distance_blocks_add_blockwise() -> None:
    a = DistanceBlocks(torch.ones(2, 3), torch.ones(2, 2), torch.ones(3, 3))
    b = DistanceBlocks(torch.full((2, 3), 2.0), torch.full((2, 2), 2.0), torch.full((3, 3), 2.0))
    s = a + b
    assert torch.all(s.q_g == 3) and torch.all(s.q_q == 3) and torch.all(s.g_g == 3)
    assert (a + DistanceBlocks(torch.ones(2, 3))).q_q is None


def _brute_rank1(dist: Tensor, qp: np.ndarray, gp: np.ndarray, qc: np.ndarray, gc: np.ndarray) -> float:
    """Share of queries whose nearest valid gallery image (Market rule) has their identity."""
    hits, counted = 0, 0
    for i in range(dist.shape[0]):
        valid = [j for j in range(dist.shape[1]) if not (gp[j] == qp[i] and gc[j] == qc[i]) and gp[j] != -1]
        if not any(gp[j] == qp[i] for j in valid):
            continue
        best = min(valid, key=lambda j: (float(dist[i, j]), j))
        hits += int(gp[best] == qp[i])
        counted += 1
    return 100.0 * hits / counted


def test_evaluate_test_distances_sums_global_and_local_and_reranks_each_variant() -> None:
    torch.manual_seed(0)
    n_ids = 12
    q_pids = np.arange(1, n_ids + 1)
    g_pids = np.concatenate([q_pids, q_pids, q_pids])
    centres_g, centres_l = torch.randn(n_ids, 8), torch.randn(n_ids, 4, 6)

    def make(pids: np.ndarray, noise: float) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(pids - 1)
        return (
            centres_g[idx] + noise * torch.randn(len(pids), 8),
            centres_l[idx] + noise * torch.randn(len(pids), 4, 6),
        )

    qg_, ql_ = make(q_pids, 0.9)
    gg_, gl_ = make(g_pids, 0.9)
    q_cams, g_cams = np.zeros(n_ids, dtype=int), np.ones(3 * n_ids, dtype=int)
    qG, gG = _features(qg_, list(q_pids), list(q_cams)), _features(gg_, list(g_pids), list(g_cams))
    qL, gL = _features(ql_, list(q_pids), list(q_cams)), _features(gl_, list(g_pids), list(g_cams))
    out = evaluate_test_distances(
        qG, gG, qL, gL, distances=("global", "global+local", "local (row by row)"), rerank=(False, True), k1=6, k2=2
    )
    assert set(out) == {(d, r) for d in ("global", "global+local", "local (row by row)") for r in (False, True)}
    # plain sum, checked against distances computed here cell by cell
    d_g = torch.cdist(qg_.double(), gg_.double())
    d_l = aligned_distance(ql_.double(), gl_.double())
    summed = d_g + d_l
    torch.testing.assert_close(out[("global+local", False)].distmat.double(), summed, atol=1e-3, rtol=1e-4)
    assert out[("global+local", False)].metrics["rank1"] == pytest.approx(
        _brute_rank1(summed, q_pids, g_pids, q_cams, g_cams)
    )
    # re-ranking uses the variant's own three blocks
    d_gq = torch.cdist(qg_, qg_) + aligned_distance(ql_, ql_)
    d_gg = torch.cdist(gg_, gg_) + aligned_distance(gl_, gl_)
    rr = torch.as_tensor(re_ranking(summed.float(), d_gq, d_gg, k1=6, k2=2, progress=False))
    torch.testing.assert_close(out[("global+local", True)].distmat, rr, atol=1e-4, rtol=1e-4)
    row = out[("local (row by row)", False)]
    torch.testing.assert_close(row.distmat, unaligned_local_distance(ql_, gl_), atol=1e-5, rtol=1e-5)


def test_evaluate_test_distances_checks_its_inputs() -> None:
    q = _features(torch.randn(2, 4), [1, 2], [0, 0])
    g = _features(torch.randn(4, 4), [1, 2, 1, 2], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="unknown test distances"):
        evaluate_test_distances(q, g, distances=("cosine",))
    with pytest.raises(ValueError, match="need query_local"):
        evaluate_test_distances(q, g, distances=("global+local",))
    only_global = evaluate_test_distances(q, g, distances=("global",), rerank=(False,))
    assert list(only_global) == [("global", False)]


# ------------------------------------------------------------------------------- extraction
class _Tiny(nn.Module):
    """A 'model' with known outputs: global = mean colour per channel, stripes = row means."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> ReIDOutput:
        g = x.mean(dim=(2, 3)) * self.scale + x[:, 0, 0, 0:1]  # (B, 3) + a left-column term (flip-sensitive)
        rows = x.mean(dim=3).transpose(1, 2)  # (B, H, 3)
        left = x[:, 0, :, 0:1]  # (B, H, 1) the left column of channel 0: changes under a flip
        return ReIDOutput(feat=g, local=rows + left)  # (B, H, 3)


def test_extract_global_local_one_pass_with_flip_average() -> None:
    torch.manual_seed(0)
    images = torch.randn(5, 3, 4, 3)
    loader = [
        (images[:3], torch.tensor([1, 1, 2]), torch.tensor([0, 1, 0])),
        (images[3:], torch.tensor([2, 3]), torch.tensor([1, 0])),
    ]
    model = _Tiny().train()
    glob, loc = extract_global_local(model, loader, device="cpu", flip=False, progress=False)
    ref = model(images)
    torch.testing.assert_close(glob.features, ref.feat.detach())
    torch.testing.assert_close(loc.features, ref.local.detach())
    assert glob.pids.tolist() == [1, 1, 2, 2, 3] and loc.camids.tolist() == [0, 1, 0, 1, 0]
    assert model.training  # mode restored
    glob_f, loc_f = extract_global_local(model, loader, device="cpu", flip=True, progress=False)
    mirrored = model(torch.flip(images, dims=[3]))
    torch.testing.assert_close(glob_f.features, ((ref.feat + mirrored.feat) / 2).detach())
    torch.testing.assert_close(loc_f.features, ((ref.local + mirrored.local) / 2).detach())


def test_extract_global_local_needs_both_fields() -> None:
    class GlobalOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x: Tensor) -> ReIDOutput:
            return ReIDOutput(feat=x.mean(dim=(2, 3)) * self.w)

    loader = [(torch.zeros(2, 3, 4, 4), torch.tensor([1, 2]), torch.tensor([0, 0]))]
    with pytest.raises(ValueError, match="local"):
        extract_global_local(GlobalOnly(), loader, progress=False)
    with pytest.raises(ValueError, match="no batches"):
        extract_global_local(GlobalOnly(), [], progress=False)


# ------------------------------------------------------------------------------------ tables
def _rows() -> list[AblationRow]:
    return [
        AblationRow("synth", "global", "global", False, 50.0, 30.0),
        AblationRow("synth", "global", "global", True, 55.0, 40.0),
        AblationRow("synth", "global + local", "global", False, 52.0, 31.0),
        AblationRow("synth", "global + local", "global+local", False, 54.5, 33.25),
        AblationRow("aligned", "global", "global", False, 60.0, 35.0),
    ]


def test_ablation_markdown_lays_out_one_line_per_model() -> None:
    text = ablation_markdown(_rows())
    lines = text.splitlines()
    assert lines[0] == "| world | training | global | global + RK | global+local |"
    assert "| synth | global | 50.0 / 30.0 | 55.0 / 40.0 | - |" in lines
    assert "| synth | global + local | 52.0 / 31.0 | - | 54.5 / 33.2 |" in lines
    assert "| aligned | global | 60.0 / 35.0 | - | - |" in lines
    assert len(lines) == 2 + 3


def test_ablation_rows_from_results() -> None:
    class R:
        metrics = {"rank1": 12.5, "mAP": 7.0}

    rows = ablation_rows("w", "t", {("global", True): R()})  # type: ignore[dict-item]
    assert rows == [AblationRow("w", "t", "global", True, 12.5, 7.0)]


# --------------------------------------------------------------------------- example pairs
def _write_table(root, rows: list[tuple]) -> None:
    lines = ["split,filename,pid,camera,view,shift_x,shift_y,scale,occluder,subject"]
    lines += [",".join(str(v) for v in r) for r in rows]
    (root / "synthreid_images.csv").write_text("\n".join(lines) + "\n")


def test_misaligned_pair_picks_the_largest_vertical_difference(tmp_path) -> None:
    _write_table(
        tmp_path,
        [
            ("train", "0001_a.jpg", 1, 1, "front", 0, -0.3, 1.0, "none", "identity"),  # train: ignored
            ("train", "0001_b.jpg", 1, 1, "front", 0, 0.3, 1.0, "none", "identity"),
            ("query", "0002_a.jpg", 2, 1, "front", 0, -0.05, 1.0, "none", "identity"),
            ("gallery", "0002_b.jpg", 2, 2, "front", 0, 0.05, 1.1, "none", "identity"),  # 0.1 + log 1.1 = 0.195
            ("gallery", "0002_c.jpg", 2, 3, "back", 0, 0.2, 1.0, "none", "identity"),  # other view
            ("query", "0003_a.jpg", 3, 1, "front", 0, 0.0, 1.0, "none", "identity"),
            ("gallery", "0003_b.jpg", 3, 2, "front", 0, 0.15, 1.0, "pole", "identity"),  # occluded: ignored
            ("gallery", "0003_c.jpg", 3, 2, "front", 0, 0.12, 1.0, "none", "identity"),  # 0.12
        ],
    )
    pair = misaligned_pair(tmp_path)
    assert pair.pid == 2
    assert pair.path_a.endswith("query/0002_a.jpg") and pair.path_b.endswith("bounding_box_test/0002_b.jpg")
    any_view = misaligned_pair(tmp_path, same_view=False)  # 0002_a vs 0002_c: 0.25
    assert any_view.path_b.endswith("0002_c.jpg")


def test_misaligned_pair_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="synthreid_images.csv"):
        misaligned_pair(tmp_path)
    _write_table(tmp_path, [("query", "0002_a.jpg", 2, 1, "front", 0, 0.0, 1.0, "none", "identity")])
    with pytest.raises(ValueError, match="two unoccluded"):
        misaligned_pair(tmp_path)


def test_cross_camera_pair() -> None:
    query = [("q1", 1, 0), ("q2", 2, 0)]
    gallery = [("g1", 1, 0), ("g2", 2, 3), ("g3", 1, 2)]
    pair = cross_camera_pair(query, gallery)
    assert (pair.path_a, pair.path_b, pair.pid) == ("q1", "g3", 1)
    with pytest.raises(ValueError, match="another camera"):
        cross_camera_pair([("q", 5, 0)], gallery)


# ----------------------------------------------------------------------------------- figures
def test_plot_alignment_links_every_path_cell() -> None:
    local_a, local_b = _stripes(1, s=6, d=8)[0].float(), _stripes(1, s=6, d=8, seed=5)[0].float()
    img = np.zeros((48, 24, 3), dtype=np.uint8)
    fig = plot_alignment(img, img, local_a, local_b, suptitle="t")
    links = [a for a in fig.artists if isinstance(a, ConnectionPatch)]
    assert len(links) == 2 * 6 - 1  # a right/down path visits S_a + S_b - 1 cells
    plt.close(fig)
    with pytest.raises(ValueError, match=r"\(S, d\)"):
        plot_alignment(img, img, local_a[None], local_b)


def test_plot_ablation_bars_draws_one_bar_per_row() -> None:
    rows = _rows()
    fig = plot_ablation_bars(rows)
    n_bars = sum(len(ax.patches) for ax in fig.axes)
    assert n_bars == 2 * len(rows)  # one per row and metric
    plt.close(fig)
    with pytest.raises(ValueError, match="metrics"):
        plot_ablation_bars(rows, metrics=("rank5",))


# ------------------------------------------------------------------------- path offsets
def test_box_shifts_and_expected_offset(tmp_path) -> None:
    _write_table(tmp_path, [("query", "0002_a.jpg", 2, 1, "front", 0, -0.05, 0.9, "none", "identity")])
    assert box_shifts(tmp_path) == {"0002_a.jpg": (-0.05, 0.9)}
    assert expected_path_offset(-0.05, 0.075, stripes=8) == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError):
        box_shifts(tmp_path / "missing")


def _smooth_body(s: int, shift: int) -> Tensor:
    """Stripes of a 'body' whose features change slowly from head to feet, shifted down by ``shift`` stripes."""
    u = torch.arange(s, dtype=torch.float32) - shift  # body coordinate seen by each stripe
    return torch.stack([u * 0.6, torch.sin(u * 0.7) * 0.8, (u > 2).float()], dim=1)  # (S, 3)


def test_mean_path_offsets_follow_a_shift() -> None:
    s = 8
    a = torch.stack([_smooth_body(s, 0), _smooth_body(s, 2), _smooth_body(s, 0)])  # (3, S, 3)
    b = torch.stack([_smooth_body(s, 2), _smooth_body(s, 0), _smooth_body(s, 0)])
    offsets = mean_path_offsets(a, b)
    assert offsets[0] > 1.0  # B's body two stripes lower: stripe i of A matches stripe i + 2 of B
    assert offsets[1] < -1.0
    assert abs(offsets[2]) <= 0.5  # same image: a staircase around the diagonal
    with pytest.raises(ValueError, match="same K"):
        mean_path_offsets(a, b[:2])


def test_plot_path_offsets_reports_the_correlation() -> None:
    x = np.array([-1.0, 0.0, 1.0, 2.0])
    fig = plot_path_offsets({"w": (x, 2 * x + 0.1)}, stripes=6)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "w (r = 1.00)" in labels
    plt.close(fig)


def test_normalized_local_makes_unit_stripes_and_keeps_the_rest() -> None:
    torch.manual_seed(0)
    inner = _Tiny()
    images = torch.randn(2, 3, 4, 3) * 5
    out = NormalizedLocal(inner)(images)
    ref = inner(images)
    torch.testing.assert_close(out.local.norm(dim=-1), torch.ones(2, 4))
    torch.testing.assert_close(out.local, ref.local / ref.local.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(out.feat, ref.feat)
    # unit stripes keep every cell cost below tanh(1) = 0.76: no saturation
    assert float(aligned_distance(out.local[:1], out.local[1:])) < (2 * 4 - 1) * math.tanh(1.0) + 1e-6
