"""The continuous paths' flow bound with each decoder and decode time, on trained checkpoints.

    python benchmarks/flow_decoders.py --runs benchmarks/results/text8_side_by_side_15min.json

The dequantized flow bound (``simplexdiff.eval.flow_bound``) bounds the NLL of "run the learned
flow to ``t*``, then decode": ``kernel`` decodes each position with the path's kernel posterior
under a uniform token law, ``model`` draws each token from the denoiser's prediction at ``t*``
(which reads the context). Both are valid bounds of their discrete model; this measures which is
tighter where. For each continuous checkpoint of the side-by-side JSON, each ``--decoders`` and each
``--decode-times``: ``sd.eval.likelihood`` on the first ``--sequences`` test chunks with
``--ode-steps`` midpoint steps and one Hutchinson probe, the same seed for every cell of a
checkpoint (at one ``t*`` the two decoders share their draws and ODE: their difference is paired).
Cells run in ``--jobs`` pinned one-thread workers. Writes JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from concurrent.futures import as_completed
from pathlib import Path

import torch
from side_by_side import test_chunks
from workers import pinned_pool, source_commit

import simplexdiff as sd
from simplexdiff.cli import machine
from simplexdiff.paths.continuous import FLOW_BOUND, FLOW_BOUND_DECODERS


def cell(run: dict, decoder: str, decode_time: float, args) -> dict:
    """One checkpoint's bound with one decoder at one decode time."""
    lm = sd.DiffusionLM.load(run["checkpoint"])
    _, tokens = test_chunks(run, args.sequences)
    start = time.perf_counter()
    stats = sd.eval.likelihood(
        lm, tokens, batch_size=32, generator=torch.Generator().manual_seed(args.seed),
        decode_time=decode_time, ode_steps=args.ode_steps, decoder=decoder,
    )  # fmt: skip
    return {
        "recipe": Path(run["recipe"]).stem,
        "checkpoint": run["checkpoint"],
        "decoder": decoder,
        "decode_time": decode_time,
        "bpc": stats["bpc"],
        "bpc_stderr": stats["bpc_stderr"],
        "prior_support_violations": stats["settings"]["prior_support_violations"],
        "per_sequence_nats": stats["nats"],
        "num_tokens": stats["num_tokens"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def paired(row: dict, base: dict) -> tuple[float, float]:
    """Mean and standard error of ``row - base`` per sequence, in bits per token."""
    nats = zip(row["per_sequence_nats"], base["per_sequence_nats"], strict=True)
    per_token = row["num_tokens"] / len(row["per_sequence_nats"]) * math.log(2)
    d = [(a - b) / per_token for a, b in nats]
    return statistics.mean(d), statistics.stdev(d) / math.sqrt(len(d))


def markdown(report: dict) -> str:
    lines = [
        f"Machine: {report['machine']}; commit {report['commit']}; first {report['sequences']} "
        f"test chunks, {report['ode_steps']} ODE steps, seed {report['seed']}",
        "",
        "| recipe | t* | decoder | bound (bits/char) | ± 1 s.e. | model - kernel (paired) "
        "| support violations |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = report["rows"]
    for r in rows:
        base = next(
            (b for b in rows if b["recipe"] == r["recipe"] and b["decode_time"] == r["decode_time"]
             and b["decoder"] == "kernel"),
            None,
        )  # fmt: skip
        diff = "-"
        if r["decoder"] == "model" and base is not None:
            mean, se = paired(r, base)
            diff = f"{mean:+.3f} ± {se:.3f}"
        lines.append(
            f"| {r['recipe']} | {r['decode_time']} | {r['decoder']} | {r['bpc']:.3f} | "
            f"{r['bpc_stderr']:.3f} | {diff} | {r['prior_support_violations']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="benchmarks/results/text8_side_by_side_15min.json")
    p.add_argument(
        "--decoders", nargs="+", choices=FLOW_BOUND_DECODERS, default=list(FLOW_BOUND_DECODERS)
    )
    p.add_argument("--decode-times", nargs="+", type=float, default=[0.3, 0.5])
    p.add_argument("--sequences", type=int, default=32)
    p.add_argument("--ode-steps", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="concurrent pinned one-thread workers")
    p.add_argument("--out", default="benchmarks/results/flow_decoders.json")
    args = p.parse_args()
    torch.set_num_threads(1)  # as in every worker: machine() names it
    runs = json.loads(Path(args.runs).read_text())["rows"]
    runs = [r for r in runs if r.get("bound") == FLOW_BOUND]
    cells = [(r, d, t) for r in runs for t in args.decode_times for d in args.decoders]
    order = {(Path(r["recipe"]).stem, d, t): i for i, (r, d, t) in enumerate(cells)}
    report = {
        "machine": machine(),
        "commit": source_commit(),
        "runs": args.runs,
        "sequences": args.sequences,
        "ode_steps": args.ode_steps,
        "seed": args.seed,
        "rows": [],
    }
    with pinned_pool(args.jobs) as pool:
        futures = [pool.submit(cell, *c, args) for c in cells]
        for future in as_completed(futures):
            row = future.result()
            report["rows"].append(row)
            report["rows"].sort(key=lambda r: order[(r["recipe"], r["decoder"], r["decode_time"])])
            print(
                f"{row['recipe']:>10} t*={row['decode_time']} {row['decoder']:>6}: "
                f"{row['bpc']:.3f} ± {row['bpc_stderr']:.3f} ({row['seconds']:.0f} s)",
                flush=True,
            )
            Path(args.out).write_text(json.dumps(report, indent=2))
    Path(args.out).with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
