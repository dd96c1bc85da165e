"""Equal-compute side-by-side of text8 recipes: each trains for the same wall-clock budget on this
machine in one run, then its test-split likelihood bound is measured.

    python benchmarks/side_by_side.py --recipes ar masked uniform --minutes 15 --jobs 2

Recipes run in ``--jobs`` worker processes, each pinned to its own core with one torch thread
(``--jobs 1``: one after the other on one core), so every row gets the same compute.

For each ``recipes/text8/NAME.yaml``: a short timing of its training step sets ``max_steps`` (30%
above what the budget allows, so the warm-up + cosine learning-rate schedule is most of the way
down when ``max_time`` stops training at the budget). Then ``sd.eval.likelihood`` scores the first
``--eval-sequences`` test chunks (``num_t`` stratified times per sequence for NELBO bounds; the
continuous paths' dequantized flow bound with ``--ode-steps``), and ``--samples`` samples at
``--sample-steps`` are measured under the AR recipe's checkpoint (the reference). Training comes
first for every recipe, evaluation after; ``--eval-only`` re-evaluates the rows of ``--out``.
Writes JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from concurrent.futures import as_completed
from pathlib import Path

import torch
from workers import pinned_pool

import simplexdiff as sd
from simplexdiff.cli import build, machine, train
from simplexdiff.eval import sample_metrics, train_reference
from simplexdiff.eval.samples import draw_samples
from simplexdiff.lightning import stratified_times
from simplexdiff.recipe import load_recipe

SLOW = ("fisher_rao", "linear", "dirichlet")  # recipes whose bound is the dequantized flow bound


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


def train_row(name: str, args, budget: float) -> dict:
    """Train one recipe for the budget; the row of what ran."""
    hms = time.strftime("%H:%M:%S", time.gmtime(budget))
    recipe = Path("recipes/text8") / f"{name}.yaml"
    cfg = load_recipe(recipe, [f"out_dir={args.runs}/{name}", *args.overrides])
    per_step = step_seconds(cfg)
    # plan 30% more steps than the probe predicts, so the wall-clock cap is what stops training
    # (a short probe overestimated the step time by ~15% here: runs ended early on max_steps)
    steps = max(10, int(1.3 * budget / per_step))
    overrides = [f"trainer.max_time=00:{hms}", f"trainer.max_steps={steps}"]
    cfg = load_recipe(recipe, [f"out_dir={args.runs}/{name}", *overrides, *args.overrides])
    print(f"== {name}: {per_step:.2f} s/step measured, max_steps {steps}, budget {hms}")
    result = train(cfg)
    return {
        "recipe": str(recipe),
        "steps": result["steps"],
        "train_seconds": result["train_seconds"],
        "planned_steps": steps,
        "seconds_per_step_measured": per_step,
        "checkpoint": result["checkpoint"],
        "seed": cfg.seed,
        "data": dict(cfg.data),
    }


def run_all(fn, items: list, args, *extra) -> Iterator[dict[int, dict]]:
    """``fn(item, args, *extra)`` for each item in ``--jobs`` pinned workers; yields the results
    so far by item index after each one finishes (the caller writes ``--out``: a crash keeps
    what finished)."""
    done: dict[int, dict] = {}
    with pinned_pool(args.jobs) as pool:
        futures = {pool.submit(fn, item, args, *extra): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            yield done


def test_chunks(row: dict, n: int) -> tuple[dict, torch.Tensor]:
    """A row's data settings and the first ``n`` chunks of its corpus's test split."""
    data = row.get("data") or {"corpus": "text8", "seq_len": 256}
    dm = sd.data.TextDataModule(corpus=data["corpus"], seq_len=data["seq_len"])
    return data, dm.split("test")[:n]


def evaluate(row: dict, args, reference_checkpoint: str | None) -> dict:
    """The test-split bound (every family's strongest valid one) and sample metrics at
    ``--sample-steps`` with the path's default sampler, under the AR reference checkpoint."""
    lm = sd.DiffusionLM.load(row["checkpoint"])
    reference = sd.DiffusionLM.load(reference_checkpoint) if reference_checkpoint else None
    data, tokens = test_chunks(row, args.eval_sequences)
    gen = torch.Generator().manual_seed(row["seed"])
    start = time.perf_counter()
    reused = row.get("bound") == lm.path.bound and row.get("test_bpc") is not None
    if reused:  # measured already
        stats = {
            "bound": row["bound"],
            "bpc": row["test_bpc"],
            "bpc_stderr": row["test_bpc_stderr"],
            "settings": row.get("bound_settings", {"num_t": row.get("num_t")}),
            "num_tokens": row["eval_tokens"],
        }
    else:
        stats = sd.eval.likelihood(
            lm, tokens, num_t=args.num_t, batch_size=32, generator=gen, ode_steps=args.ode_steps
        )
    # the AR baseline fills one position per step: it needs as many steps as positions
    steps = data["seq_len"] if lm.path.family == "autoregressive" else args.sample_steps
    texts, nfe, sample_seconds = draw_samples(
        lm, args.samples, data["seq_len"], steps, seed=row["seed"]
    )
    train_ref = train_reference(data["corpus"])
    return row | {
        "path": lm.path.config(),
        "bound": stats["bound"],
        "test_bpc": stats["bpc"],
        "test_bpc_stderr": stats["bpc_stderr"],
        "bound_settings": stats["settings"],
        "eval_tokens": stats["num_tokens"],
        "bound_seconds": row["bound_seconds"]
        if reused
        else round(time.perf_counter() - start - sample_seconds, 1),
        "sampler": lm.path.default_sampler,
        "sample_steps": steps,
        "sample_nfe": nfe,
        "sample_metrics": sample_metrics(texts, train_ref, reference),
        "samples": texts[:2],
    }


def write(args, budget: float, rows: list[dict]) -> None:
    report = {
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "jobs": getattr(args, "train_jobs", args.jobs),
        "budget_seconds": budget,
        "split": "test",
        "eval_sequences": args.eval_sequences,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))  # after each row: a crash keeps some


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--recipes",
        nargs="+",
        default=["ar", "masked", "uniform", "fisher_rao", "linear", "dirichlet"],
    )
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--eval-sequences", type=int, default=256)
    p.add_argument("--num-t", type=int, default=16, help="NELBO times per sequence")
    p.add_argument("--ode-steps", type=int, default=32, help="continuous paths' bound")
    p.add_argument("--samples", type=int, default=16, help="samples for the sample metrics")
    p.add_argument("--sample-steps", type=int, default=128)
    p.add_argument("--eval-only", action="store_true", help="evaluate the rows of --out again")
    p.add_argument("--jobs", type=int, default=1, help="concurrent pinned one-thread workers")
    p.add_argument("--out", default="benchmarks/results/side_by_side.json")
    p.add_argument("--runs", default="runs/side_by_side")
    p.add_argument("overrides", nargs="*", help="dotlist applied to every recipe")
    args = p.parse_args()
    torch.set_num_threads(1)  # as in every worker: machine() names it
    if args.eval_only:
        saved = json.loads(Path(args.out).read_text())
        budget, rows = saved["budget_seconds"], saved["rows"]
        args.train_jobs = saved.get("jobs", 1)  # the report's jobs: how the rows were trained
    else:
        budget = 60 * args.minutes
        for done in run_all(train_row, args.recipes, args, budget):
            rows = [done[i] for i in sorted(done)]
            write(args, budget, rows)
    ar = [r for r in rows if Path(r["recipe"]).stem == "ar"]
    reference = ar[0]["checkpoint"] if ar else None
    # the flow bounds take longest: they go first, so the workers finish together
    order = sorted(range(len(rows)), key=lambda i: Path(rows[i]["recipe"]).stem not in SLOW)
    for done in run_all(evaluate, [rows[i] for i in order], args, reference):
        rows = [done.get(order.index(i), row) for i, row in enumerate(rows)]
        write(args, budget, rows)
        print(f"== evaluated {len(done)} of {len(rows)}")
    print(markdown(json.loads(Path(args.out).read_text()), args))


def markdown(report: dict, args) -> str:
    """The Markdown table of a side-by-side report, written beside ``--out``; rows not evaluated
    yet show their training only."""
    lines = [
        "| recipe | bound | test bpc | ± 1 s.e. | steps | train s | ref-AR bpc of samples | "
        "sample entropy | word validity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        m = r.get("sample_metrics", {})
        cells = [r.get("test_bpc"), r.get("test_bpc_stderr")]
        cells += [m.get(k) for k in ("reference_bpc", "unigram_entropy", "word_validity")]
        f = [f"{c:.3f}" if c is not None else "not evaluated" for c in cells]
        lines.append(
            f"| {Path(r['recipe']).stem} | {r.get('bound', '-')} | {f[0]} | {f[1]} | "
            f"{r['steps']} | {r['train_seconds']:.0f} | {f[2]} | {f[3]} | {f[4]} |"
        )
    text = (
        f"Machine: {report['machine']}\n\nBudget {report['budget_seconds'] / 60:.0f} min each, "
        f"{report.get('jobs', 1)} recipe(s) at a time on separate cores; test split first "
        f"{report['eval_sequences']} chunks; samples: {args.samples} x {args.sample_steps} steps, "
        f"default sampler\n\n" + "\n".join(lines) + "\n"
    )
    Path(args.out).with_suffix(".md").write_text(text)
    return text


if __name__ == "__main__":
    main()
