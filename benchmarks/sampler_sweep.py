"""Steps-vs-quality sweep of every sampler on the side-by-side text8 checkpoints (issue 4).

    python benchmarks/sampler_sweep.py --runs benchmarks/results/text8_side_by_side_15min.json

For each checkpoint listed in the side-by-side JSON and each sampler that applies to its path, draws
``--samples`` sequences of ``--length`` chars at each of ``--steps`` (the AR baseline fills one
position per step, so it runs once, at ``length`` steps) and measures them with
``simplexdiff.eval.sample_metrics``: bits per char under the side-by-side's AR checkpoint (the
reference), unigram entropy, word validity, character n-gram KL against the test split; plus the
denoiser calls and seconds. Writes JSON and a Markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import simplexdiff as sd
from simplexdiff.cli import machine
from simplexdiff.eval import sample_metrics, train_reference
from simplexdiff.eval.samples import draw_samples
from simplexdiff.samplers import SAMPLERS as SAMPLER_REGISTRY

SAMPLERS = {  # those that apply to the path are run
    "continuous": ["euler", "midpoint"],
    "discrete": ["ancestral", "remask", "confidence"],
    "autoregressive": ["ancestral"],
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
    args = p.parse_args()
    runs = json.loads(Path(args.runs).read_text())["rows"]
    ar = [r for r in runs if Path(r["recipe"]).stem == "ar"]
    reference = sd.DiffusionLM.load(ar[0]["checkpoint"]) if ar else None
    # cells already in --out are kept, not redrawn (a sweep can run in parts)
    rows = json.loads(Path(args.out).read_text())["rows"] if Path(args.out).exists() else []
    done = {(r["recipe"], r["sampler"], r["steps"]) for r in rows}
    for run in runs:
        if args.recipes is not None and Path(run["recipe"]).stem not in args.recipes:
            continue
        lm = sd.DiffusionLM.load(run["checkpoint"])
        train = train_reference(lm.data_config["corpus"] if lm.data_config else "text8")
        family = lm.path.family
        for sampler in [n for n in SAMPLERS[family] if SAMPLER_REGISTRY.build(n).fits(lm.path)]:
            for steps in [args.length] if family == "autoregressive" else args.steps:
                if (Path(run["recipe"]).stem, sampler, steps) in done:
                    continue
                texts, nfe, secs = draw_samples(
                    lm, args.samples, args.length, steps, sampler, args.seed, args.batch
                )
                metrics = sample_metrics(texts, train, reference)
                row = {
                    "recipe": Path(run["recipe"]).stem,
                    "sampler": sampler,
                    "steps": steps,
                    "nfe": nfe,
                    "seconds": round(secs, 1),
                    **metrics,
                    "example": texts[0][:120],
                }
                rows.append(row)
                print(
                    f"{row['recipe']:>10} {sampler:>10} {steps:>4} steps  nfe {nfe:>5}  "
                    f"ref bpc {metrics.get('reference_bpc', float('nan')):.3f}  "
                    f"entropy {metrics['unigram_entropy']:.3f}  "
                    f"words {metrics['word_validity']:.3f}  {secs:.0f} s",
                    flush=True,
                )
                report = {
                    "machine": machine(),
                    "runs": args.runs,
                    "reference": ar[0]["checkpoint"] if ar else None,
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
