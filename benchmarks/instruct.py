"""Instruction fine-tuning at equal compute: every family on the bundled ``instruct`` corpus.

The corpus (``simplexdiff/data/synthetic.py``): prompts ``"{task}: {word}\\n"`` for the tasks copy,
reverse, sort and upper of a random lowercase word of 3-6 letters, the response the answer; the
test split's words occur in neither training nor validation, so an answer is right only if the
model learned the operation. Rows of 32 characters: prompt, response, EOS to the end; every family
is trained on ``-log p(response | prompt)`` (issue 15) for the same wall-clock ``--budget-s`` on its
own pinned core (``benchmarks/workers.py``), same backbone size, batch and seed.

Reported per family: training steps; the conditional bound on the test split's responses (bits
per response token, ``sd.eval.response_likelihood``: the path's strongest valid bound, with the
settings ``BOUND_OPTIONS`` names; the Fisher-Rao and linear flows use the model decoder at
``t* = 0.02``, as ``tests/test_conditional.py`` does, since their kernel decoder's backward ODE
leaves the prior's support on this task, and so does the training's ``val/bpc``, kept in the JSON);
and exact match of greedy (temperature 0) answers to the test split's 500 held-out prompts
(autoregressive: one step per position; the others ``--steps`` steps of their default sampler).

Run: ``python benchmarks/instruct.py --budget-s 600 --jobs 2`` (writes
``benchmarks/results/instruct.{json,md}``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from workers import budget_recipe, run_families, source_commit, write_report

import simplexdiff as sd
from simplexdiff.cli import train

FAMILIES = ("ar", "masked", "uniform", "fisher_rao", "linear", "dirichlet", "rdlm")
ROW = 32
FLOW_MODEL_DECODER = {"decoder": "model", "decode_time": 0.02}
BOUND_OPTIONS = {"num_t": 32, "ode_steps": 64}
BOUND_OPTIONS_OF = {"fisher_rao": FLOW_MODEL_DECODER, "linear": FLOW_MODEL_DECODER}
"""The test bound's settings: ``BOUND_OPTIONS`` for every family (each path reads its own), with
``BOUND_OPTIONS_OF`` on top for the named paths."""


def run_family(family: str, out: str, budget_s: float, seed: int, steps: int) -> dict:
    """Train one family for the budget, then answer the held-out prompts (in a pinned worker)."""
    cfg = budget_recipe(family, "instruct", Path(out) / family, budget_s, seed, ROW)
    start = time.perf_counter()
    results = train(cfg)
    lm = sd.DiffusionLM.load(results["checkpoint"])
    dm = sd.data.TextDataModule(**lm.data_config)
    examples = dm.examples("test")
    t0 = time.perf_counter()
    options = BOUND_OPTIONS | BOUND_OPTIONS_OF.get(family, {})
    bound = sd.eval.response_likelihood(
        lm, dm.compact_split("test"), dm.prompt_lengths("test"),
        generator=torch.Generator().manual_seed(seed), **options,
    )  # fmt: skip
    bound_seconds = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    ar = lm.path.family == "autoregressive"
    answers = sd.eval.exact_match(
        lm, examples, length=ROW, steps=None if ar else steps, temperature=0.0,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    by_task: dict[str, list[bool]] = {}
    for (prompt, response), answer in zip(examples, answers["answers"], strict=True):
        by_task.setdefault(prompt.split(":")[0], []).append(answer == response)
    return {
        "family": family,
        "path": lm.path.config(),
        "steps": results["steps"],
        "train_seconds": results["train_seconds"],
        "answer_seconds": round(time.perf_counter() - t0, 1),
        "bound_seconds": bound_seconds,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "val_bound_bits_per_response_token": results["reported"]["bits_per_char"],
        "bound": results["bound"],
        "test_bound_bits_per_response_token": bound["bpc"],
        "test_bound_stderr": bound["bpc_stderr"],
        "test_bound_settings": options | {"bound": bound["bound"]},
        "exact_match": answers["accuracy"],
        "num": answers["num"],
        "exact_match_by_task": {k: sum(v) / len(v) for k, v in sorted(by_task.items())},
        "examples": [
            {"prompt": p, "response": r, "answer": a}
            for (p, r), a in list(zip(examples, answers["answers"], strict=True))[:4]
        ],
    }


def markdown(report: dict) -> str:
    tasks = sorted(report["runs"][0]["exact_match_by_task"]) if report["runs"] else []
    lines = [
        "# Instruction fine-tuning at equal compute (bundled `instruct` corpus)",
        "",
        f"{report['budget_s']} s of training per family, each on its own pinned core; seed "
        f"{report['seed']}; {report['machine']}; commit {report['commit']}. Exact match of greedy "
        f"answers to {report['runs'][0]['num'] if report['runs'] else 0} held-out test prompts; the "
        "test bound on their responses (± one standard error) with `BOUND_OPTIONS` "
        f"{BOUND_OPTIONS}, for {', '.join(BOUND_OPTIONS_OF)} also {FLOW_MODEL_DECODER}.",
        "",
        "| family | steps | test bound (bits/response token) | exact match | "
        + " | ".join(tasks)
        + " |",
        "|---|---|---|---|" + "---|" * len(tasks),
    ]
    for r in report["runs"]:
        bound, stderr = r["test_bound_bits_per_response_token"], r["test_bound_stderr"]
        cells = " | ".join(f"{r['exact_match_by_task'][t]:.3f}" for t in tasks)
        bound = "unavailable" if bound is None else f"{bound:.3f} ± {stderr:.3f}"
        lines.append(
            f"| {r['family']} | {r['steps']} | {bound} | {r['exact_match']:.3f} | {cells} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--budget-s", type=float, default=600)
    p.add_argument("--steps", type=int, default=ROW, help="sampling steps (not AR)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/instruct_bench")
    p.add_argument("--out", default="benchmarks/results/instruct")
    args = p.parse_args(argv)
    commit = source_commit()  # the code that runs, before it runs
    runs = run_families(
        args.jobs, run_family, args.families, args.runs, args.budget_s, args.seed, args.steps
    )
    report = {
        "benchmark": "instruct",
        "budget_s": args.budget_s,
        "seed": args.seed,
        "sampling_steps": args.steps,
        "runs": runs,
    }
    write_report(args.out, report, markdown, commit)


if __name__ == "__main__":
    main()
