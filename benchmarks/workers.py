"""Worker processes for the benchmarks: each pinned to its own core with one torch thread, so that
concurrent runs get the same compute (DESIGN, section 7: equal compute in one run)."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch


def _pin(cores) -> None:
    core = cores.get()
    if core is not None:
        os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)


def pinned_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawned workers, worker ``i`` on the ``i``-th core this process may use (round
    robin when there are fewer cores than jobs), one torch thread each."""
    ctx = get_context("spawn")
    cores = ctx.Queue()
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
    for i in range(jobs):
        cores.put(allowed[i % len(allowed)])
    return ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_pin, initargs=(cores,))
