"""Training under torchrun: rank-aware samplers, global-batch losses, DDP equivalence, rank failure and resume.

The multi-process tests launch ``torchrun --standalone --nproc_per_node=2`` (gloo on the CPU, a
free port chosen by torchrun) on ``tests/ddp_scenarios.py``, always under a timeout, and compare
with the same scenario run here in one process holding the whole batch. Every BatchNorm is in
eval mode in those scenarios: SyncBatchNorm has no CPU kernels, and a BN in training mode
normalises each rank's share with its own statistics, which one process with the whole batch
would not do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ddp_scenarios as scenarios

from reid_core.collectives import batch_columns, gather_with_grad, pooled_mean, process_count, self_pairs
from reid_core.engine import extract_features, init_distributed, load_checkpoint, shard_bounds
from reid_core.models import BaselineNet
from reid_core.samplers import DistributedIdentitySampler, GraphSampler, RandomIdentitySampler

SCENARIOS = ROOT / "tests" / "ddp_scenarios.py"


def torchrun(args: list[str], timeout: float, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    """`python -m torch.distributed.run --standalone --nproc_per_node=nproc` on the scenarios, one thread per rank."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "--monitor_interval=0.2",
        str(SCENARIOS),
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- samplers (no process group needed)


def _pids_with_uneven_counts() -> np.ndarray:
    """12 identities with 2 to 9 images each, shuffled into dataset order."""
    counts = [2, 9, 4, 5, 3, 8, 4, 6, 7, 2, 5, 4]
    pids = np.repeat(np.arange(len(counts)) * 10 + 3, counts)  # pids 3, 13, 23, ... (not 0..C-1)
    return np.random.default_rng(0).permutation(pids)


def _epoch_slices(build: Callable[[], Any], world: int, epochs: int) -> list[list[np.ndarray]]:
    """Each rank's batches of epochs ``0..epochs-1``: ``[epoch][rank]`` (T, G / N) indices.

    Every rank builds its own global sampler, as the processes of a job do (the Graph Sampler's
    image pointers carry over from one epoch to the next).
    """
    per_rank = []
    for rank in range(world):
        sampler = DistributedIdentitySampler(build(), num_replicas=world, rank=rank)
        batches = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            indices = np.array(list(sampler))
            assert len(indices) == len(sampler)
            batches.append(indices.reshape(-1, sampler.batch_size))
        per_rank.append(batches)
    return [[per_rank[rank][epoch] for rank in range(world)] for epoch in range(epochs)]


@pytest.mark.parametrize("kind", ["pk", "graph"])
@pytest.mark.parametrize("world", [2, 4])
def test_distributed_samplers_split_global_batches_into_whole_identities(kind: str, world: int) -> None:
    pids = _pids_with_uneven_counts()
    k, global_batch = 2, 16  # P = 8 identities per step, 8 / world on each rank

    def build() -> object:
        if kind == "pk":
            return RandomIdentitySampler(pids, global_batch, k, seed=3)
        sampler = GraphSampler(pids, global_batch, k, seed=3)
        classes = np.unique(pids)
        dist = np.abs(classes[:, None] - classes[None, :]).astype(float)  # (C, C) nearest pids are neighbours
        sampler.update_graph(dist)
        return sampler

    reference = build()  # one process, global batch G
    for epoch, slices in enumerate(_epoch_slices(build, world, epochs=3)):
        assert len({s.shape for s in slices}) == 1, "every rank must get the same number of batches"
        reference.set_epoch(epoch)
        whole = np.array(list(reference)).reshape(-1, global_batch)  # (T, G)
        # rank r's batch t is the r-th slice of the one-process batch t: same samples
        np.testing.assert_array_equal(np.concatenate(slices, axis=1), whole)
        for step in range(whole.shape[0]):
            ids_per_rank = []
            for rank_slices in slices:
                ids, counts = np.unique(pids[rank_slices[step]], return_counts=True)
                assert (counts == k).all(), f"rank batch holds partial identities: {dict(zip(ids, counts))}"
                ids_per_rank.append(set(ids.tolist()))
            union = set().union(*ids_per_rank)
            assert len(union) == sum(map(len, ids_per_rank)), f"an identity is on two ranks at step {step}"
        seen = set(pids[np.concatenate(slices).reshape(-1)].tolist())
        assert seen == set(pids.tolist()), "every identity must appear in the epoch, on some rank"
        if kind == "graph":  # every class seeds exactly one global batch, on rank 0
            seeds = pids[slices[0][:, 0]]
            assert sorted(seeds.tolist()) == sorted(np.unique(pids).tolist())


def test_distributed_sampler_is_a_function_of_seed_and_epoch() -> None:
    pids = _pids_with_uneven_counts()
    first = _epoch_slices(lambda: RandomIdentitySampler(pids, 16, 2, seed=5), 2, epochs=2)
    again = _epoch_slices(lambda: RandomIdentitySampler(pids, 16, 2, seed=5), 2, epochs=2)
    other_seed = _epoch_slices(lambda: RandomIdentitySampler(pids, 16, 2, seed=6), 2, epochs=2)
    for epoch in range(2):
        for a, b in zip(first[epoch], again[epoch]):
            np.testing.assert_array_equal(a, b)
        assert not all(np.array_equal(a, b) for a, b in zip(first[epoch], other_seed[epoch]))
    assert not all(np.array_equal(a, b) for a, b in zip(first[0], first[1])), "epochs must differ"


def test_distributed_sampler_rejects_bad_setups() -> None:
    pids = _pids_with_uneven_counts()
    with pytest.raises(ValueError, match="multiple of 6"):  # 16 images cannot split into 3 ranks x groups of 2
        DistributedIdentitySampler(RandomIdentitySampler(pids, 16, 2, seed=0), num_replicas=3, rank=0)
    with pytest.raises(ValueError, match="seed"):
        DistributedIdentitySampler(GraphSampler(pids, 16, 2, seed=None), num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="rank"):
        DistributedIdentitySampler(RandomIdentitySampler(pids, 16, 2, seed=0), num_replicas=2, rank=2)
    with pytest.raises(TypeError, match="batch_size"):
        DistributedIdentitySampler(torch.utils.data.SequentialSampler(range(10)), num_replicas=2, rank=0)


def test_graph_sampler_set_neighbors_checks_the_graph() -> None:
    sampler = GraphSampler(_pids_with_uneven_counts(), 16, 2, seed=0)
    with pytest.raises(ValueError, match="shape"):
        sampler.set_neighbors(np.zeros((12, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="class indices"):
        sampler.set_neighbors(np.full((12, 7), 12))
    neighbors = (np.arange(12)[:, None] + np.arange(1, 8)) % 12  # (C, k)
    sampler.set_neighbors(neighbors)
    np.testing.assert_array_equal(sampler.batch_classes()[:, 1:], neighbors)


# ------------------------------------------------------------ one process: the helpers are the identity


def test_collectives_without_a_process_group_are_the_local_operations() -> None:
    assert process_count() == 1
    x, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    assert gather_with_grad(x) is x
    columns, column_labels, first = batch_columns(x, labels, "global")
    assert columns is x and column_labels is labels and first == 0
    values = torch.tensor([1.0, 2.0, 6.0])
    assert pooled_mean(values, "global") == pooled_mean(values, "local") == 3.0
    assert pooled_mean(torch.zeros(0), "global") is None
    np.testing.assert_array_equal(self_pairs(2, 6, 4, "cpu").nonzero().tolist(), [[0, 4], [1, 5]])
    with pytest.raises(ValueError, match="batch_scope"):
        pooled_mean(values, "everything")  # type: ignore[arg-type]


def test_shard_bounds_cover_the_items_in_order() -> None:
    assert shard_bounds(13, 2) == [(0, 7), (7, 13)]
    assert shard_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    with pytest.raises(ValueError, match="num_shards"):
        shard_bounds(5, 0)


# ------------------------------------------------------------------------ two processes (torchrun, gloo)


@pytest.fixture(scope="module")
def equivalence_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp_equivalence")
    result = torchrun(["equivalence", str(out)], timeout=240)
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("variant", scenarios.VARIANTS)
def test_two_processes_train_like_one_process_with_twice_the_batch(equivalence_run: Path, variant: str) -> None:
    """2 ranks x batch 8 == 1 process x batch 16 on the same samples, after 4 SGD steps."""
    reference, reference_read, _ = scenarios.train_variant(variant, distributed=False)
    ddp = torch.load(equivalence_run / f"{variant}.pt", weights_only=True)
    assert ddp.keys() == reference.keys()
    worst = max((reference[k] - ddp[k]).abs().max().item() for k in reference if reference[k].is_floating_point())
    initial = scenarios.build_variant(variant, scenarios.RecordingDataset())[0].state_dict()
    moved = max((reference[f"model.{k}"] - v).abs().max().item() for k, v in initial.items() if v.is_floating_point())
    if variant == "triplet_local":  # mining within each rank's 8 samples is another loss: it must show
        assert worst > 100 * 1e-6, f"local mining should differ from global mining, max difference {worst:.2e}"
    else:
        assert worst < 1e-5, f"{variant}: max parameter difference {worst:.2e} (training moved them by {moved:.2e})"
    assert moved > 1e-3, "training must move the parameters, or the comparison proves nothing"

    # the same samples: rank r's batch t is the r-th half of the one-process batch t
    per_rank = [json.loads((equivalence_run / f"{variant}_rank{r}.json").read_text()) for r in range(2)]
    half = scenarios.GLOBAL_BATCH // 2
    steps = len(reference_read) // scenarios.GLOBAL_BATCH
    for t in range(steps):
        batch = reference_read[t * scenarios.GLOBAL_BATCH : (t + 1) * scenarios.GLOBAL_BATCH]
        for rank, read in enumerate(per_rank):
            assert read[t * half : (t + 1) * half] == batch[rank * half : (rank + 1) * half]
        pids = [
            {int(scenarios.RecordingDataset().pids[i]) for i in read[t * half : (t + 1) * half]} for read in per_rank
        ]
        assert not pids[0] & pids[1], f"identity on both ranks at step {t}: {pids[0] & pids[1]}"


@pytest.mark.slow
def test_distributed_feature_extraction_equals_one_process(equivalence_run: Path) -> None:
    saved = torch.load(equivalence_run / "features.pt", weights_only=True)
    weights = torch.load(equivalence_run / "baseline.pt", weights_only=True)
    model = BaselineNet(scenarios.NUM_IDS, backbone="resnet10")
    model.load_state_dict({k[len("model.") :]: v for k, v in weights.items() if k.startswith("model.")})
    loader = scenarios.make_test_loader()
    one = extract_features(model, loader, device="cpu", progress=False)
    assert saved["features"].shape == one.features.shape == (len(loader.dataset), model.feat_dim)
    torch.testing.assert_close(saved["features"], one.features, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(saved["pids"].numpy(), one.pids)
    np.testing.assert_array_equal(saved["camids"].numpy(), one.camids)


@pytest.mark.slow
def test_gradient_through_the_gather_is_summed_over_processes(equivalence_run: Path) -> None:
    """The gradient reaching a rank's rows is the sum of every rank's loss's gradient on them."""
    for rank in range(2):
        saved = torch.load(equivalence_run / f"gather_rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(saved["grad"], saved["expected"])


@pytest.mark.slow
def test_sync_bn_on_the_cpu_is_refused_with_a_clear_error(equivalence_run: Path) -> None:
    for rank in range(2):
        message = (equivalence_run / f"sync_bn_rank{rank}.txt").read_text()
        assert "sync_bn needs CUDA" in message, message


def test_init_distributed_without_torchrun_creates_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed("cpu") == torch.device("cpu")
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="WORLD_SIZE"):
        init_distributed("cpu")
    with pytest.raises(ValueError, match="device"):
        init_distributed("tpu")


@pytest.mark.slow
def test_killed_rank_stops_the_job_and_training_resumes_exactly(equivalence_run: Path, tmp_path: Path) -> None:
    killed = torchrun(["resumable", str(tmp_path / "b"), "--kill-at", "2"], timeout=180)
    assert killed.returncode != 0
    assert "SIGKILL" in killed.stderr and "ChildFailedError" in killed.stderr, killed.stderr[-4000:]
    checkpoint = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 2, "the last checkpoint is the one written after epoch 2"
    assert checkpoint["process_torch_rng"].shape[0] == 2, "each rank's random state is in the checkpoint"
    assert not (tmp_path / "b" / "final.pt").exists()

    resumed = torchrun(["resumable", str(tmp_path / "b")], timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout and "at epoch 2" in resumed.stdout, resumed.stdout[-2000:]
    # dropout draws from each rank's own stream: equal weights need every rank's state restored
    expected = torch.load(equivalence_run / "uninterrupted" / "final.pt", weights_only=True)
    got = torch.load(tmp_path / "b" / "final.pt", weights_only=True)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_train_ddp_tool_runs_chapter_01_on_two_processes(tmp_path: Path) -> None:
    """The README's command, with the smoke profile on the CPU."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "tools" / "train_ddp.py"),
        "--chapter",
        "01",
        "--profile",
        "smoke",
        "--device",
        "cpu",
        "--data-root",
        str(tmp_path / "data"),
        "--results-dir",
        str(tmp_path / "results"),
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert "global batch 16 = 2 x 8" in result.stdout
    record = json.loads((tmp_path / "results" / "01_reid_basics" / "baseline-ddp.json").read_text())
    assert record["device"] == "2 x cpu" and record["profile"] == "smoke"
    assert record["params"]["processes"] == 2 and record["params"]["batch_per_process"] == 8
    assert 0 <= record["rank1"] <= 100 and 0 < record["mAP"] <= 100
