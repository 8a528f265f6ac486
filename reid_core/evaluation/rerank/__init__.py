"""k-reciprocal re-ranking (Zhong et al. 2017): dense for Market-sized test sets, from features for
MSMT17-sized ones.

* :mod:`~reid_core.evaluation.rerank.k_reciprocal`: the entry points :func:`re_ranking` and
  :func:`re_ranking_from_features`, the paper's steps in order;
* :mod:`~reid_core.evaluation.rerank.dense` / :mod:`~reid_core.evaluation.rerank.from_features`:
  where the distances come from (a matrix, or feature blocks);
* :mod:`~reid_core.evaluation.rerank.neighbors`: the stable k-nearest lists;
* :mod:`~reid_core.evaluation.rerank.sparse`: k-reciprocal sets, Gaussian encoding, query
  expansion and the Jaccard distance on sparse rows;
* :mod:`~reid_core.evaluation.rerank.memory`: what a run will need, checked before it starts.

Chapters: 03 (re-ranking), ``book/evaluation_at_scale.md``.
"""

from reid_core.evaluation.rerank.k_reciprocal import RerankedTopK, re_ranking, re_ranking_from_features
from reid_core.evaluation.rerank.memory import MemoryEstimate, rerank_memory_estimate

__all__ = ["MemoryEstimate", "RerankedTopK", "re_ranking", "re_ranking_from_features", "rerank_memory_estimate"]
