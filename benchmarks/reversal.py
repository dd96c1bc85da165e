"""The reversal curse, measured: facts seen in one direction, queried in both (issue 15).

Berglund et al. 2023 (*The Reversal Curse*) train on "A is B" and ask for A given B; LLaDA (Nie et
al. 2025, table 4) reports that a masked diffusion model completes reversed poem lines far better
than autoregressive models. Here, with names as random capitalised strings of 5 letters
(``sd.data.reversal_facts``), every model trains on sentences, one per row padded with EOS
(prompt / response rows with an empty prompt: the whole row is modelled):

* ``"The mentor of A is B."`` for every pair: the *test* pairs (``--pairs``) only in this form,
* ``"B is the mentor of A."`` as well for as many *control* pairs, so the reverse form is known.

Queries, exact match of the generated name (and its final full stop):

* ``forward``: prompt ``"The mentor of A is "``, answer ``"B."``;
* ``reverse_prompt``: prompt ``"B is the mentor of "``, answer ``"A."`` (never seen for test pairs);
* ``reverse_infill``: the forward sentence with A's five positions left free and the rest held,
  ``"The mentor of _____ is B."`` (an infill pattern; the autoregressive sampler fills from the
  left and cannot read the held suffix, so its score there is what left-to-right decoding gets);
* ``control_reverse``: ``reverse_prompt`` on control pairs (seen in both forms): memorisation.

Equal compute: each family trains for the same wall-clock ``--budget-s`` on its own pinned core
(``benchmarks/workers.py``), same backbone size, data, seed. Sampling: greedy (temperature 0) for
every family, autoregressive one step per generated position, the others ``--steps`` steps of their
default sampler.

Run: ``python benchmarks/reversal.py --jobs 2`` (50 test and 50 control pairs, 600 s per
family; writes ``benchmarks/results/reversal.{json,md}``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from workers import budget_recipe, run_families, source_commit, write_report

import simplexdiff as sd
from simplexdiff.cli import train

FORWARD = "The mentor of {a} is {b}."
REVERSE = "{b} is the mentor of {a}."
NAME = 5
ROW = 32  # characters per row: a 29-character sentence and its EOS padding
FAMILIES = ("ar", "masked", "uniform", "fisher_rao", "rdlm")
QUERIES = ("forward", "reverse_prompt", "reverse_infill", "control_reverse")


def facts(pairs: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """Test pairs (seen forward only) and control pairs (seen both ways), all names distinct."""
    both = sd.data.reversal_facts(2 * pairs, seed, letters=(NAME, NAME))
    return {"test": both[:pairs], "control": both[pairs:]}


def write_corpus(folder: Path, pairs: dict[str, list[tuple[str, str]]]) -> None:
    """``train.jsonl`` (every sentence a model sees), ``validation.jsonl`` / ``test.jsonl`` (the
    test pairs' forward sentences: how well they are memorised) as empty-prompt rows."""
    forward = [FORWARD.format(a=a, b=b) for a, b in pairs["test"] + pairs["control"]]
    reverse = [REVERSE.format(a=a, b=b) for a, b in pairs["control"]]
    held = [FORWARD.format(a=a, b=b) for a, b in pairs["test"]]
    folder.mkdir(parents=True, exist_ok=True)
    for split, sentences in (("train", forward + reverse), ("validation", held), ("test", held)):
        rows = [json.dumps({"prompt": "", "response": s}) for s in sentences]
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")


def infill_answers(lm, pairs: list[tuple[str, str]], steps: int, gen: torch.Generator):
    """A's positions generated with the rest of ``"The mentor of A is B."`` (and its EOS) held."""
    tok = lm.tokenizer
    start = len("The mentor of ")
    patterns = torch.full((len(pairs), ROW), tok.eos_id, dtype=torch.long)
    for row, (a, b) in zip(patterns, pairs, strict=True):
        ids = tok.encode_tensor(FORWARD.format(a=a, b=b))
        row[: len(ids)] = ids
        row[start : start + NAME] = -1
    out = lm.generate(len(pairs), ROW, steps, infill=patterns, generator=gen, temperature=0.0)
    return [tok.decode(row[start : start + NAME]) for row in out]


def query(lm, pairs: dict[str, list[tuple[str, str]]], steps: int, seed: int) -> dict:
    """Exact-match accuracy of every query (``QUERIES``) and a few answers of each."""
    ar = lm.path.family == "autoregressive"
    gen = torch.Generator().manual_seed(seed)

    def prompted(prompts: list[str], answers: list[str]) -> dict:
        free = ROW - min(len(p) for p in prompts)
        got = sd.eval.complete(
            lm, prompts, length=ROW, steps=free if ar else steps, generator=gen, temperature=0.0
        )
        return score(prompts, got, answers)

    test, control = pairs["test"], pairs["control"]
    infill = infill_answers(lm, test, NAME if ar else steps, gen)
    return {
        "forward": prompted(
            [f"The mentor of {a} is " for a, _ in test], [f"{b}." for _, b in test]
        ),
        "reverse_prompt": prompted(
            [f"{b} is the mentor of " for _, b in test], [f"{a}." for a, _ in test]
        ),
        "reverse_infill": score(
            [f"The mentor of _ is {b}." for _, b in test], infill, [a for a, _ in test]
        ),  # fmt: skip
        "control_reverse": prompted(
            [f"{b} is the mentor of " for _, b in control], [f"{a}." for a, _ in control]
        ),
    }


def score(prompts: list[str], got: list[str], want: list[str]) -> dict:
    hits = [g == w for g, w in zip(got, want, strict=True)]
    return {
        "accuracy": sum(hits) / len(hits),
        "num": len(hits),
        "examples": [
            {"query": p, "answer": g, "expected": w}
            for p, g, w in list(zip(prompts, got, want, strict=True))[:3]
        ],
    }


def run_family(family: str, corpus: str, out: str, budget_s: float, seed: int, steps: int):
    """Train one family for the budget, then query it (in a pinned worker)."""
    pairs = facts(*json.loads((Path(corpus) / "facts.json").read_text()))
    cfg = budget_recipe(family, corpus, Path(out) / family, budget_s, seed, ROW)
    start = time.perf_counter()
    results = train(cfg)
    lm = sd.DiffusionLM.load(results["checkpoint"])
    t0 = time.perf_counter()
    scores = query(lm, pairs, steps, seed)
    return {
        "family": family,
        "path": lm.path.config(),
        "steps": results["steps"],
        "train_seconds": results["train_seconds"],
        "wall_seconds": round(time.perf_counter() - start, 1),
        "query_seconds": round(time.perf_counter() - t0, 1),
        "memorised": results["reported"],  # the bound on the test pairs' forward sentences
        "queries": scores,
    }


def markdown(report: dict) -> str:
    lines = [
        "# Reversal curse: facts seen forward only, queried both ways",
        "",
        f"{report['pairs']} test pairs (forward only) and {report['pairs']} control pairs (both "
        f"ways); {report['budget_s']} s of training per family, each on its own pinned core; "
        f"seed {report['seed']}; {report['machine']}; commit {report['commit']}.",
        "",
        "| family | steps | forward | reverse (prompt) | reverse (infill) | control reverse |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        q = r["queries"]
        cells = " | ".join(f"{q[k]['accuracy']:.3f}" for k in QUERIES)
        lines.append(f"| {r['family']} | {r['steps']} | {cells} |")
    lines += [
        "",
        "Exact match of the generated name (forward / reverse prompt: name and full stop).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--budget-s", type=float, default=600)
    p.add_argument("--steps", type=int, default=64, help="sampling steps (not AR)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/reversal")
    p.add_argument("--out", default="benchmarks/results/reversal")
    args = p.parse_args(argv)
    corpus = Path(args.runs) / "corpus"
    write_corpus(corpus, facts(args.pairs, args.seed))
    (corpus / "facts.json").write_text(json.dumps([args.pairs, args.seed]))
    commit = source_commit()  # the code that runs, before it runs
    runs = run_families(
        args.jobs, run_family, args.families, str(corpus), args.runs, args.budget_s, args.seed,
        args.steps,
    )  # fmt: skip
    report = {
        "benchmark": "reversal",
        "pairs": args.pairs,
        "budget_s": args.budget_s,
        "seed": args.seed,
        "sampling_steps": args.steps,
        "runs": runs,
    }
    write_report(args.out, report, markdown, commit)


if __name__ == "__main__":
    main()
