"""RandomIdentitySampler: P x K batches, replacement only when needed, coverage, determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reid_core.samplers.random_identity import RandomIdentitySampler

# identity -> number of images; ids 3 and 5 have fewer than K = 4, id 7 has many
COUNTS = {0: 4, 1: 9, 2: 6, 3: 1, 4: 12, 5: 3, 6: 5, 7: 30, 8: 8, 9: 4}


def make_pids(counts: dict[int, int], seed: int = 0) -> np.ndarray:
    """pids in a shuffled dataset order, so the sampler cannot rely on contiguous ids."""
    pids = np.concatenate([np.full(n, pid) for pid, n in counts.items()])
    return np.random.default_rng(seed).permutation(pids) * 7 + 100  # arbitrary, non-contiguous ids


def greedy_batch_count(groups: list[int], p: int) -> int:
    """Slow reference: fill batches with the P identities having the most groups left (this
    greedy order is optimal for 'P distinct identities per batch'), until fewer than P remain."""
    left = list(groups)
    batches = 0
    while sum(g > 0 for g in left) >= p:
        for i in sorted(range(len(left)), key=lambda i: -left[i])[:p]:
            left[i] -= 1
        batches += 1
    return batches


@pytest.mark.parametrize("batch_size,k", [(8, 4), (12, 4), (6, 2), (9, 3)])
def test_batches_are_p_ids_times_k(batch_size: int, k: int) -> None:
    pids = make_pids(COUNTS)
    sampler = RandomIdentitySampler(pids, batch_size=batch_size, num_instances=k, seed=3)
    p = batch_size // k
    for _epoch in range(3):
        indices = np.array(list(sampler))
        assert len(indices) == len(sampler) > 0 and len(indices) % batch_size == 0
        for batch in indices.reshape(-1, batch_size):
            counts = Counter(pids[batch].tolist())
            assert len(counts) == p and set(counts.values()) == {k}
            for j in range(p):  # each identity's K images are consecutive
                assert len(set(pids[batch[j * k : (j + 1) * k]].tolist())) == 1
    groups = [max(n // k, 1) for n in COUNTS.values()]
    assert len(sampler) == greedy_batch_count(groups, p) * batch_size


def test_replacement_only_when_needed() -> None:
    pids = make_pids(COUNTS)
    k = 4
    sampler = RandomIdentitySampler(pids, batch_size=8, num_instances=k, seed=0)
    for _ in range(5):
        indices = np.array(list(sampler))
        used = Counter(indices.tolist())
        for batch in indices.reshape(-1, 8):
            for group in batch.reshape(-1, k):
                pid = pids[group[0]]
                own = set(np.flatnonzero(pids == pid).tolist())
                assert set(group.tolist()) <= own
                if len(own) >= k:
                    assert len(set(group.tolist())) == k  # no repeat
                else:
                    assert set(group.tolist()) == own  # every image it has, repeats fill the rest
        for index, times in used.items():  # an image with enough siblings is used once per epoch
            if (pids == pids[index]).sum() >= k:
                assert times == 1


def test_coverage_over_an_epoch() -> None:
    pids = make_pids(COUNTS)
    sampler = RandomIdentitySampler(pids, batch_size=8, num_instances=4, seed=5)
    indices = np.array(list(sampler))
    appearances = Counter(pids[indices].tolist())
    assert set(appearances) == set(pids.tolist())  # every identity appears
    # groups per id floor(n / K) or 1: 1+2+1+1+3+1+1+7+2+1 = 20 fill 10 batches of P = 2 ids
    # (sum_i min(g_i, 10) = 20 = 10 x 2), so every group is used once
    assert len(indices) == 8 * 10
    for pid, n in COUNTS.items():
        assert appearances[pid * 7 + 100] == 4 * max(n // 4, 1)


def test_groups_dropped_only_when_they_cannot_fit() -> None:
    # groups 1, 1, 10 with P = 2: only 2 batches can hold 2 distinct ids
    pids = np.repeat([0, 1, 2], [4, 4, 40])
    indices = np.array(list(RandomIdentitySampler(pids, batch_size=8, num_instances=4, seed=0)))
    assert len(indices) == 16 and Counter(pids[indices].tolist()) == {0: 4, 1: 4, 2: 8}


def test_balanced_dataset_uses_every_image() -> None:
    pids = np.repeat(np.arange(12), 8)
    indices = list(RandomIdentitySampler(pids, batch_size=16, num_instances=4, seed=0))
    assert sorted(indices) == list(range(96))


def test_determinism_and_set_epoch() -> None:
    pids = make_pids(COUNTS)
    a = RandomIdentitySampler(pids, 8, 4, seed=11)
    b = RandomIdentitySampler(pids, 8, 4, seed=11)
    first_a, second_a = list(a), list(a)
    assert first_a == list(b) and second_a == list(b)  # same seed, same epochs
    assert first_a != second_a  # a new epoch reshuffles
    a.set_epoch(0)
    assert list(a) == first_a
    a.set_epoch(1)
    assert list(a) == second_a
    assert list(RandomIdentitySampler(pids, 8, 4, seed=12)) != first_a
    torch.manual_seed(0)
    c = list(RandomIdentitySampler(pids, 8, 4))
    torch.manual_seed(0)
    assert list(RandomIdentitySampler(pids, 8, 4)) == c  # seed=None follows torch's seed


def test_data_loader_batches() -> None:
    pids = torch.tensor(make_pids(COUNTS))
    dataset = torch.utils.data.TensorDataset(pids)
    sampler = RandomIdentitySampler(pids, batch_size=12, num_instances=3, seed=0)
    loader = DataLoader(dataset, batch_size=12, sampler=sampler, drop_last=True)
    batches = [b[0] for b in loader]
    assert len(batches) == len(loader) == len(sampler) // 12
    assert all(len(torch.unique(b)) == 4 for b in batches)


def test_invalid_arguments() -> None:
    pids = make_pids(COUNTS)
    with pytest.raises(ValueError, match="multiple of num_instances"):
        RandomIdentitySampler(pids, batch_size=10, num_instances=4)
    with pytest.raises(ValueError, match="only 10 identities"):
        RandomIdentitySampler(pids, batch_size=44, num_instances=4)
    with pytest.raises(ValueError, match="num_instances"):
        RandomIdentitySampler(pids, batch_size=8, num_instances=0)
    with pytest.raises(ValueError, match="integers"):
        RandomIdentitySampler([0.0, 1.0], batch_size=2, num_instances=1)
    with pytest.raises(ValueError, match="1-D"):
        RandomIdentitySampler([], batch_size=2, num_instances=1)
