"""Tests for reid_core.alignment: AlignedReID's aligned local distance (Zhang et al. 2017).

References are written from the paper's definition, independently of the library: the stripe
costs from explicit differences and (e^d - 1)/(e^d + 1), then either every monotone path
enumerated with itertools or the paper's recurrence as a plain Python double loop.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from reid_core.alignment import (
    aligned_distance,
    aligned_path,
    paired_aligned_distance,
    pairwise_aligned_distance,
    shortest_path_table,
    stripe_distance_matrix,
)


def _features(n: int, stripes: int, dim: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, stripes, dim, generator=gen, dtype=dtype) * 0.5


def _paper_cost(f: torch.Tensor, g: torch.Tensor) -> list[list[float]]:
    """d_ij = (e^{|f_i - g_j|} - 1) / (e^{|f_i - g_j|} + 1), cell by cell."""
    cost = []
    for i in range(f.shape[0]):
        row = []
        for j in range(g.shape[0]):
            dist = math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(f[i], g[j])))
            row.append((math.exp(dist) - 1.0) / (math.exp(dist) + 1.0))
        cost.append(row)
    return cost


def _all_paths_minimum(cost: list[list[float]]) -> float:
    """Minimum over every right/down path from (0, 0) to the last cell, by enumeration."""
    rows, cols = len(cost), len(cost[0])
    moves = rows + cols - 2
    best = math.inf
    for downs in itertools.combinations(range(moves), rows - 1):
        i = j = 0
        total = cost[0][0]
        for step in range(moves):
            if step in downs:
                i += 1
            else:
                j += 1
            total += cost[i][j]
        best = min(best, total)
    return best


def _dp_loop(cost: list[list[float]]) -> float:
    """The paper's recurrence S_ij = min(S_{i-1,j}, S_{i,j-1}) + d_ij as a plain double loop."""
    rows, cols = len(cost), len(cost[0])
    acc = [[0.0] * cols for _ in range(rows)]
    for i in range(rows):
        for j in range(cols):
            if i == 0 and j == 0:
                acc[i][j] = cost[0][0]
            elif i == 0:
                acc[i][j] = acc[i][j - 1] + cost[i][j]
            elif j == 0:
                acc[i][j] = acc[i - 1][j] + cost[i][j]
            else:
                acc[i][j] = min(acc[i - 1][j], acc[i][j - 1]) + cost[i][j]
    return acc[-1][-1]


@pytest.mark.parametrize("sx, sy", [(4, 4), (3, 5), (5, 2), (1, 4), (1, 1)])
def test_matches_brute_force_over_all_monotone_paths(sx: int, sy: int) -> None:
    x, y = _features(3, sx, seed=1), _features(4, sy, seed=2)
    dist = aligned_distance(x, y)
    expected = torch.tensor(
        [[_all_paths_minimum(_paper_cost(x[a], y[b])) for b in range(4)] for a in range(3)], dtype=torch.float64
    )
    torch.testing.assert_close(dist, expected.to(dist.dtype), rtol=1e-9, atol=1e-9)


def test_matches_plain_dp_loop_with_eight_stripes() -> None:
    x, y = _features(5, 8, seed=3), _features(7, 8, seed=4)
    dist = aligned_distance(x, y)
    expected = torch.tensor(
        [[_dp_loop(_paper_cost(x[a], y[b])) for b in range(7)] for a in range(5)], dtype=torch.float64
    )
    torch.testing.assert_close(dist, expected.to(dist.dtype), rtol=1e-9, atol=1e-9)


def test_float32_close_to_float64() -> None:
    x, y = _features(6, 8, dim=32, seed=5), _features(9, 8, dim=32, seed=6)
    d64 = aligned_distance(x, y)
    d32 = aligned_distance(x.float(), y.float())
    assert d32.dtype == torch.float32
    torch.testing.assert_close(d32.double(), d64, rtol=1e-5, atol=1e-5)


def test_symmetric_under_swapping_the_arguments() -> None:
    # Transposing the cost matrix maps right/down paths onto right/down paths.
    x, y = _features(5, 6, seed=7), _features(4, 3, seed=8)
    torch.testing.assert_close(aligned_distance(x, y), aligned_distance(y, x).T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 20, 10_000])
def test_chunked_equals_unchunked(chunk_size: int) -> None:
    x, y = _features(9, 5, seed=9), _features(11, 5, seed=10)
    full = aligned_distance(x, y, chunk_size=10_000)
    torch.testing.assert_close(aligned_distance(x, y, chunk_size=chunk_size), full, rtol=0, atol=1e-12)


def test_chunked_equals_unchunked_with_grad() -> None:
    x = _features(7, 4, seed=11).requires_grad_()
    y = _features(6, 4, seed=12).requires_grad_()
    grads = []
    for chunk in (2, 1000):
        dist = aligned_distance(x, y, chunk_size=chunk)
        (gx, gy) = torch.autograd.grad((dist * torch.arange(42.0, dtype=dist.dtype).view(7, 6)).sum(), (x, y))
        grads.append((dist.detach(), gx, gy))
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_no_grad_and_grad_paths_agree() -> None:
    x, y = _features(5, 8, seed=13), _features(6, 8, seed=14)
    with torch.no_grad():
        fast = aligned_distance(x, y)
    slow = aligned_distance(x.clone().requires_grad_(), y)
    torch.testing.assert_close(slow.detach(), fast, rtol=1e-12, atol=1e-12)


def test_gradcheck_float64() -> None:
    x = _features(3, 4, dim=5, seed=15).requires_grad_()
    y = _features(2, 3, dim=5, seed=16).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: aligned_distance(a, b, chunk_size=4), (x, y))


def test_gradcheck_pairwise_and_paired() -> None:
    x = _features(4, 3, dim=4, seed=17).requires_grad_()
    y = _features(4, 5, dim=4, seed=18).requires_grad_()
    assert torch.autograd.gradcheck(pairwise_aligned_distance, (x,))
    assert torch.autograd.gradcheck(paired_aligned_distance, (x, y))


def test_path_is_monotone_and_its_cost_is_the_distance() -> None:
    x, y = _features(1, 8, dim=16, seed=19)[0], _features(1, 6, dim=16, seed=20)[0]
    result = aligned_path(x, y)
    path = result.path.tolist()
    assert path[0] == [0, 0] and path[-1] == [7, 5] and len(path) == 8 + 6 - 1
    for (i0, j0), (i1, j1) in zip(path, path[1:]):
        assert (i1 - i0, j1 - j0) in ((1, 0), (0, 1))
    expected_cost = torch.tensor(_paper_cost(x, y), dtype=x.dtype)
    torch.testing.assert_close(result.cost, expected_cost, rtol=1e-12, atol=1e-12)
    path_cost = sum(expected_cost[i, j] for i, j in path)
    torch.testing.assert_close(result.distance, path_cost, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.distance, aligned_distance(x[None], y[None])[0, 0], rtol=1e-9, atol=1e-9)


def test_return_path_gives_paths_whose_cost_is_the_distance() -> None:
    x, y = _features(4, 5, seed=21), _features(3, 5, seed=22)
    dist, paths = aligned_distance(x, y, chunk_size=5, return_path=True)
    assert paths.shape == (4, 3, 9, 2) and paths.dtype == torch.long
    for a in range(4):
        for b in range(3):
            cost = stripe_distance_matrix(x[a], y[b])
            cells = paths[a, b]
            assert cells[0].tolist() == [0, 0] and cells[-1].tolist() == [4, 4]
            assert bool(((cells[1:] - cells[:-1]).sum(1) == 1).all())  # one step right or down
            torch.testing.assert_close(cost[cells[:, 0], cells[:, 1]].sum(), dist[a, b], rtol=1e-9, atol=1e-9)


def test_gradient_is_the_path_indicator_through_the_costs() -> None:
    # dD/dx through one path: the sum over path cells of d tanh(|x_i - y_j| / 2) / dx.
    x = _features(1, 5, dim=3, seed=23)[0].requires_grad_()
    y = _features(1, 5, dim=3, seed=24)[0]
    aligned_distance(x[None], y[None])[0, 0].backward()
    path = aligned_path(x.detach(), y).path
    x2 = x.detach().clone().requires_grad_()
    cost = torch.tanh((x2[:, None] - y[None]).norm(dim=2) / 2)  # (S, S)
    cost[path[:, 0], path[:, 1]].sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-12)


def test_pairwise_form() -> None:
    x = _features(6, 4, seed=25)
    pw = pairwise_aligned_distance(x, chunk_size=5)
    full = aligned_distance(x, x)
    off = ~torch.eye(6, dtype=torch.bool)
    torch.testing.assert_close(pw[off], full[off], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pw, pw.T, rtol=1e-12, atol=1e-12)
    # An image against itself: the diagonal cells cost 0, the path's other cells do not.
    expected_self = torch.tensor([_dp_loop(_paper_cost(x[a], x[a])) for a in range(6)], dtype=x.dtype)
    torch.testing.assert_close(pw.diagonal(), expected_self, rtol=1e-12, atol=1e-12)


def test_pairwise_backward_is_finite_with_duplicates_in_float32() -> None:
    x = _features(4, 8, dim=16, seed=26, dtype=torch.float32)
    x = torch.cat([x, x[:1]]).requires_grad_()  # an exact duplicate: zero stripe distances
    pairwise_aligned_distance(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    x.grad = None
    paired_aligned_distance(x, x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_paired_form_matches_the_full_matrix() -> None:
    x, y = _features(5, 4, seed=27), _features(5, 6, seed=28)
    torch.testing.assert_close(paired_aligned_distance(x, y), aligned_distance(x, y).diagonal(), rtol=1e-9, atol=1e-9)


def test_range_and_half_precision_inputs() -> None:
    x, y = _features(3, 8, dim=64, seed=29, dtype=torch.float32), _features(4, 8, dim=64, seed=30, dtype=torch.float32)
    dist = aligned_distance(x.half(), y.half())
    assert dist.dtype == torch.float32
    assert bool((dist >= 0).all()) and bool((dist < 15).all())
    torch.testing.assert_close(dist, aligned_distance(x.half().float(), y.half().float()), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(
            aligned_distance(x, y), aligned_distance(x.double(), y.double()).float(), rtol=1e-5, atol=1e-5
        )


def test_bad_inputs_raise_clear_errors() -> None:
    x = _features(2, 4)
    with pytest.raises(ValueError, match="x must be local features"):
        aligned_distance(x[0], x)
    with pytest.raises(ValueError, match="same feature dim"):
        aligned_distance(x, _features(2, 4, dim=7))
    with pytest.raises(ValueError, match="chunk_size"):
        aligned_distance(x, x, chunk_size=0)
    with pytest.raises(TypeError, match="floating-point"):
        aligned_distance(x.long(), x)
    with pytest.raises(ValueError, match="same B and D"):
        paired_aligned_distance(x, _features(3, 4))


def test_empty_inputs_give_empty_results() -> None:
    dist, paths = aligned_distance(_features(0, 4), _features(3, 5), return_path=True)
    assert dist.shape == (0, 3) and paths.shape == (0, 3, 8, 2)


def test_nan_inputs_give_nan_distances_and_are_not_masked() -> None:
    x, y = _features(4, 5, seed=31, dtype=torch.float32), _features(3, 5, seed=32, dtype=torch.float32)
    x[2, 1, 0] = float("nan")
    with torch.no_grad():
        fast = aligned_distance(x, y)
    slow = aligned_distance(x.clone().requires_grad_(), y)
    for dist in (fast, slow.detach()):
        assert torch.isnan(dist[2]).all() and not torch.isnan(dist[[0, 1, 3]]).any()
    assert torch.isnan(paired_aligned_distance(x[:3], y)[2])


def test_nearly_identical_stripes_stay_finite_and_exact() -> None:
    # The norm expansion can go slightly negative for near-duplicates; the result must not.
    x = _features(6, 8, dim=64, seed=33, dtype=torch.float32) * 6.0
    y = x + 1e-5 * _features(6, 8, dim=64, seed=34, dtype=torch.float32)
    with torch.no_grad():
        dist = aligned_distance(x, y)
    expected = aligned_distance(x.double(), y.double())
    assert torch.isfinite(dist).all()
    torch.testing.assert_close(dist.double(), expected, rtol=1e-4, atol=1e-4)


def test_readable_recurrence_worked_by_hand() -> None:
    cost = torch.tensor([[1.0, 5.0, 1.0], [1.0, 1.0, 9.0], [4.0, 1.0, 1.0]])
    # S_00 = 1; first row 1, 6, 7; first column 1, 2, 6; S_11 = 1 + min(6, 2) = 3,
    # S_12 = 9 + min(7, 3) = 12, S_21 = 1 + min(3, 6) = 4, S_22 = 1 + min(12, 4) = 5.
    expected = torch.tensor([[1.0, 6.0, 7.0], [2.0, 3.0, 12.0], [6.0, 4.0, 5.0]])
    torch.testing.assert_close(shortest_path_table(cost), expected)


@pytest.mark.parametrize(("sx", "sy"), [(8, 8), (6, 4), (3, 7), (1, 5)])
def test_readable_recurrence_equals_the_batched_distance(sx: int, sy: int) -> None:
    x, y = _features(3, sx, seed=11), _features(4, sy, seed=12)
    fast = aligned_distance(x, y)  # (3, 4)
    for i in range(3):
        for j in range(4):
            table = shortest_path_table(stripe_distance_matrix(x[i], y[j]))  # (S_x, S_y)
            assert math.isclose(float(table[-1, -1]), float(fast[i, j]), rel_tol=1e-9, abs_tol=1e-12)
            assert math.isclose(float(aligned_path(x[i], y[j]).distance), float(fast[i, j]), rel_tol=1e-9)
