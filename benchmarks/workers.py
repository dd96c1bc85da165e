"""Worker processes for the benchmarks: each pinned to its own core with one torch thread, so that
concurrent runs get the same compute (DESIGN, section 7: equal compute in one run)."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

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


BACKBONE = {"d_model": 128, "n_layers": 4, "n_heads": 4}
"""The small backbone the conditional benchmarks (``instruct.py``, ``reversal.py``) train, with
today's defaults (adjacent rotary pairs, tied head)."""


def budget_recipe(
    family: str,
    corpus: str | Path,
    out_dir: str | Path,
    budget_s: float,
    seed: int,
    seq_len: int,
    overrides: tuple[str, ...] = (),
):
    """The recipe of one family of an equal-compute benchmark: the small ``BACKBONE`` (causal for
    the autoregressive path), batch 64, and training that stops after ``budget_s`` seconds."""
    from simplexdiff.recipe import load_recipe

    minutes, seconds = divmod(int(budget_s), 60)
    return load_recipe(
        None,
        [
            f"seed={seed}",
            f"out_dir={out_dir}",
            f"data.corpus={corpus}",
            f"data.seq_len={seq_len}",
            "data.batch_size=64",
            f"data.cache_dir={out_dir}/cache",
            f"path.name={family}",
            f"model.name={'causal' if family == 'ar' else 'dit'}",
            *(f"model.{k}={v}" for k, v in BACKBONE.items()),
            "optim.lr=1e-3",
            "optim.warmup_steps=100",
            "trainer.max_steps=1000000",
            f"trainer.max_time=00:00:{minutes:02d}:{seconds:02d}",
            "trainer.val_check_interval=100000",
            "trainer.limit_val_batches=4",
            "sample.num=4",
            f"sample.length={seq_len}",
            f"sample.steps={seq_len}",
            *overrides,
        ],
    )


def run_families(jobs: int, task, families, *args) -> list:
    """``task(family, *args)`` for every family on a ``pinned_pool`` of ``jobs`` workers, in
    order."""
    with pinned_pool(jobs) as pool:
        futures = [pool.submit(task, family, *args) for family in families]
        return [f.result() for f in futures]


def write_report(out: str | Path, report: dict, markdown, commit: str) -> None:
    """``report`` with its provenance (machine, versions, and ``commit``, the ``source_commit()``
    taken when the run started) as ``out.json``, and ``markdown(report)`` as ``out.md`` (also
    printed)."""
    import platform

    from simplexdiff.cli import finite_or_null, machine

    report = report | {
        "machine": machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": commit,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = finite_or_null(report)  # strict JSON: an infinite bound is null
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
