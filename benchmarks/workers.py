"""Worker processes for the benchmarks: each pinned to its own core with one torch thread, so that
concurrent runs get the same compute (DESIGN, section 7: equal compute in one run)."""

from __future__ import annotations

import os
import subprocess
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


def source_commit() -> str:
    """The git commit results are measured at (``+dirty`` with uncommitted changes to tracked
    files); ``SIMPLEXDIFF_COMMIT`` where the tree is no git checkout (the GPU machine)."""
    commit = os.environ.get("SIMPLEXDIFF_COMMIT")
    if commit:
        return commit
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
