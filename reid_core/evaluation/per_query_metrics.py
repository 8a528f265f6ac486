r"""Per-query rank metrics from the ranks of the true matches: AP, INP, MAP@R, R-precision.

For one query with :math:`n \ge 1` true matches at 1-based ranks
:math:`r_1 < r_2 < \dots < r_n` of its filtered list (the precision at match :math:`i` is
:math:`i / r_i`):

.. math::
    \mathrm{AP} = \frac{1}{n}\sum_{i=1}^{n}\frac{i}{r_i}, \qquad
    \mathrm{INP} = \frac{n}{r_n}, \qquad
    \text{R-precision} = \frac{\#\{i : r_i \le R\}}{R}, \qquad
    \mathrm{MAP@R} = \frac{1}{R}\sum_{i:\, r_i \le R}\frac{i}{r_i}, \qquad R = n.

- **AP**: the mean precision at each true match (torchreid, scikit-learn >= 0.19), not the
  trapezoid rule of the MATLAB Market-1501 code.
- **INP**, the inverse negative penalty of Ye et al., "Deep Learning for Person
  Re-identification: A Survey and Outlook", TPAMI 2021 (``ye2021deep``): the precision at
  the *hardest* (last) match, so it measures how much of the list a user must read to find
  every image of the person. Its mean over queries is **mINP**.
- **R-precision** and **MAP@R**, Musgrave et al., "A Metric Learning Reality Check", ECCV
  2020 (``musgrave2020metric``): with :math:`R` the number of true matches, the precision
  of the first :math:`R` items, and the average precision of the first :math:`R` items
  (precision at each match among them, divided by :math:`R`). MAP@R rewards both a good
  order and a compact cluster, and unlike AP it is bounded by R-precision.

Under the Market-1501 rule :math:`n` (and so :math:`R`) counts the *valid* true matches and
the ranks are those of the filtered list.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["QueryMetrics", "query_metrics"]


@dataclass(frozen=True)
class QueryMetrics:
    """The metrics of each query of a block (0 where the query has no true match).

    Attributes:
        first_rank: (B,) int64 :math:`r_1`.
        average_precision: (B,) float64 AP.
        inverse_negative_penalty: (B,) float64 INP.
        map_at_r: (B,) float64 MAP@R.
        r_precision: (B,) float64 R-precision.
        has_match: (B,) bool, True where the row has at least one true match.
    """

    first_rank: Tensor
    average_precision: Tensor
    inverse_negative_penalty: Tensor
    map_at_r: Tensor
    r_precision: Tensor
    has_match: Tensor


def query_metrics(ranks: Tensor, n_pos: Tensor) -> QueryMetrics:
    """AP, INP, MAP@R, R-precision and first-match rank of every row.

    Args:
        ranks: (B, P) int64 1-based ranks of each row's true matches in increasing order,
            0 after the row's last match (P may be 0).
        n_pos: (B,) int64 number of true matches per row (the nonzero entries of ``ranks``).

    Returns:
        A :class:`QueryMetrics`.
    """
    num_b, max_pos = ranks.shape
    device = ranks.device
    has_match = n_pos > 0  # (B,)
    n = n_pos.clamp(min=1).double()  # (B,)
    if max_pos == 0:
        zeros = torch.zeros(num_b, dtype=torch.float64, device=device)
        return QueryMetrics(torch.zeros_like(n_pos), zeros, zeros, zeros, zeros, has_match)
    i = torch.arange(1, max_pos + 1, device=device, dtype=torch.float64)  # (P,)
    is_real = ranks > 0  # (B, P)
    precision = torch.where(is_real, i / ranks.clamp(min=1).double(), 0.0)  # (B, P): i / r_i
    within_r = is_real & (ranks <= n_pos.unsqueeze(1))  # (B, P): r_i <= R = n
    hardest = ranks.gather(1, (n_pos - 1).clamp(min=0).unsqueeze(1)).squeeze(1)  # (B,) r_n
    return QueryMetrics(
        first_rank=torch.where(has_match, ranks[:, 0], 0),
        average_precision=precision.sum(1) / n,
        inverse_negative_penalty=torch.where(has_match, n / hardest.clamp(min=1).double(), 0.0),
        map_at_r=torch.where(within_r, precision, 0.0).sum(1) / n,
        r_precision=within_r.sum(1).double() / n,
        has_match=has_match,
    )
