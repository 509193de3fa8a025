"""Every call of a batch runs in a process of its own, with or without Ray: libsumo 1.28 does not repeat a run
exactly in a process that ran another (cologne1 under Advanced-MP, 600 s: the third run of four in one process
ends at 25.5929 s of delay against 25.5832 s), so a shared process would make results depend on their order."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from citysignal.bench.episode import run_episode
from citysignal.bench.parallel import map_fresh
from citysignal.scenarios import resolve


def pid() -> int:
    return os.getpid()


def test_each_call_gets_a_process_of_its_own() -> None:
    pids = map_fresh(pid, [()] * 3, workers=1)
    assert len(set(pids)) == 3 and os.getpid() not in pids


@pytest.mark.parametrize("workers", [1, 2])
def test_repeats_of_one_episode_agree(workers: int) -> None:
    """Three runs per process at least, were processes shared (two Ray workers for six runs)."""
    sc = resolve("cologne1", 25200, 25800)
    runs = map_fresh(run_episode, [(sc, "advanced_mp", 23423)] * 6, workers=workers)
    assert len({(r.metrics["resco_delay"], r.metrics["arrived"]) for r in runs}) == 1


@pytest.mark.parametrize("together", [False, True])
def test_together_starts_every_call_at_once(together: bool) -> None:
    """Three calls on two CPUs: the third once a CPU is free, or all three at once sharing them (a what-if
    race). Each call prints when it started and ended (a function from the standard library: Ray's workers
    import a task's function by name, and cannot import a test module)."""
    script = [sys.executable, "-c", "import time; s = time.time(); time.sleep(3); print(s, time.time())"]
    runs = map_fresh(subprocess.check_output, [(script,)] * 3, workers=2, together=together)
    spans = [tuple(float(t) for t in out.split()) for out in runs]
    overlap = max(start for start, _ in spans) < min(end for _, end in spans)
    assert overlap == together
