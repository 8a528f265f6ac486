"""Independent runs (seeds, methods, ablation arms) side by side: one process per CPU core.

A small network at 64x32 does not spread well over two threads: on the book's 2-core CPU, two
single-threaded processes train more images per second than one process with two threads.
:func:`run_side_by_side` calls ``fn(**config)`` for every config in ``workers`` worker
processes started with ``spawn`` (a forked child of a process whose GNU OpenMP pool has already
run can hang), each with ``threads_per_worker`` torch threads. A worker runs one config after
another, so its start-up (Python, torch, the chapter's modules: several seconds) and the images
it decoded are paid once per worker rather than once per run. Results come back in the order of
``configs``, a tqdm bar counts finished runs, and an exception in one run is reported with its
config and traceback while the other runs go on; a worker that dies (killed, out of memory)
fails only its current run and is replaced.

On CUDA, or with ``workers=0``, the runs go one after another in this process, as before.

``fn`` travels to the child by reference, so it must be importable: a top-level function of a
module, or a ``functools.partial`` of one with the arguments every run shares. A function
defined in a notebook cannot be imported by the child; keep it in the chapter's module
(``reid_core/chapters/<chapter>/experiment.py``). Every run must seed what it draws (call
:func:`~reid_core.engine.trainer.seed_everything` first, or rely on ``Trainer.fit``'s seeding
for the training): a run's result then depends on its config and its thread count only, not on
which run went before it in its worker or beside it in the other. (The thread count matters: one and two threads sum a
convolution's gradient in different orders, so their weights differ in the last bits.)

Chapters: every chapter's seeds and arms in the ``synth`` profile.

Example:
    >>> from functools import partial
    >>> runs = [{"seed": s} for s in range(3)]
    >>> outcomes = run_side_by_side(partial(train_one, preset="synth"), runs)  # doctest: +SKIP
    >>> results = values_or_raise(outcomes)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

__all__ = ["RunFailedError", "RunOutcome", "default_run_workers", "run_side_by_side", "values_or_raise"]


class RunFailedError(RuntimeError):
    """One or more runs raised or died; ``outcomes`` holds every run's outcome, the good ones too."""

    def __init__(self, message: str, outcomes: Sequence[RunOutcome]) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)


@dataclass
class RunOutcome:
    """What one run gave.

    Attributes:
        index: the run's position in ``configs``.
        config: its keyword arguments.
        value: ``fn``'s return value (``None`` when it failed).
        error: ``"ExceptionType: message"`` when it failed, else ``None``.
        traceback: the formatted traceback of the failure (in the child), else ``None``.
        seconds: the run's wall time, in its process.
    """

    index: int
    config: dict[str, Any]
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the run returned."""
        return self.error is None

    def describe_failure(self) -> str:
        """A report naming the run, its config, the error and the traceback."""
        return f"run {self.index} with config {self.config!r} failed: {self.error}\n{self.traceback or ''}"

    def unwrap(self) -> Any:
        """The value, or :class:`RunFailedError` with the run's config and traceback."""
        if not self.ok:
            raise RunFailedError(self.describe_failure(), [self])
        return self.value


def values_or_raise(outcomes: Sequence[RunOutcome]) -> list[Any]:
    """The values of ``outcomes`` in order, or one :class:`RunFailedError` describing every failed run."""
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if failed:
        report = "\n".join(outcome.describe_failure() for outcome in failed)
        raise RunFailedError(f"{len(failed)} of {len(outcomes)} runs failed:\n{report}", outcomes)
    return [outcome.value for outcome in outcomes]


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_run_workers(num_runs: int, threads_per_worker: int = 1, device: torch.device | str | None = None) -> int:
    """How many runs go at once: 0 (in this process, one after another) on CUDA, else one per
    ``threads_per_worker`` cores, at most ``num_runs``."""
    device_type = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type != "cpu":
        return 0
    return max(1, min(num_runs, _usable_cores() // max(threads_per_worker, 1)))


def _check_importable(fn: Callable[..., Any]) -> None:
    """Fail early, naming the function, when a spawned child could not import ``fn``."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    main = sys.modules.get("__main__")
    if getattr(target, "__module__", None) == "__main__" and not getattr(main, "__file__", None):
        raise TypeError(
            f"{getattr(target, '__qualname__', target)!r} is defined in an interactive session (a "
            "notebook); worker processes cannot import it. Move it to a module (e.g. the chapter's "
            "experiment.py) or pass workers=0"
        )
    try:
        pickle.dumps(fn)
    except Exception as error:
        raise TypeError(
            f"fn must be picklable to reach the worker processes (a top-level function of a module, "
            f"or functools.partial of one with picklable arguments): {type(error).__name__}: {error}"
        ) from error


def _call(fn: Callable[..., Any], index: int, config: dict[str, Any]) -> RunOutcome:
    """Run ``fn(**config)``, catching any exception into the outcome."""
    start = time.perf_counter()
    try:
        value = fn(**config)
    except Exception as error:
        return RunOutcome(
            index,
            config,
            error=f"{type(error).__name__}: {error}",
            traceback=traceback.format_exc(),
            seconds=time.perf_counter() - start,
        )
    return RunOutcome(index, config, value=value, seconds=time.perf_counter() - start)


def _worker_loop(fn: Callable[..., Any], threads: int, connection: Any) -> None:
    """A worker process: set the thread count once, then run ``(index, config)`` tasks until ``None``.

    Each outcome goes back pickled through ``connection`` before the next task is read: the send
    is synchronous, so a result is in the pipe before the worker can die in its next run.
    """
    torch.set_num_threads(threads)
    while True:
        task = connection.recv()
        if task is None:
            return
        index, config = task
        outcome = _call(fn, index, config)
        try:
            payload = pickle.dumps(outcome)  # plain pickle: tensors travel by value, no shared-memory handles
        except Exception as error:
            outcome = RunOutcome(
                index,
                config,
                error=f"the result could not be pickled: {type(error).__name__}: {error}",
                traceback=traceback.format_exc(),
                seconds=outcome.seconds,
            )
            payload = pickle.dumps(outcome)
        connection.send_bytes(payload)


class _Worker:
    """One spawned worker process, the pipe to it, and the run it is busy with."""

    def __init__(self, context: Any, fn: Callable[..., Any], threads: int, slot: int) -> None:
        self.connection, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_loop, args=(fn, threads, child_end), name=f"runs-worker-{slot}"
        )  # not daemonic: a run may start loader workers
        self.process.start()
        child_end.close()  # the child holds its own copy; the parent sees EOF when the child dies
        self.current: int | None = None  # the index of the run it is busy with

    def give(self, index: int, config: dict[str, Any]) -> None:
        self.connection.send((index, config))
        self.current = index

    def receive(self) -> RunOutcome | None:
        """The outcome of the current run, or ``None`` when the worker died without sending it."""
        try:
            return pickle.loads(self.connection.recv_bytes())
        except (EOFError, OSError):
            return None

    def stop(self, wait: bool = True) -> None:
        """Ask it to finish and wait for it (``wait=False``: terminate it at once)."""
        if wait and self.process.is_alive():
            try:
                self.connection.send(None)
            except OSError:  # it died meanwhile
                pass
        else:
            self.process.terminate()
        self.process.join()
        self.connection.close()


def run_side_by_side(
    fn: Callable[..., Any],
    configs: Sequence[Mapping[str, Any]],
    workers: int | None = None,
    threads_per_worker: int = 1,
    device: torch.device | str | None = None,
    desc: str = "runs",
    progress: bool = True,
) -> list[RunOutcome]:
    """Call ``fn(**config)`` for every config, ``workers`` processes at a time.

    Args:
        fn: a picklable, importable callable (a module's function or a ``functools.partial`` of one);
            its return value must be picklable (tensors, dicts, state dicts, models).
        configs: one mapping of keyword arguments per run.
        workers: processes at once; ``0`` runs everything in this process, one after another, with
            this process's thread count. Default :func:`default_run_workers` (0 on CUDA, one per core
            on the CPU).
        threads_per_worker: torch threads (``torch.set_num_threads``) in each worker process.
        device: the device the runs train on; only chooses the default ``workers``.
        desc: the progress bar's label.
        progress: show the bar (on stderr) and a line per failed run.

    Returns:
        One :class:`RunOutcome` per config, in the order of ``configs``; failed runs carry their
        error and traceback (see :func:`values_or_raise`).

    Raises:
        TypeError: ``fn`` cannot reach a worker process (not picklable, or defined in a notebook).
        ValueError: ``workers < 0``, ``threads_per_worker < 1``, or a config that is not a mapping.
    """
    if threads_per_worker < 1:
        raise ValueError(f"threads_per_worker must be >= 1, got {threads_per_worker}")
    for index, config in enumerate(configs):
        if not isinstance(config, Mapping):
            raise ValueError(f"configs[{index}] must be a mapping of keyword arguments, got {type(config).__name__}")
    runs = [dict(config) for config in configs]
    if workers is None:
        workers = default_run_workers(len(runs), threads_per_worker, device)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    bar = tqdm(total=len(runs), desc=desc, unit="run", disable=not progress)
    try:
        if workers == 0:
            outcomes = []
            for index, config in enumerate(runs):
                outcomes.append(_report(_call(fn, index, config), bar, progress))
            return outcomes
        _check_importable(fn)
        return _run_in_processes(fn, runs, workers, threads_per_worker, bar, progress)
    finally:
        bar.close()


def _report(outcome: RunOutcome, bar: tqdm, progress: bool) -> RunOutcome:
    if not outcome.ok and progress:
        tqdm.write(f"run {outcome.index} failed (config {outcome.config!r}): {outcome.error}", file=sys.stderr)
    bar.update(1)
    return outcome


def _run_in_processes(
    fn: Callable[..., Any], runs: list[dict[str, Any]], workers: int, threads: int, bar: tqdm, progress: bool
) -> list[RunOutcome]:
    """Keep up to ``workers`` spawned worker processes busy, each running one run after another.

    A worker is started once and runs many runs, so its start-up (Python, torch, the chapter's
    modules: several seconds) and the images it decoded (see ``ImageDataset``) are paid once per
    worker, not once per run. A worker that dies takes only its current run with it: that run is
    reported failed and a fresh worker takes its place.
    """
    context = mp.get_context("spawn")
    pool = [_Worker(context, fn, threads, slot) for slot in range(min(workers, len(runs)))]
    outcomes: dict[int, RunOutcome] = {}
    next_run = 0
    try:
        while len(outcomes) < len(runs):
            for slot, worker in enumerate(pool):
                if worker.current is None and next_run < len(runs):
                    if not worker.process.is_alive():  # died between runs: replace it
                        worker.stop(wait=False)
                        worker = pool[slot] = _Worker(context, fn, threads, slot)
                    worker.give(next_run, runs[next_run])
                    next_run += 1
            busy = {worker.connection: worker for worker in pool if worker.current is not None}
            for connection in mp_connection.wait(list(busy)):  # a result, or EOF from a dead worker
                worker = busy[connection]
                index, outcome = worker.current, worker.receive()
                worker.current = None
                if outcome is None:
                    worker.process.join()
                    error = (
                        f"the worker process ended without a result (exit code {worker.process.exitcode}: a negative "
                        "code is the signal that killed it, -9 when out of memory; a worker that failed to import fn "
                        "prints why on stderr)"
                    )
                    outcome = RunOutcome(index, runs[index], error=error)  # replaced above when a run is left
                outcomes[index] = _report(outcome, bar, progress)
    finally:
        done = len(outcomes) == len(runs)  # else an interrupt or an error of this loop: stop at once
        for worker in pool:
            worker.stop(wait=done)
    return [outcomes[index] for index in range(len(runs))]
