"""Independent runs side by side: order, failures reported with their config, and the same seed giving the
same weights whether a run is alone or beside another.

The run functions are top-level functions of this module: the spawned workers import them by name.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reid_core.engine.parallel_runs import RunFailedError, default_run_workers, run_side_by_side, values_or_raise
from reid_core.engine.trainer import TrainConfig, Trainer, seed_everything


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))  # (B, 4)


def _cross_entropy(output: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"ce": nn.functional.cross_entropy(output, labels)}


def train_tiny(seed: int, steps: int = 4) -> dict[str, object]:
    """Train a tiny network for ``steps`` iterations; return a hash of its weights and where it ran."""
    seed_everything(seed)
    model = _TinyNet()
    data = TensorDataset(torch.randn(64, 3, 16, 8), torch.arange(64) % 4)
    loader = DataLoader(data, batch_size=16, shuffle=True)
    config = TrainConfig(
        epochs=1, lr=1e-2, warmup_epochs=0, scheduler="constant", max_iters_per_epoch=steps, seed=seed, progress=False
    )
    Trainer(model, _cross_entropy, loader, config, device="cpu").fit()
    state = model.state_dict()
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()
    return {"hash": digest, "threads": torch.get_num_threads(), "pid": os.getpid(), "head": state["head.weight"]}


def sleep_then_return(index: int, delay: float) -> int:
    time.sleep(delay)
    return index


def succeed_fail_or_die(index: int, how: str) -> int:
    if how == "raise":
        raise ValueError(f"run {index} was told to fail")
    if how == "die":
        os._exit(3)  # a worker killed without a Python exception (OOM killer, segfault)
    return index


def test_results_come_back_in_input_order() -> None:
    configs = [{"index": 0, "delay": 4.0}, {"index": 1, "delay": 0.0}, {"index": 2, "delay": 0.0}]
    outcomes = run_side_by_side(sleep_then_return, configs, workers=3, progress=False)
    assert [o.value for o in outcomes] == [0, 1, 2] and all(o.ok for o in outcomes)
    assert outcomes[0].seconds >= 4.0 > outcomes[1].seconds  # run 0 finished last, yet comes first
    assert [o.config for o in outcomes] == configs


@pytest.mark.parametrize("workers", [0, 3])
def test_a_failed_run_is_reported_with_its_config_and_the_others_return(workers: int) -> None:
    hows = ["ok", "raise", "ok"] + (["die"] if workers else [])  # in this process, "die" would end the test
    configs = [{"index": i, "how": how} for i, how in enumerate(hows)]
    outcomes = run_side_by_side(succeed_fail_or_die, configs, workers=workers, progress=False)
    assert [o.value for o in outcomes][:3] == [0, None, 2] and outcomes[0].ok and outcomes[2].ok
    failed = outcomes[1]
    assert failed.error == "ValueError: run 1 was told to fail" and failed.config == {"index": 1, "how": "raise"}
    assert "succeed_fail_or_die" in failed.traceback
    if workers:
        assert not outcomes[3].ok and "exit code 3" in outcomes[3].error
    with pytest.raises(RunFailedError, match=r"run 1 with config \{'index': 1, 'how': 'raise'\} failed") as info:
        values_or_raise(outcomes)
    assert len(info.value.outcomes) == len(configs) and info.value.outcomes[0].value == 0


def test_same_seed_same_weights_alone_or_beside_another() -> None:
    run = functools.partial(train_tiny, steps=4)  # how a chapter passes its shared arguments
    alone = run_side_by_side(run, [{"seed": 3}], workers=1, progress=False)[0].unwrap()
    beside = values_or_raise(run_side_by_side(run, [{"seed": 3}, {"seed": 4}], workers=2, progress=False))
    assert alone["hash"] == beside[0]["hash"] != beside[1]["hash"]
    assert alone["threads"] == beside[0]["threads"] == beside[1]["threads"] == 1
    assert beside[0]["pid"] != beside[1]["pid"] != os.getpid()  # two processes side by side
    assert isinstance(beside[0]["head"], torch.Tensor) and beside[0]["head"].shape == (4, 8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # in this process at the same thread count: the same bits again
    try:
        in_process = run_side_by_side(run, [{"seed": 3}], workers=0, progress=False)[0].unwrap()
    finally:
        torch.set_num_threads(threads)
    assert in_process["hash"] == alone["hash"]
    torch.testing.assert_close(in_process["head"], beside[0]["head"], rtol=0, atol=0)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="picklable"):
        run_side_by_side(lambda seed: seed, [{"seed": 0}], workers=1, progress=False)
    with pytest.raises(ValueError, match=r"configs\[1\] must be a mapping"):
        run_side_by_side(sleep_then_return, [{"index": 0, "delay": 0}, (1, 0)], workers=0, progress=False)
    with pytest.raises(ValueError, match="threads_per_worker"):
        run_side_by_side(sleep_then_return, [], threads_per_worker=0)


def test_default_workers() -> None:
    assert default_run_workers(5, device="cuda") == 0  # one after another on a GPU, as before
    cores = len(os.sched_getaffinity(0))
    assert default_run_workers(5, device="cpu") == min(5, cores)
    assert default_run_workers(1, device="cpu") == 1
    assert default_run_workers(8, threads_per_worker=cores, device="cpu") == 1


def test_a_worker_runs_one_config_after_another() -> None:
    runs = [{"seed": seed} for seed in range(5)]
    out = values_or_raise(run_side_by_side(train_tiny, runs, workers=2, progress=False))
    assert len({o["pid"] for o in out}) == 2  # two worker processes for five runs
    alone = values_or_raise(run_side_by_side(train_tiny, runs[4:], workers=1, progress=False))
    assert out[4]["hash"] == alone[0]["hash"]  # the fifth run, after others in its worker, as if alone


def test_a_dead_worker_fails_only_its_run_and_is_replaced() -> None:
    runs = [{"index": 0, "how": "return"}, {"index": 1, "how": "die"}] + [
        {"index": i, "how": "return"} for i in range(2, 6)
    ]
    outcomes = run_side_by_side(succeed_fail_or_die, runs, workers=1, progress=False)
    assert [o.ok for o in outcomes] == [True, False, True, True, True, True]
    assert "exit code 3" in outcomes[1].error and outcomes[1].config == runs[1]
    assert [o.value for o in outcomes if o.ok] == [0, 2, 3, 4, 5]
