"""Where in time a model's bound and loss lie: the per-time profile of trained checkpoints.

    python benchmarks/time_profile.py CKPT [CKPT ...] --out benchmarks/results/time_profile

For each checkpoint, on the first ``--sequences`` chunks of the test split and at ``--points``
times ``t`` (a grid dense towards both ends), two curves in nats per token:

* the **bound's integrand** ``sequence_bound(t)`` (paths whose bound is a time integral: masked,
  uniform, RDLM; its integral over ``t`` is the bound, less the terms at the ends), and
* the **training loss** at ``t`` and, for the continuous paths, the x1 cross-entropy at ``t``
  (the denoising difficulty: ``log V`` where the state says nothing, 0 where it gives the token).

The x1 cross-entropy says where training time is spent on a solved task (issue 13: uniform
training times). Beside them, the density of the times the checkpoint's path trains on
(``training_times(warp_times(u))`` for uniform ``u``: uniform, RDLM's window, or the learned time
warp as the checkpoint left it). Writes JSON and a PNG (log-scale integrand, x1 cross-entropy and
the training-time density against ``t``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import simplexdiff as sd
from simplexdiff.cli import finite_or_null, machine


def grid(points: int) -> list[float]:
    """``points`` times in ``(0, 1)``, dense towards both ends (a logit-spaced grid)."""
    z = torch.linspace(-9, 9, points, dtype=torch.float64)
    return torch.sigmoid(z).tolist()


def training_density(path: sd.paths.Path, times: list[float], bins: int = 100) -> list[float]:
    """The density of the path's training times at ``times``: a histogram of ``bins`` equal
    bins over ``[0, 1]`` of the times that 100,000 midpoint uniforms map to."""
    u = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000
    drawn = path.training_times(path.warp_times(u)).double()
    density = torch.histc(drawn, bins, 0, 1) * bins / len(u)
    index = (torch.tensor(times, dtype=torch.float64) * bins).long().clamp(0, bins - 1)
    return density[index].tolist()


@torch.no_grad()
def profile(file: str, points: int, sequences: int, batch: int, seed: int) -> dict:
    lm = sd.DiffusionLM.load(file)
    path, model = lm.path, lm.model
    tokens = sd.data.TextDataModule(**lm.data_config).split("test")[:sequences]
    has_integrand = path.bound == "nelbo"  # a time integral of sequence_bound
    rows = []
    for t in grid(points):
        g = torch.Generator().manual_seed(seed)
        integrand, loss, x1_ce = [], [], []
        for x in tokens.split(batch):
            times = torch.full((len(x),), t)
            out = path.training_loss(model, x, times, g)
            loss.append(float(out.loss) * len(x))
            if "x1_ce" in out.metrics:
                x1_ce.append(float(out.metrics["x1_ce"]) * len(x))
            if has_integrand:
                integrand.append(float(path.sequence_bound(model, x, times.double(), g).sum()))
        n = len(tokens)
        rows.append(
            {
                "t": t,
                "integrand": sum(integrand) / n if has_integrand else None,
                "loss": sum(loss) / n,
                "x1_ce": sum(x1_ce) / n if x1_ce else None,
            }
        )
    density = training_density(path, [r["t"] for r in rows])
    for r, d in zip(rows, density, strict=True):
        r["train_density"] = d
    return {"checkpoint": file, "path": path.config(), "bound": path.bound, "profile": rows}


def plot(report: dict, file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.8))
    for i, r in enumerate(report["checkpoints"]):
        style = {"marker": "o", "ms": 2, "label": r["label"], "color": f"C{i}"}  # one per panel
        t = [p["t"] for p in r["profile"]]
        if r["profile"][0]["integrand"] is not None:
            a.plot(t, [p["integrand"] for p in r["profile"]], **style)
        if r["profile"][0]["x1_ce"] is not None:  # the continuous paths
            b.plot(t, [p["x1_ce"] for p in r["profile"]], **style)
        if "train_density" in r["profile"][0]:
            c.plot(t, [p["train_density"] for p in r["profile"]], **style)
    a.set(yscale="log", xlabel="t", ylabel="bound integrand (nats/token)", title="bound")
    b.set(xlabel="t", ylabel="x1 cross-entropy (nats/token)", title="denoising difficulty")
    c.set(xlabel="t", ylabel="density", title="training times")
    for ax in (a, b, c):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="*", help="LABEL=FILE or FILE")
    p.add_argument("--points", type=int, default=25)
    p.add_argument("--sequences", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/time_profile")
    p.add_argument("--replot", type=Path, help="only redraw the PNG of this results JSON")
    args = p.parse_args(argv)
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return
    specs = [c.split("=", 1) if "=" in c else (Path(c).stem, c) for c in args.checkpoints]
    for _, f in specs:
        if not Path(f).is_file():
            sys.exit(f"time_profile: no checkpoint {f}")
    torch.manual_seed(args.seed)
    start, reports = time.perf_counter(), []
    for label, f in specs:
        reports.append(
            {"label": label, **profile(f, args.points, args.sequences, args.batch, args.seed)}
        )
        print(f"profiled {label} ({f})", flush=True)
    report = {
        "benchmark": "time_profile",
        "machine": machine(),
        "command": " ".join(sys.argv),
        "settings": {k: getattr(args, k) for k in ("points", "sequences", "batch", "seed")},
        "seconds": round(time.perf_counter() - start, 1),
        "checkpoints": reports,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(finite_or_null(report), indent=1) + "\n")
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
