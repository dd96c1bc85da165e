"""Steps-vs-quality sweep of every sampler on the side-by-side text8 checkpoints (issue 4).

    python benchmarks/sampler_sweep.py --runs benchmarks/results/text8_side_by_side_15min.json

For each checkpoint listed in the side-by-side JSON and each sampler that applies to its path, draws
``--samples`` sequences of ``--length`` chars at each of ``--steps`` (the AR baseline fills one
position per step, so it runs once, at ``length`` steps) and measures them with
``simplexdiff.eval.sample_metrics``: bits per char under the side-by-side's AR checkpoint (the
reference), unigram entropy, word validity, character n-gram KL against the test split; plus the
denoiser calls and seconds. Cells run in ``--jobs`` worker processes, each pinned to its own core
with one torch thread (every cell seeds its draws: the rows do not depend on ``--jobs``). Writes
JSON and a Markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import as_completed
from pathlib import Path

import torch
from workers import pinned_pool

import simplexdiff as sd
from simplexdiff.cli import machine
from simplexdiff.eval import sample_metrics, train_reference
from simplexdiff.eval.samples import draw_samples
from simplexdiff.samplers import SAMPLERS as SAMPLER_REGISTRY

SAMPLERS = {  # those that apply to the path are run
    "continuous": ["euler", "midpoint", "grw"],
    "discrete": ["ancestral", "remask", "confidence"],
    "autoregressive": ["ancestral"],
}


def samplers_for(path: sd.paths.Path) -> list[str]:
    """The samplers of ``SAMPLERS`` that apply to ``path``."""
    return [n for n in SAMPLERS[path.family] if SAMPLER_REGISTRY.build(n).fits(path)]


def sweep_cell(run: dict, sampler: str, steps: int, args, reference: str | None) -> dict:
    """Samples of one checkpoint with one sampler at one step count, and their metrics."""
    lm = sd.DiffusionLM.load(run["checkpoint"])
    train = train_reference(lm.data_config["corpus"] if lm.data_config else "text8")
    ref = sd.DiffusionLM.load(reference) if reference else None
    texts, nfe, secs = draw_samples(
        lm, args.samples, args.length, steps, sampler, args.seed, args.batch
    )
    return {
        "recipe": Path(run["recipe"]).stem,
        "sampler": sampler,
        "steps": steps,
        "nfe": nfe,
        "seconds": round(secs, 1),
        **sample_metrics(texts, train, ref),
        "example": texts[0][:120],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="benchmarks/results/text8_side_by_side_15min.json")
    p.add_argument("--steps", nargs="+", type=int, default=[16, 32, 64, 128, 256])
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipes", nargs="*", default=None, help="only these (default: all)")
    p.add_argument("--out", default="benchmarks/results/text8_sampler_sweep.json")
    p.add_argument("--jobs", type=int, default=1, help="concurrent pinned one-thread workers")
    args = p.parse_args()
    torch.set_num_threads(1)  # as in every worker: machine() names it
    runs = json.loads(Path(args.runs).read_text())["rows"]
    ar = [r for r in runs if Path(r["recipe"]).stem == "ar"]
    reference = ar[0]["checkpoint"] if ar else None
    # cells already in --out are kept, not redrawn (a sweep can run in parts)
    rows = json.loads(Path(args.out).read_text())["rows"] if Path(args.out).exists() else []
    done = {(r["recipe"], r["sampler"], r["steps"]) for r in rows}
    cells = []
    for run in runs:
        name = Path(run["recipe"]).stem
        if args.recipes is not None and name not in args.recipes:
            continue
        path = sd.paths.build(**run["path"])
        family = path.family
        for sampler in samplers_for(path):
            for steps in [args.length] if family == "autoregressive" else args.steps:
                if (name, sampler, steps) not in done:
                    cells.append((run, sampler, steps))
    order = {(Path(r["recipe"]).stem, s, n): i for i, (r, s, n) in enumerate(cells)}
    with pinned_pool(args.jobs) as pool:
        futures = [pool.submit(sweep_cell, *cell, args, reference) for cell in cells]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            rows.sort(key=lambda r: order.get((r["recipe"], r["sampler"], r["steps"]), -1))
            print(
                f"{row['recipe']:>10} {row['sampler']:>10} {row['steps']:>4} steps  "
                f"nfe {row['nfe']:>5}  ref bpc {row.get('reference_bpc', float('nan')):.3f}  "
                f"entropy {row['unigram_entropy']:.3f}  words {row['word_validity']:.3f}  "
                f"{row['seconds']:.0f} s",
                flush=True,
            )
            report = {
                "machine": machine(),
                "jobs": args.jobs,
                "runs": args.runs,
                "reference": reference,
                "settings": vars(args),
                "rows": rows,
            }
            Path(args.out).write_text(json.dumps(report, indent=2))
    lines = [
        "| recipe | sampler | steps | NFE | ref-AR bpc | entropy | word validity | 2-gram KL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['sampler']} | {r['steps']} | {r['nfe']} | "
            f"{r.get('reference_bpc', float('nan')):.3f} | {r['unigram_entropy']:.3f} | "
            f"{r['word_validity']:.3f} | {r['ngram_kl_2']:.3f} |"
        )
    table = "\n".join(lines)
    Path(args.out).with_suffix(".md").write_text(
        f"Machine: {machine()}\n\n{args.samples} samples of {args.length} chars per cell, seed "
        f"{args.seed}; reference AR: {ar[0]['checkpoint'] if ar else 'none'}\n\n{table}\n"
    )
    print(table)


if __name__ == "__main__":
    main()
