"""The ablation harness: a protocol file (rows x seeds, one wall-clock budget) trained and scored in
one run on one machine (DESIGN, section 7: equal compute in the same run).

    python benchmarks/ablate.py benchmarks/protocols/cpu_text8.yaml
    python benchmarks/ablate.py benchmarks/protocols/gpu_text8.yaml   # one GPU, rows concurrent

A protocol names its rows (a text8 recipe plus overrides), the seeds, the budget and the curve
points in seconds, the device and the evaluation settings (``benchmarks/protocols/``). Three
phases, each a set of tasks run in ``jobs`` worker processes: on CPU each worker is pinned to its
own core with one torch thread, on a GPU all share the one device, so rows get the same compute.

1. **train**: each row x seed trains for ``budget_seconds`` of wall clock under
   ``simplexdiff.lightning.WallClockBudget``: learning rate warmed up over ``warmup_fraction`` of
   the budget and annealed to the budget, both by *time* (the recipes' step warm-up is sized for
   long runs), a weights checkpoint at every curve point, no validation.
2. **score**: every point's checkpoint gets its family's strongest valid bound
   (``sd.eval.likelihood``) on the first ``eval.sequences`` chunks of ``eval.split``, with the same
   settings at every point: the learning curve.
3. **frontier**: the final checkpoint samples at each of ``frontier.steps`` with every sampler of
   its family; ``sd.eval.sample_metrics`` measures them under the protocol's ``ar`` row (the
   reference AR model) against the denoiser calls spent: the speed-quality frontier.

The JSON (``--out``, default ``benchmarks/results/<name>.json``) is rewritten after every task with
the machine, versions, git commit and the protocol; rerunning the same command skips every task
already recorded there (a killed protocol goes on where it stopped; a row killed while training
trains again from its start). A Markdown table and a PNG of the curves and frontiers sit beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch
from ablate_report import write_tables
from omegaconf import OmegaConf
from sampler_sweep import samplers_for
from workers import pinned_pool, source_commit

import simplexdiff as sd
from simplexdiff.cli import build, finite_or_null, machine, make_trainer
from simplexdiff.errors import ConfigError
from simplexdiff.eval import sample_metrics, train_reference
from simplexdiff.eval.samples import draw_samples
from simplexdiff.lightning.budget import WallClockBudget
from simplexdiff.recipe import load_recipe

DEVICES = ("cpu", "gpu")


@dataclass
class Row:
    recipe: str  # a name under recipes/text8 or a path to a recipe (e.g. recipes/shakespeare/...)
    overrides: list[str] = field(default_factory=list)


@dataclass
class EvalSpec:
    split: str = "test"
    sequences: int = 256
    num_t: int = 16  # NELBO times per sequence
    ode_steps: int = 32  # continuous paths' flow bound
    batch_size: int = 64


@dataclass
class FrontierSpec:
    steps: list[int] = field(default_factory=lambda: [16, 64, 256])
    samples: int = 16
    batch_size: int = 16


@dataclass
class Protocol:
    name: str
    budget_seconds: float
    points: list[float]
    rows: dict[str, Row]
    device: str = "cpu"
    jobs: int = 2
    seeds: list[int] = field(default_factory=lambda: [0])
    warmup_fraction: float = 0.05  # linear LR warm-up over this share of the budget, by time
    overrides: list[str] = field(default_factory=list)  # applied to every row first
    eval: EvalSpec = field(default_factory=EvalSpec)
    frontier: FrontierSpec = field(default_factory=FrontierSpec)
    reference: str | None = None  # the frontier's reference AR checkpoint, without an ar row


def load_protocol(file: str | Path, overrides: list[str] = ()) -> Protocol:
    """A protocol YAML checked against ``Protocol`` (unknown keys and bad values fail at once)."""
    try:
        cfg = OmegaConf.merge(
            OmegaConf.structured(Protocol), OmegaConf.load(file), OmegaConf.from_dotlist(overrides)
        )
        proto: Protocol = OmegaConf.to_object(cfg)
    except Exception as e:
        raise ConfigError(f"bad protocol {file}: {str(e).splitlines()[0]}") from None
    if proto.device not in DEVICES:
        raise ConfigError(f"protocol device must be one of {DEVICES}, got {proto.device!r}")
    if proto.jobs < 1 or not proto.rows or not proto.seeds:
        raise ConfigError("a protocol needs jobs >= 1, at least one row and one seed")
    counts = [proto.eval.sequences, proto.eval.num_t, proto.eval.ode_steps, proto.eval.batch_size]
    counts += [*proto.frontier.steps, proto.frontier.samples, proto.frontier.batch_size]
    if min(counts) < 1:
        raise ConfigError("the protocol's eval and frontier counts must all be >= 1")
    budget(proto, Path("."))  # checks budget, points and warm-up
    if proto.reference is not None and not Path(proto.reference).is_file():
        raise ConfigError(f"the protocol's reference checkpoint {proto.reference} does not exist")
    if proto.budget_seconds not in proto.points:
        proto.points = sorted({*proto.points, proto.budget_seconds})  # the end is a point too
    for name, row in proto.rows.items():  # a bad row fails now, not in a worker
        cfg = row_cfg(proto, name, row, seed=proto.seeds[0], out_dir="unused")
        try:
            build(cfg)
        except sd.SimplexdiffError as e:
            raise ConfigError(f"protocol row {name!r}: {e}") from None
    return proto


def budget(proto: Protocol, dirpath: Path, label: str | None = None) -> WallClockBudget:
    """The protocol's training budget: its points, warm-up and anneal by time."""
    return WallClockBudget(
        proto.budget_seconds,
        proto.points,
        dirpath,
        anneal=True,
        warmup_seconds=proto.warmup_fraction * proto.budget_seconds,
        label=label,
    )


def recipe_file(recipe: str) -> Path:
    file = Path(recipe)
    return file if file.suffix == ".yaml" else Path("recipes/text8") / f"{recipe}.yaml"


def row_cfg(proto: Protocol, name: str, row: Row, seed: int, out_dir: str):
    """The recipe config of one row and seed: protocol overrides, then the row's, then the
    harness's own (seed, run folder, no validation, no step limit: the budget stops training)."""
    own = [f"seed={seed}", f"out_dir={out_dir}", "trainer.limit_val_batches=0"]
    own += ["trainer.max_steps=100000000", "trainer.max_time=null"]
    if proto.device == "gpu":
        own.append("trainer.accelerator=gpu")
    try:
        return load_recipe(recipe_file(row.recipe), [*proto.overrides, *row.overrides, *own])
    except sd.SimplexdiffError as e:
        raise ConfigError(f"protocol row {name!r}: {e}") from None


def run_key(name: str, seed: int) -> str:
    return f"{name}-s{seed}"


# --- the three tasks (each runs in a worker process) -------------------------------------------
def train_task(proto: Protocol, name: str, seed: int, runs: str) -> dict:
    """Train one row x seed for the budget; its curve points (step, tokens, checkpoint)."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    _worker_setup(proto)
    run_dir = Path(runs) / run_key(name, seed)
    cfg = row_cfg(proto, name, proto.rows[name], seed, str(run_dir))
    L.seed_everything(seed, verbose=False)
    dm, lm = build(cfg)
    clock = budget(proto, run_dir / "points", label=run_dir.name)
    logger = CSVLogger(run_dir, name="", version="")
    trainer = make_trainer(cfg, run_dir, logger, [clock], progress_bar=False)
    trainer.fit(lm, datamodule=dm)
    return {
        "row": name,
        "seed": seed,
        "recipe": str(recipe_file(proto.rows[name].recipe)),
        "overrides": [*proto.overrides, *proto.rows[name].overrides],
        "path": lm.path.registry_name,
        "tokenizer": lm.tokenizer.kind if lm.tokenizer else None,
        "vocab_size": lm.path.vocab_size,
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "steps": trainer.global_step,
        "train_seconds": round(clock.elapsed(), 1),
        "points": clock.records,
    }


def score_task(proto: Protocol, run: dict, reference: str | None) -> dict:
    """The bound at every curve point, then the final checkpoint's frontier."""
    device = _worker_setup(proto)
    ev = proto.eval
    points, tokens = [], None
    for point in run["points"]:
        if "bpc" not in point:
            lm = sd.DiffusionLM.load(point["checkpoint"], map_location=device)
            if tokens is None:  # every point of a run was trained on the same data
                tokens = sd.data.TextDataModule(**lm.data_config).split(ev.split)[: ev.sequences]
            start = time.perf_counter()
            try:
                stats = sd.eval.likelihood(
                    lm,
                    tokens,
                    num_t=ev.num_t,
                    batch_size=ev.batch_size,
                    generator=torch.Generator(device).manual_seed(run["seed"]),
                    ode_steps=ev.ode_steps,
                )
            except Exception as e:  # recorded, not fatal: the other rows' results still count
                points.append(point | {"error": _failure(run, e)})
                continue
            point = point | {
                "bound": stats["bound"],
                "bpc": stats["bpc"],
                "bpc_stderr": stats["bpc_stderr"],
                "bpb": stats.get("bpb"),
                "bpb_stderr": stats.get("bpb_stderr"),
                "eval_tokens": stats["num_tokens"],
                "eval_bytes": stats.get("num_bytes"),
                "bound_settings": stats["settings"],
                "bound_seconds": round(time.perf_counter() - start, 1),
            }
        points.append(point)
    return run | {"points": points, "frontier": frontier(proto, run, reference, device)}


def frontier(proto: Protocol, run: dict, reference: str | None, device: str) -> list[dict]:
    """Sample quality against denoiser calls for every sampler of the row's family."""
    fr = proto.frontier
    lm = sd.DiffusionLM.load(run["points"][-1]["checkpoint"], map_location=device)
    ref = sd.DiffusionLM.load(reference, map_location=device) if reference else None
    train = train_reference(lm.data_config["corpus"])
    length = lm.data_config["seq_len"]
    cells = []
    for sampler in samplers_for(lm.path):
        # the AR baseline fills one position per step: it runs once, at ``length`` steps
        steps = [length] if lm.path.family == "autoregressive" else fr.steps
        for n in steps:
            cells.append({"sampler": sampler, "steps": n})
            try:
                texts, nfe, secs = draw_samples(
                    lm, fr.samples, length, n, sampler, run["seed"], fr.batch_size
                )
                cells[-1] |= {"nfe": nfe, "seconds": round(secs, 2)}
                cells[-1] |= sample_metrics(texts, train, ref) | {"example": texts[0][:100]}
            except Exception as e:  # recorded, not fatal
                cells[-1]["error"] = _failure(run, e)
    return cells


def _failure(run: dict, e: Exception) -> str:
    """One line naming a failed measurement, printed and recorded in its place."""
    line = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    print(f"!! {run_key(run['row'], run['seed'])}: {line}", flush=True)
    return line


def _worker_setup(proto: Protocol) -> str:
    """The worker's device; on a GPU, TF32 matrix products (bf16 autocast comes from the
    recipe's ``trainer.precision``) and a share of the CPU threads."""
    if proto.device == "gpu":
        torch.set_float32_matmul_precision("high")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // proto.jobs))
        return "cuda"
    return "cpu"


# --- the run -------------------------------------------------------------------------------------
def pool(proto: Protocol) -> ProcessPoolExecutor:
    if proto.device == "cpu":
        return pinned_pool(proto.jobs)
    return ProcessPoolExecutor(proto.jobs, mp_context=get_context("spawn"))


def provenance(proto: Protocol) -> dict:
    import lightning

    commit = source_commit()
    saved = torch.get_num_threads()
    if proto.device == "cpu":
        torch.set_num_threads(1)  # as in every worker: machine() names it
    name = machine()
    torch.set_num_threads(saved)
    return {
        "machine": name,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "commit": commit,
    }


def recorded(proto: Protocol, out: Path) -> dict:
    """The report ``out`` holds of this protocol (an empty one if there is no ``out``); a
    ``ConfigError`` if it holds another protocol's results, which are never overwritten."""
    spec = OmegaConf.to_container(OmegaConf.structured(proto))
    if not out.exists():
        return {"protocol": spec, "runs": {}}
    report = json.loads(out.read_text())
    if report.get("protocol") != spec:
        raise ConfigError(
            f"{out} holds results of another protocol: pass another --out, or remove it to "
            "replace them"
        )
    return report


def run_protocol(proto: Protocol, out: Path, runs: str, report: dict) -> dict:
    """Every task of the protocol not yet in ``report`` (``recorded(proto, out)``), saved to
    ``out`` as each finishes; returns the report."""
    report |= provenance(proto)
    out.parent.mkdir(parents=True, exist_ok=True)
    # strict JSON: an unavailable (infinite) bound is null
    save = lambda: out.write_text(json.dumps(finite_or_null(report), indent=1))  # noqa: E731
    save()
    data = {
        json.dumps(OmegaConf.to_container(row_cfg(proto, n, r, 0, "x").data))
        for n, r in proto.rows.items()
    }
    for spec in data:  # warm each data cache once, before the workers read it
        sd.data.TextDataModule(**json.loads(spec)).split("train")
    start = time.perf_counter()
    todo = [(n, s) for n in proto.rows for s in proto.seeds if run_key(n, s) not in report["runs"]]
    with pool(proto) as workers:
        futures = [workers.submit(train_task, proto, n, s, runs) for n, s in todo]
        for f in as_completed(futures):
            run = f.result()
            report["runs"][run_key(run["row"], run["seed"])] = run
            save()
            print(
                f"== trained {run_key(run['row'], run['seed'])}: {run['steps']} steps", flush=True
            )
        ar = [k for k, r in report["runs"].items() if r.get("path", Path(r["recipe"]).stem) == "ar"]
        reference = report["runs"][ar[0]]["points"][-1]["checkpoint"] if ar else proto.reference
        report["reference"] = reference
        todo = [k for k, r in report["runs"].items() if "frontier" not in r]
        futures = [workers.submit(score_task, proto, report["runs"][k], reference) for k in todo]
        for f in as_completed(futures):
            run = f.result()
            report["runs"][run_key(run["row"], run["seed"])] = run
            save()
            print(f"== scored {run_key(run['row'], run['seed'])}", flush=True)
    report["wall_seconds_this_call"] = round(time.perf_counter() - start, 1)
    save()
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("protocol", help="a protocol YAML (benchmarks/protocols/)")
    p.add_argument("overrides", nargs="*", help="dotlist applied to the protocol, e.g. jobs=4")
    p.add_argument("--out", help="results JSON (default benchmarks/results/<name>.json)")
    p.add_argument("--runs", help="run folders (default runs/ablate/<name>)")
    args = p.parse_args(argv)
    try:
        proto = load_protocol(args.protocol, args.overrides)
        if proto.device == "gpu" and not torch.cuda.is_available():
            raise ConfigError("the protocol's device is gpu but torch sees no CUDA device")
        out = Path(args.out or f"benchmarks/results/{proto.name}.json")
        report = recorded(proto, out)
    except sd.SimplexdiffError as e:  # one line, exit 2, before any work
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    report = run_protocol(proto, out, args.runs or f"runs/ablate/{proto.name}", report)
    print(write_tables(report, out))


if __name__ == "__main__":
    main()
