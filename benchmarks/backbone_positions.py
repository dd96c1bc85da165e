"""Rotary against learned absolute positions (issue 11): the quickstart config trained for a
fixed number of steps with each family and each kind of positions, in one run on one machine,
then each family's strongest bound on the test split.

    python benchmarks/backbone_positions.py --steps 600 --jobs 2

Every cell is ``--recipe`` (``recipes/quickstart.yaml``: DiT d128 x 3, seq 128, batch 32, lr 2e-3,
seed 0) with the path replaced by the family (``objective: ce`` for the continuous ones,
``model.name=causal`` for ``ar``), ``model.positions`` = ``learned`` or ``rotary``, ``--steps``
steps, no wall-clock cap and the ``--set`` overrides (e.g. ``optim.lr=3e-3``, every cell alike).
Scored with ``sd.eval.likelihood`` on the first ``--eval-sequences`` test chunks: NELBO with
``--num-t`` stratified times, the flow bound with ``--ode-steps`` midpoint steps and one Hutchinson
probe, AR's exact NLL. Cells run in ``--jobs`` worker processes, each pinned to its own core with
one torch thread; every cell seeds itself, so the numbers do not depend on ``--jobs``. Writes
JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import as_completed
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from workers import pinned_pool

FAMILIES = ["ar", "masked", "uniform", "fisher_rao", "linear", "dirichlet"]
POSITIONS = ["learned", "rotary"]
CONTINUOUS = ["fisher_rao", "linear", "dirichlet"]


def cell_recipe(family: str, positions: str, args: argparse.Namespace) -> DictConfig:
    """The recipe one cell trains: ``--recipe`` with the family, the positions, the step count
    and the ``--set`` overrides."""
    from simplexdiff.recipe import load_recipe

    overrides = [
        f"model.positions={positions}",
        f"out_dir={args.runs}/{family}-{positions}",
        f"trainer.max_steps={args.steps}",
        "trainer.max_time=null",
        f"trainer.val_check_interval={args.steps}",
        "trainer.limit_val_batches=2",
        *args.set,
    ]
    overrides.append("sample.sampler=null")  # the path's default sampler
    if family == "ar":
        overrides += ["model.name=causal", "sample.steps=128"]
    cfg = load_recipe(args.recipe, overrides)
    cfg.path = {"name": family, **({"objective": "ce"} if family in CONTINUOUS else {})}
    return cfg


def finished_run(cfg: DictConfig) -> Path | None:
    """The newest finished run (``final.ckpt``) under ``cfg.out_dir`` that trained exactly
    ``cfg`` (its saved ``recipe.yaml``), or None: a run of another recipe, steps or ``--set`` is
    never reused."""
    wanted = OmegaConf.to_container(cfg, resolve=True)
    for ckpt in sorted(Path(cfg.out_dir).glob("version_*/final.ckpt"), reverse=True):
        saved = ckpt.with_name("recipe.yaml")
        if saved.exists() and OmegaConf.to_container(OmegaConf.load(saved)) == wanted:
            return ckpt
    return None


def run_cell(family: str, positions: str, args: argparse.Namespace) -> dict:
    """Train one cell (unless a finished run of the same recipe is in ``--runs``: a killed
    benchmark goes on where it stopped), then score it."""
    from simplexdiff.cli import train

    cfg = cell_recipe(family, positions, args)
    if done := finished_run(cfg):
        results = done.with_name("results.json")
        info = json.loads(results.read_text()) if results.exists() else {}
        steps = torch.load(done, weights_only=True)["global_step"]
        row = {
            "family": family,
            "positions": positions,
            "steps": steps,
            "train_seconds": info.get("train_seconds"),
            "checkpoint": str(done),
            "seed": cfg.seed,
            "samples": info.get("samples", [])[:2],
        }
        return score(row, args)

    result = train(cfg)
    row = {
        "family": family,
        "positions": positions,
        "steps": result["steps"],
        "train_seconds": result["train_seconds"],
        "checkpoint": result["checkpoint"],
        "seed": cfg.seed,
        "samples": result["samples"][:2],
    }
    return score(row, args)


def score(row: dict, args: argparse.Namespace) -> dict:
    """Each ``--splits`` split the row has no bound for yet: the first ``--eval-sequences``
    chunks, the family's strongest bound (``{split}_bpc`` and its standard error)."""
    import simplexdiff as sd

    checkpoint = row.get("checkpoint") or str(  # rows written before checkpoints were recorded
        sorted(Path(args.runs).glob(f"{row['family']}-{row['positions']}/version_*/final.ckpt"))[-1]
    )
    lm = sd.DiffusionLM.load(checkpoint)
    dm = sd.data.TextDataModule(corpus="text8", seq_len=lm.model.config()["max_len"])
    row = row | {"checkpoint": checkpoint, "path": lm.path.config(), "model": lm.model.config()}
    for split in args.splits:
        if f"{split}_bpc" in row:
            continue
        start = time.perf_counter()
        stats = sd.eval.likelihood(
            lm,
            dm.split(split)[: args.eval_sequences],
            num_t=args.num_t,
            batch_size=64,
            generator=torch.Generator().manual_seed(row.get("seed", 0)),
            ode_steps=args.ode_steps,
        )
        row |= {
            "bound": stats["bound"],
            "bound_settings": stats["settings"],
            "eval_tokens": stats["num_tokens"],
            f"{split}_bpc": stats["bpc"],
            f"{split}_bpc_stderr": stats["bpc_stderr"],
            f"{split}_bound_seconds": round(time.perf_counter() - start, 1),
        }
    return row


def main() -> None:
    from simplexdiff.cli import machine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=FAMILIES)
    p.add_argument("--positions", nargs="+", default=POSITIONS)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--recipe", default="recipes/quickstart.yaml")
    p.add_argument("--set", nargs="*", default=[], help="recipe overrides for every cell")
    p.add_argument("--eval-sequences", type=int, default=256)
    p.add_argument("--num-t", type=int, default=16)
    p.add_argument("--ode-steps", type=int, default=32)
    p.add_argument("--splits", nargs="+", default=["test", "validation"])
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--eval-only", action="store_true", help="score the rows of --out again")
    p.add_argument("--runs", default="runs/backbone_positions")
    p.add_argument("--out", default="benchmarks/results/backbone_positions.json")
    args = p.parse_args()
    torch.set_num_threads(1)  # as in every cell: machine() names it
    start = time.perf_counter()
    report = {
        "machine": machine(),
        "jobs": args.jobs,
        "recipe": args.recipe,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "runs", "eval_only")},
        "rows": [],
    }
    if args.eval_only:  # score the saved rows on the splits they lack, and finished cells
        saved = json.loads(Path(args.out).read_text())
        report |= {k: v for k, v in saved.items() if k != "rows"}
        jobs = [(score, row) for row in saved["rows"]]
        have = {(r["family"], r["positions"]) for r in saved["rows"]}
        jobs += [
            (run_cell, f, pos)  # trained, not in --out yet: its checkpoint is scored
            for f in args.families
            for pos in args.positions
            if (f, pos) not in have and any(Path(args.runs).glob(f"{f}-{pos}/version_*/final.ckpt"))
        ]
    else:
        jobs = [(run_cell, f, pos) for f in args.families for pos in args.positions]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rows = report["rows"]
    with pinned_pool(args.jobs) as pool:
        for fut in as_completed([pool.submit(*job, args) for job in jobs]):
            rows.append(fut.result())
            rows.sort(key=lambda r: (FAMILIES.index(r["family"]), POSITIONS.index(r["positions"])))
            if not args.eval_only:
                report["wall_seconds"] = round(time.perf_counter() - start, 1)
            Path(args.out).write_text(json.dumps(report, indent=2))  # after each cell
            print(f"== {len(rows)}/{len(jobs)} cells done")
    print(markdown(report, args.out))


def markdown(report: dict, out: str) -> str:
    """Write the Markdown table of ``report`` beside ``out``; return it."""
    settings = report["settings"]
    text = (
        f"Machine: {report['machine']}, {report['jobs']} cells at a time\n\n"
        f"{report['recipe']} at {settings['steps']} steps{overridden(settings)}, seed 0; first "
        f"{settings['eval_sequences']} chunks of 128 of each split (bits/char ± 1 s.e.)\n\n"
        f"{table(report['rows'], settings['splits'])}\n"
    )
    Path(out).with_suffix(".md").write_text(text)
    return text


def overridden(settings: dict) -> str:
    """`` with a=1 b=2`` for the run's ``--set`` overrides (empty without any)."""
    return f" with {' '.join(settings['set'])}" if settings.get("set") else ""


def table(rows: list[dict], splits: list[str]) -> str:
    by = {(r["family"], r["positions"]): r for r in rows}
    lines = [
        "| family | bound | split | learned positions | rotary | rotary - learned |",
        "|---|---|---|---|---|---|",
    ]
    for family in dict.fromkeys(r["family"] for r in rows):
        a, b = by.get((family, "learned")), by.get((family, "rotary"))
        for split in splits:
            key = f"{split}_bpc"

            def cell(r, key=key):
                return f"{r[key]:.3f} ± {r[key + '_stderr']:.3f}" if r and key in r else "-"

            diff = f"{b[key] - a[key]:+.3f}" if a and b and key in a and key in b else "-"
            lines.append(
                f"| {family} | {(a or b)['bound']} | {split} | {cell(a)} | {cell(b)} | {diff} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
