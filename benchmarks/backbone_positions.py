"""The backbone before and after issue 11, and each detail of it on its own: the quickstart config
trained for a fixed number of steps with each family and each backbone, in one run on one machine,
then each family's strongest bound on the test and validation splits.

    python benchmarks/backbone_positions.py --steps 600 --jobs 2

A backbone is a named list of model overrides (``BACKBONES``): ``learned`` is the backbone issue 11
started from (learned absolute positions, a zero-initialised head of its own), ``rotary`` today's
defaults (rotary positions, the head tied to the token embedding), and the others today's defaults
with one detail changed, as the anchors' text DiTs have it or had it here. A backbone whose
overrides a family's model lacks (the causal AR model reads no time) is skipped for that family.
Every cell is ``--recipe`` (``recipes/quickstart.yaml``: DiT d128 x 3, seq 128, batch 32, lr 2e-3,
seed 0) with the path replaced by the family (``objective: ce`` for the continuous ones,
``model.name=causal`` for ``ar``), the backbone's overrides, ``--steps`` steps, no wall-clock cap
and the ``--set`` overrides (e.g. ``optim.lr=3e-3``, every cell alike). Scored with
``sd.eval.likelihood`` on the first ``--eval-sequences`` chunks of each split: NELBO with
``--num-t`` stratified times, the flow bound with ``--ode-steps`` midpoint steps and one
Hutchinson probe, AR's exact NLL. Cells run in ``--jobs`` worker processes, each pinned to its own
core with one torch thread; every cell seeds itself, so the numbers do not depend on ``--jobs``.
Writes JSON and a Markdown table.
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
from workers import pinned_pool, source_commit

FAMILIES = ["ar", "masked", "uniform", "fisher_rao", "linear", "dirichlet"]
CONTINUOUS = ["fisher_rao", "linear", "dirichlet"]
BACKBONES = {
    "learned": (
        ["model.positions=learned", "model.tie_weights=false"],
        "before issue 11: learned absolute positions (init std 0.02), a zero-initialised head",
    ),
    "rotary": ([], "today's defaults: rotary positions, the head tied to the token embedding"),
    "untied": (
        ["model.tie_weights=false"],
        "rotary, a zero-initialised head of its own (DiT, MDLM)",
    ),
    "dropout": (["model.dropout=0.1"], "rotary, tied, dropout 0.1 on each residual branch (MDLM)"),
    "time_scale_10": (
        ["model.time_scale=10"],
        "rotary, tied, time angles up to 10 t rad, near MDLM/SEDD's sigma (default 1000 t: DiT's)",
    ),
}
DEFAULT_BACKBONES = ["learned", "rotary"]


def model_name(family: str) -> str:
    return "causal" if family == "ar" else "dit"


def applies(family: str, backbone: str) -> bool:
    """Whether the family's model has every option the backbone sets."""
    from simplexdiff.models import MODELS

    options = MODELS.options(model_name(family))
    return all(o.split("=")[0].removeprefix("model.") in options for o in BACKBONES[backbone][0])


def cell_recipe(family: str, backbone: str, args: argparse.Namespace) -> DictConfig:
    """The recipe one cell trains: ``--recipe`` with the family, the backbone's overrides, the
    step count and the ``--set`` overrides."""
    from simplexdiff.recipe import load_recipe

    overrides = [
        *BACKBONES[backbone][0],
        f"out_dir={args.runs}/{family}-{backbone}",
        f"trainer.max_steps={args.steps}",
        "trainer.max_time=null",
        f"trainer.val_check_interval={args.steps}",
        "trainer.limit_val_batches=2",
        *args.set,
    ]
    overrides.append("sample.sampler=null")  # the path's default sampler
    if family == "ar":
        overrides += [f"model.name={model_name(family)}", "sample.steps=128"]
    cfg = load_recipe(args.recipe, overrides)
    cfg.path = {"name": family, **({"objective": "ce"} if family in CONTINUOUS else {})}
    return cfg


def finished_run(cfg: DictConfig) -> Path | None:
    """The newest finished run (``final.ckpt``) under ``cfg.out_dir`` that trained exactly
    ``cfg`` (its saved ``recipe.yaml``), or None: a run of another recipe, steps or ``--set`` is
    never reused. A recipe does not name the defaults it ran with: after a change of a model's
    defaults, train into a fresh ``--runs``."""
    wanted = OmegaConf.to_container(cfg, resolve=True)
    for ckpt in sorted(Path(cfg.out_dir).glob("version_*/final.ckpt"), reverse=True):
        saved = ckpt.with_name("recipe.yaml")
        if saved.exists() and OmegaConf.to_container(OmegaConf.load(saved)) == wanted:
            return ckpt
    return None


def run_cell(family: str, backbone: str, args: argparse.Namespace) -> dict:
    """Train one cell (unless a finished run of the same recipe is in ``--runs``: a killed
    benchmark goes on where it stopped), then score it."""
    from simplexdiff.cli import train

    cfg = cell_recipe(family, backbone, args)
    row = {"family": family, "backbone": backbone, "seed": cfg.seed, "commit": source_commit()}
    if done := finished_run(cfg):
        results = done.with_name("results.json")
        info = json.loads(results.read_text()) if results.exists() else {}
        steps = torch.load(done, weights_only=True)["global_step"]
        result = {"steps": steps, "checkpoint": str(done)} | {
            k: info.get(k) for k in ("train_seconds", "samples")
        }
    else:
        result = train(cfg)
    row |= {k: result[k] for k in ("steps", "train_seconds", "checkpoint")}
    return score(row | {"samples": (result["samples"] or [])[:2]}, args)


def score(row: dict, args: argparse.Namespace) -> dict:
    """Each ``--splits`` split: the first ``--eval-sequences`` chunks, the family's strongest
    bound (``{split}_bpc`` and its standard error)."""
    import simplexdiff as sd

    lm = sd.DiffusionLM.load(row["checkpoint"])
    dm = sd.data.TextDataModule(corpus="text8", seq_len=lm.model.config()["max_len"])
    row = row | {"path": lm.path.config(), "model": lm.model.config()}
    for split in args.splits:
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
    p.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    p.add_argument("--backbones", nargs="+", default=DEFAULT_BACKBONES, choices=list(BACKBONES))
    p.add_argument(
        "--detail-families",
        nargs="+",
        default=FAMILIES,
        help="the families that train the backbones beyond learned and rotary",
    )
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--recipe", default="recipes/quickstart.yaml")
    p.add_argument("--set", nargs="*", default=[], help="recipe overrides for every cell")
    p.add_argument("--eval-sequences", type=int, default=256)
    p.add_argument("--num-t", type=int, default=16)
    p.add_argument("--ode-steps", type=int, default=32)
    p.add_argument("--splits", nargs="+", default=["test", "validation"])
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--runs", default="runs/backbone_positions")
    p.add_argument("--out", default="benchmarks/results/backbone_positions.json")
    p.add_argument(
        "--add", action="store_true", help="add the cells --out lacks to its report (same settings)"
    )
    args = p.parse_args()
    torch.set_num_threads(1)  # as in every cell: machine() names it
    cells = [
        (f, b)
        for b in args.backbones
        for f in args.families
        if applies(f, b) and (b in DEFAULT_BACKBONES or f in args.detail_families)
    ]
    start = time.perf_counter()
    report = {
        "machine": machine(),
        "jobs": args.jobs,
        "recipe": args.recipe,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "runs", "add")},
        "backbones": {
            b: {"overrides": BACKBONES[b][0], "about": BACKBONES[b][1]}
            for b in BACKBONES
            if b in args.backbones
        },
        "rows": [],
    }
    if args.add:
        report, cells = added_to(json.loads(Path(args.out).read_text()), report, cells)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rows, spent = report["rows"], report.get("wall_seconds", 0.0)
    with pinned_pool(args.jobs) as pool:
        futures = [pool.submit(run_cell, f, b, args) for f, b in cells]
        for done, fut in enumerate(as_completed(futures), 1):
            rows.append(fut.result())
            order = list(BACKBONES)
            rows.sort(key=lambda r: (order.index(r["backbone"]), FAMILIES.index(r["family"])))
            report["wall_seconds"] = round(spent + time.perf_counter() - start, 1)
            Path(args.out).write_text(json.dumps(report, indent=2))  # after each cell
            print(f"== {done}/{len(cells)} cells done")
    print(markdown(report, args.out))


CELL_LISTS = ("families", "backbones", "detail_families")


def added_to(saved: dict, report: dict, cells: list) -> tuple[dict, list]:
    """``--add``: ``saved`` (the report in ``--out``) grown by this invocation's cells, and the
    cells it lacks. Refused unless both ran the same settings (apart from which cells) on the
    same machine: the rows of one table come from one protocol (each row names its commit)."""
    for key in ("machine", "recipe", "settings"):
        mine, theirs = report[key], saved.get(key)
        if key == "settings":
            mine, theirs = ({k: v for k, v in d.items() if k not in CELL_LISTS}
                            for d in (mine, theirs or {}))  # fmt: skip
        if mine != theirs:
            raise SystemExit(f"--add: this run's {key} differs from the report's: {theirs!r}")
    merged = saved | {
        "backbones": saved["backbones"] | report["backbones"],
        "settings": dict(saved["settings"]),
    }
    for key in CELL_LISTS:
        merged["settings"][key] = list(
            dict.fromkeys(saved["settings"][key] + report["settings"][key])
        )
    have = {(r["family"], r["backbone"]) for r in saved["rows"]}
    return merged, [c for c in cells if c not in have]


def markdown(report: dict, out: str) -> str:
    """Write the Markdown tables of ``report`` beside ``out``; return them."""
    s = report["settings"]
    about = "\n".join(
        f"* `{b}`: {spec['about']} ({', '.join(spec['overrides']) or 'no overrides'})"
        for b, spec in report["backbones"].items()
    )
    tables = "\n\n".join(f"{split}:\n\n{table(report['rows'], split)}" for split in s["splits"])
    text = (
        f"Machine: {report['machine']}, {report['jobs']} cells at a time\n\n"
        f"{report['recipe']} at {s['steps']} steps{overridden(s)}, seed 0; first "
        f"{s['eval_sequences']} chunks of 128 of each split (bits/char ± 1 s.e.). Backbones:\n\n"
        f"{about}\n\n{tables}\n"
    )
    Path(out).with_suffix(".md").write_text(text)
    return text


def overridden(settings: dict) -> str:
    """`` with a=1 b=2`` for the run's ``--set`` overrides (empty without any)."""
    return f" with {' '.join(settings['set'])}" if settings.get("set") else ""


def table(rows: list[dict], split: str) -> str:
    """One split: a row per family, a column per backbone, and rotary - learned."""
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    by = {(r["family"], r["backbone"]): r for r in rows}
    key = f"{split}_bpc"
    lines = [
        "| family | bound | " + " | ".join(backbones) + " | rotary - learned |",
        "|---|---|" + "---|" * (len(backbones) + 1),
    ]
    for family in dict.fromkeys(r["family"] for r in rows):
        cells = [by.get((family, b)) for b in backbones]
        shown = [f"{c[key]:.3f} ± {c[key + '_stderr']:.3f}" if c else "-" for c in cells]
        a, b = by.get((family, "learned")), by.get((family, "rotary"))
        diff = f"{b[key] - a[key]:+.3f}" if a and b else "-"
        bound = next(c["bound"] for c in cells if c)
        lines.append(f"| {family} | {bound} | " + " | ".join(shown) + f" | {diff} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
