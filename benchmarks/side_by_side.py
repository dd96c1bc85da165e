"""Equal-compute side-by-side of text8 recipes: each trains for the same wall-clock budget on this
machine, one after the other in one run, then its test-split likelihood bound is measured.

    python benchmarks/side_by_side.py --recipes ar masked uniform --minutes 15

For each ``recipes/text8/NAME.yaml``: a short timing of its training step sets ``max_steps`` (30%
above what the budget allows, so the warm-up + cosine learning-rate schedule is most of the way
down when ``max_time`` stops training at the budget). Then ``sd.eval.likelihood`` scores the first
``--eval-sequences`` test chunks (``num_t`` stratified times per sequence for NELBO bounds).
Writes JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import simplexdiff as sd
from simplexdiff.cli import build, machine, train
from simplexdiff.lightning import stratified_times
from simplexdiff.recipe import load_recipe


def step_seconds(cfg, repeats: int = 3) -> float:
    """Median seconds of one optimiser step of the recipe's model on a random batch."""
    _, lm = build(cfg)
    opt = torch.optim.AdamW(lm.model.parameters(), lr=1e-4)
    x1 = torch.randint(0, lm.path.vocab_size, (cfg.data.batch_size, cfg.data.seq_len))
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        t = lm.path.training_times(stratified_times(x1.shape[0]))
        loss = lm.path.training_loss(lm.model, x1, t).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first call warms up
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["ar", "masked", "uniform"])
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--eval-sequences", type=int, default=256)
    p.add_argument("--num-t", type=int, default=16)
    p.add_argument("--out", default="benchmarks/results/side_by_side.json")
    p.add_argument("--runs", default="runs/side_by_side")
    p.add_argument("overrides", nargs="*", help="dotlist applied to every recipe")
    args = p.parse_args()
    budget = 60 * args.minutes
    hms = time.strftime("%H:%M:%S", time.gmtime(budget))
    rows = []
    for name in args.recipes:
        recipe = Path("recipes/text8") / f"{name}.yaml"
        cfg = load_recipe(recipe, [f"out_dir={args.runs}/{name}", *args.overrides])
        per_step = step_seconds(cfg)
        # plan 30% more steps than the probe predicts, so the wall-clock cap is what stops training
        # (a short probe overestimated the step time by ~15% here: runs ended early on max_steps)
        steps = max(10, int(1.3 * budget / per_step))
        cfg = load_recipe(
            recipe,
            [
                f"out_dir={args.runs}/{name}",
                f"trainer.max_time=00:{hms}",
                f"trainer.max_steps={steps}",
                *args.overrides,
            ],
        )
        print(f"== {name}: {per_step:.2f} s/step measured, max_steps {steps}, budget {hms}")
        result = train(cfg)
        lm = sd.DiffusionLM.load(result["checkpoint"])
        dm = sd.data.TextDataModule(**cfg.data)
        tokens = dm.split("test")[: args.eval_sequences]
        row = {
            "recipe": str(recipe),
            "path": lm.path.config(),
            "steps": result["steps"],
            "train_seconds": result["train_seconds"],
            "planned_steps": steps,
            "seconds_per_step_measured": per_step,
            "checkpoint": result["checkpoint"],
            "samples": result["samples"],
            "seed": cfg.seed,
        }
        if lm.path.bound is None:
            row |= {"bound": None, "test_bpc": None, "val_x1_ce_bits": result.get("val_x1_ce_bits")}
        else:
            gen = torch.Generator().manual_seed(cfg.seed)
            stats = sd.eval.likelihood(lm, tokens, num_t=args.num_t, generator=gen)
            row |= {
                "bound": stats["bound"],
                "test_bpc": stats["bpc"],
                "test_bpc_stderr": stats["bpc_stderr"],
                "num_t": stats["num_t"],
                "eval_tokens": stats["num_tokens"],
            }
        rows.append(row)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine(),
            "budget_seconds": budget,
            "split": "test",
            "eval_sequences": args.eval_sequences,
            "rows": rows,
        }
        Path(args.out).write_text(
            json.dumps(report, indent=2)
        )  # after each row: a crash keeps some
    lines = [
        "| recipe | bound | test bpc | ± (1 s.e.) | steps | train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        bpc = "n/a" if r["test_bpc"] is None else f"{r['test_bpc']:.3f}"
        se = "" if r["test_bpc"] is None else f"{r['test_bpc_stderr']:.3f}"
        lines.append(
            f"| {Path(r['recipe']).stem} | {r['bound']} | {bpc} | {se} | {r['steps']} | "
            f"{r['train_seconds']:.0f} |"
        )
    table = "\n".join(lines)
    Path(args.out).with_suffix(".md").write_text(
        f"Machine: {machine()}\n\nBudget {hms} each, test split first {args.eval_sequences} "
        f"chunks\n\n{table}\n"
    )
    print(table)


if __name__ == "__main__":
    main()
