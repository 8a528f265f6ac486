"""Run one benchmark case in a fresh child process and read back its time and peak memory.

Each case runs in its own ``spawn``-ed process so that peaks do not pollute each other:
the child's ``ru_maxrss`` (resource.getrusage) is the largest resident set it ever had,
inputs included. The child reports its resident set just before the timed call too
("inputs"), so the method's own share is ``peak - inputs`` at most.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import resource
import sys
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["run_isolated", "current_rss_bytes"]


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc), in bytes; 0 where unavailable."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _child(target: Callable[..., dict[str, Any]], kwargs: dict[str, Any], queue: mp.Queue[dict[str, Any]]) -> None:
    try:
        result = target(**kwargs)
        result.setdefault("peak_bytes", _peak_rss_bytes())  # a case may report the peak of its main part
    except BaseException as error:  # the parent reports it; a MemoryError is a result too
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    queue.put(result)


def run_isolated(target: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """Call ``target(**kwargs)`` in a spawned child; return its dict plus ``peak_bytes``.

    Args:
        target: a module-level function returning a dict of results (e.g. seconds, inputs_bytes).
        **kwargs: its arguments (picklable).

    Returns:
        The child's dict with ``peak_bytes`` added, or ``{"error": ...}`` if it raised or died.
    """
    ctx = mp.get_context("spawn")
    queue: mp.Queue[dict[str, Any]] = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, kwargs, queue))
    proc.start()
    while True:  # read before join (a queued result keeps the child alive); notice a killed child
        try:
            result = queue.get(timeout=5.0)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                result = {"error": f"child died without a result (exit code {proc.exitcode}; killed for memory?)"}
                break
    proc.join()
    if proc.exitcode not in (0, None) and "error" not in result:
        result["error"] = f"child exited with code {proc.exitcode}"
    return result
