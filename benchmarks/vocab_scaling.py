"""Training-step time and peak memory of every path as the vocabulary grows (issue 14).

One row per (path, V, split): a full training step (the path's loss, backward, AdamW) on the
DESIGN "S" backbone and batch (DiT d256 x 4 layers, 4 heads, 32 x 256 tokens; the causal
transformer for the AR baseline), at V = 256, 2k, 8k, 32k and 50,257 (GPT-2's size). Continuous
paths run with and without dimension splitting (``split: {base: b}``, ``simplexdiff/paths/
digits.py``); ``backbone_digit_positions`` times the alternative layout where each digit is its
own position (the bare DiT at ``L m`` positions of ``b`` symbols), to show why splitting keeps one
position per token. Each row runs in a fresh process: the median of ``--repeats`` timed steps after
one warm-up, and its memory as the peak resident set size over the steps minus the size before
the first step (the step's working memory: activations, gradients, optimizer state, the path's
``B L V`` states). A row that runs out of ``--row-timeout`` or of ``--memory-limit-gb`` of address
space is recorded as failed, with the reason.

    python benchmarks/vocab_scaling.py [--out benchmarks/results/vocab_scaling] [--base 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

VOCABS = [256, 2048, 8192, 32768, 50257]
DISCRETE = ["masked", "uniform", "ar"]
CONTINUOUS = ["fisher_rao", "linear", "dirichlet"]
# DESIGN "S", with the half-split rotary pairs and untied head the committed results were timed with
S_CONFIG = dict(d_model=256, n_layers=4, n_heads=4, positions="rotary_halves", tie_weights=False)


def rss_mb() -> float:
    """The peak resident set size of this process so far (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return rss_mb()


def one_row(path_name: str, vocab: int, base: int | None, args: argparse.Namespace) -> dict:
    """Time one training step configuration in this process."""
    import simplexdiff as sd
    from simplexdiff.lightning import stratified_times

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    if path_name == "backbone_digit_positions":  # each digit its own position
        from simplexdiff.paths.digits import digit_count

        m = digit_count(vocab, base)
        model = sd.models.build("dit", vocab_size=base, max_len=args.seq * m, **S_CONFIG)
        x = torch.softmax(torch.randn(args.batch, args.seq * m, base, generator=gen), -1)
        targets = torch.randint(0, base, (args.batch, args.seq * m), generator=gen)

        def loss_fn():
            t = torch.rand(args.batch, generator=gen)
            return torch.nn.functional.cross_entropy(model(x, t).flatten(0, 1), targets.flatten())
    else:
        split = {"split": {"base": base}} if base else {}
        path = sd.paths.build(path_name, vocab_size=vocab, **split)
        backbone = "causal" if path.causal else "dit"
        model = sd.models.build(
            backbone, vocab_size=path.model_vocab_size, max_len=args.seq, **S_CONFIG
        )
        x1 = torch.randint(0, vocab, (args.batch, args.seq), generator=gen)

        def loss_fn():
            t = path.training_times(stratified_times(args.batch, gen))
            return path.training_loss(model, x1, t, gen).loss

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    before = current_rss_mb()
    times = []
    for i in range(1 + args.repeats):
        start = time.perf_counter()
        step()
        if i:  # the first is a warm-up (it also allocates the optimizer state)
            times.append(time.perf_counter() - start)
    return {
        "step_s": sorted(times)[len(times) // 2],
        "step_s_all": times,
        "extra_mb": rss_mb() - before,
        "params": sum(p.numel() for p in model.parameters()),
    }


def run_row(path_name: str, vocab: int, base: int | None, args) -> dict:
    row = {"path": path_name, "vocab": vocab, "split_base": base}
    cmd = [sys.executable, __file__, "--one", path_name, str(vocab), str(base or 0)]
    cmd += ["--seq", str(args.seq), "--batch", str(args.batch), "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads)]
    limit = int(args.memory_limit_gb * 2**30)

    def cap_memory():  # an allocation beyond it fails in the row, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.row_timeout, preexec_fn=cap_memory
        )
    except subprocess.TimeoutExpired:
        return {**row, "failed": f"over {args.row_timeout} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["killed"])[-1]
        return {**row, "failed": f"exit {done.returncode}: {last[:200]}"}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


def label(row: dict) -> str:
    return f"{row['path']} (split b={row['split_base']})" if row["split_base"] else row["path"]


def markdown(report: dict) -> str:
    rows = report["rows"]
    vocabs = sorted({r["vocab"] for r in rows})
    labels = list(dict.fromkeys(label(r) for r in rows))
    cell = {(label(r), r["vocab"]): r for r in rows}

    def fmt(r, key, unit):
        if r is None:
            return ""
        if "failed" in r:
            return "failed"
        return f"{r[key]:.2f} {unit}" if key == "step_s" else f"{r[key]:.0f} {unit}"

    head = "| path | " + " | ".join(f"V = {v:,}" for v in vocabs) + " |"
    sep = "|---|" + "---|" * len(vocabs)
    out = [f"# Vocabulary scaling ({report['machine']})", "", report["protocol"], ""]
    for key, unit, title in (("step_s", "s", "Step time"), ("extra_mb", "MB", "Step memory")):
        out += [f"## {title}", "", head, sep]
        for name in labels:
            out.append(
                f"| {name} | "
                + " | ".join(fmt(cell.get((name, v)), key, unit) for v in vocabs)
                + " |"
            )
        out.append("")
    out += ["## Ratios to the masked path at the largest V", "", "| path | time | memory |"]
    out.append("|---|---|---|")
    big = max(vocabs)
    ref = cell.get(("masked", big))
    for name in labels:
        r = cell.get((name, big))
        if ref and r and "failed" not in r and "failed" not in ref:
            out.append(
                f"| {name} | {r['step_s'] / ref['step_s']:.2f}x | "
                f"{r['extra_mb'] / ref['extra_mb']:.2f}x |"
            )
    failed = [f"- {label(r)}, V = {r['vocab']:,}: {r['failed']}" for r in rows if "failed" in r]
    if failed:
        out += ["", "Failed rows:", "", *failed]
    return "\n".join(out) + "\n"


def figure(report: dict, file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    lines: dict[str, list[dict]] = {}
    for r in report["rows"]:
        if "failed" not in r and r["path"] != "backbone_digit_positions":
            lines.setdefault(label(r), []).append(r)
    panels = (("step_s", "step time (s)"), ("extra_mb", "step memory (MB)"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, rows in lines.items():
            rows = sorted(rows, key=lambda r: r["vocab"])
            style = "--" if "split" in name else "-"
            ax.plot(
                [r["vocab"] for r in rows], [r[key] for r in rows], style, marker="o", label=name
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vocabulary size V")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(file, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/vocab_scaling")
    p.add_argument("--vocab", type=int, nargs="*", default=VOCABS)
    p.add_argument("--paths", nargs="*", default=DISCRETE + CONTINUOUS)
    p.add_argument("--base", type=int, default=16, help="digit base of the split rows")
    p.add_argument("--unsplit-max", type=int, default=50257, help="largest V for unsplit rows")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--row-timeout", type=int, default=600)
    p.add_argument("--memory-limit-gb", type=float, default=16, help="address space per row")
    p.add_argument("--one", nargs=3, metavar=("PATH", "V", "BASE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        name, vocab, base = args.one
        print(json.dumps(one_row(name, int(vocab), int(base) or None, args)))
        return
    from simplexdiff.cli import machine

    sys.path.insert(0, str(Path(__file__).parent))
    from workers import source_commit

    jobs = []
    for vocab in args.vocab:
        for name in args.paths:
            if name not in CONTINUOUS or vocab <= args.unsplit_max:
                jobs.append((name, vocab, None))
            if name in CONTINUOUS and args.base < vocab:
                jobs.append((name, vocab, args.base))
        if args.base < vocab:
            jobs.append(("backbone_digit_positions", vocab, args.base))
    rows = []
    for i, (name, vocab, base) in enumerate(jobs):
        row = run_row(name, vocab, base, args)
        rows.append(row)
        shown = row.get("failed") or f"{row['step_s']:.2f} s, {row['extra_mb']:.0f} MB"
        print(f"[{i + 1}/{len(jobs)}] {label(row)} V={vocab}: {shown}", flush=True)
    report = {
        "machine": machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "commit": source_commit(),
        "protocol": (
            f"A training step (loss, backward, AdamW) on DiT d256 x 4 layers x 4 heads (causal for "
            f"AR), batch {args.batch} x {args.seq} tokens, {args.threads} thread(s); median of "
            f"{args.repeats} steps after a warm-up; memory: peak RSS over the steps minus RSS "
            f"before them, each row in a fresh process; split rows: base {args.base}."
        ),
        "seed": 0,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    figure(report, out.with_suffix(".png"))
    print(markdown(report))


if __name__ == "__main__":
    main()
