"""Build the paper: ``paper/paper.md`` and ``paper/fig_*.png`` from the JSON under
``benchmarks/results/`` and the static prose of ``paper/template.md``.

    python paper/build.py [--out DIR] [--results DIR]      # or: make paper

The prose lives in the template file ``paper/template.md``; each ``{{name}}`` placeholder there is
replaced by Markdown generated here from the result files (tables, settings, figure links), so every
number in the paper is read from a JSON field. A result file that does not exist becomes a sentence
saying so. The output is byte-reproducible: no timestamps or absolute paths, figures drawn by Agg
with matplotlib's default style and no software stamp (the PNG bytes still depend on the matplotlib
version, pinned in ``constraints.txt``). ``tests/test_paper.py`` checks the committed paper.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).resolve().parent / "template.md"
FILES = {  # key -> file under the results folder
    "toy": "toy_simplex.json",
    "toy_k8": "toy_simplex_k8.json",
    "positions": "backbone_positions.json",
    "side": "text8_side_by_side_15min.json",
    "cpu": "cpu_text8.json",
    "rdlm": "cpu_text8_rdlm.json",
    "gpu": "gpu_text8.json",
    "sweep": "text8_sampler_sweep.json",
    "throughput": "throughput.json",
    "shake": "cpu_shakespeare.json",
    "vocab_scaling": "vocab_scaling.json",
    "instruct": "instruct.json",
    "time_profile": "time_profile.json",
    "reversal": "reversal.json",
    "flow_decoders": "flow_decoders.json",
}
QUALITY = ("unigram_entropy", "word_validity")  # sample metrics shown beside ref-AR bits/char


# --- formatting ------------------------------------------------------------------------------------
def num(v: object) -> str:
    """A JSON value as text: floats in ``%g``, lists and dicts spelled out."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ", ".join(num(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {num(x)}" for k, x in v.items())
    return str(v)


def bpc(value: float | None, err: float | None = None) -> str:
    """Bits/char with 3 decimals (``± s.e.`` when given); "not evaluated" when absent."""
    if value is None:
        return "not evaluated"
    if not math.isfinite(value):
        return "inf (ODE left support)"
    return f"{value:.3f}" if err is None else f"{value:.3f} ± {err:.3f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def missing(key: str, what: str) -> str:
    return f"`benchmarks/results/{FILES[key]}` does not exist: {what} has not been run yet."


def save(fig: plt.Figure, out: Path, name: str, alt: str) -> str:
    """Write the figure reproducibly; its Markdown image link."""
    fig.tight_layout()
    fig.savefig(out / name, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return f"![{alt}]({name})"


def bars(groups: list[str], series: dict[str, list[tuple]], ylabel: str) -> tuple:
    """Grouped bars ``(value, stderr)`` per series and group; a missing value leaves a gap."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    width = 0.8 / len(series)
    for i, (label, vals) in enumerate(series.items()):
        x = [j + i * width for j in range(len(groups))]
        y = [float("nan") if v is None else v for v, _ in vals]
        ax.bar(x, y, width, yerr=[e or 0.0 for _, e in vals], label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], groups)
    ax.set(ylabel=ylabel)
    return fig, ax


def frontier_figure(series: dict[str, list[tuple[int, float]]]) -> plt.Figure:
    """Ref-AR bits/char of samples against denoiser calls (log x), one line per series."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for label, pts in series.items():
        ax.plot(*zip(*sorted(pts), strict=True), marker="o", ms=3, label=label)
    ax.set(xscale="log", xlabel="denoiser calls", ylabel="ref-AR bits/char of samples")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def family(row: dict) -> str:
    return row.get("path", {}).get("name") or Path(row["recipe"]).stem


# --- sections --------------------------------------------------------------------------------------
def protocols(d: dict[str, dict | None]) -> str:
    """One row per experiment: its machine, training compute and evaluation settings."""
    rows = []
    if t := d["toy"]:
        s = t["settings"]
        run = f"{s['train_steps']} steps of batch {s['batch']} per cell"
        run += f"; {s['jobs']} workers x {s['threads_per_job']} thread" if "jobs" in s else ""
        rows.append(["toy", t["machine"], run, f"{s['samples']} samples per cell"])
    if p := d["positions"]:
        s = p["settings"]
        run = f"{s['steps']} steps per cell; {p['jobs']} pinned workers"
        ev = f"first {s['eval_sequences']} chunks of {num(s['splits'])}; num_t {s['num_t']}, "
        rows.append(["positions", p["machine"], run, ev + f"ODE steps {s['ode_steps']}"])
    if s := d["side"]:
        run = f"{s['budget_seconds']:g} s of wall clock per row, in one run; {s['jobs']} pinned "
        run += f"worker(s) x {s['torch_threads']} torch thread"
        ev = f"first {s['eval_sequences']} {s['split']} chunks; per-row settings in 3.3"
        rows.append(["side by side", s["machine"], run, ev])
    for key in ("cpu", "rdlm", "gpu"):
        if r := d[key]:
            pr, ev = r["protocol"], r["protocol"]["eval"]
            run = f"{pr['budget_seconds']:g} s per row x seed; {pr['jobs']} at a time on "
            run += pr["device"]
            evs = f"first {ev['sequences']} {ev['split']} chunks; num_t {ev['num_t']}, "
            rows.append([pr["name"], r["machine"], run, evs + f"ODE steps {ev['ode_steps']}"])
        else:
            rows.append([Path(FILES[key]).stem, "not run yet", "-", "-"])
    if w := d["sweep"]:
        s = w["settings"]
        ev = f"{s['samples']} samples of {s['length']} chars; steps {num(s['steps'])}"
        rows.append(["sampler sweep", w["machine"], "side-by-side checkpoints", ev])
    if f := d["flow_decoders"]:
        ev = f"first {f['sequences']} test chunks; ODE steps {f['ode_steps']}"
        rows.append(["flow decoders", f["machine"], "side-by-side checkpoints", ev])
    if h := d["throughput"]:
        c = h["config"]
        threads = h["machine"]["threads"]
        run = f"batch {c['batch']} x seq {c['seq']}, {c['rounds']} rounds in turns, {threads} thread(s)"
        rows.append(["throughput", h["machine"]["name"], run, "-"])
    return table(["experiment", "machine", "training compute", "evaluation"], rows)


def toy_table(rep: dict) -> str:
    ks = sorted({r["K"] for r in rep["rows"]})
    cells: dict[str, dict[int, str]] = {}
    for r in rep["rows"]:
        cells.setdefault(r["path"], {})[r["K"]] = f"{r['kl']:.3g} ({r['kl_over_floor']:.2f}x)"
    ref = rep["reference"]
    rows = [["floor (perfect sampler)"] + [f"{ref[str(k)]['floor']:.3g}" for k in ks]]
    rows += [["uniform sampler"] + [f"{ref[str(k)]['uniform_kl']:.3g}" for k in ks]]
    rows += [[p] + [c.get(k, "-") for k in ks] for p, c in cells.items()]
    pub = rep.get("published", {})
    for name, values in pub.get("kl", {}).items():
        by_k = dict(zip(pub["K"], values, strict=True))
        if any(k in by_k for k in ks):
            rows.append([f"{name} (published)"] + [num(by_k[k]) if k in by_k else "-" for k in ks])
    text = table(["path"] + [f"K = {k}" for k in ks], rows)
    if any(k in pub.get("K", []) for k in ks):
        text += f"\n\nPublished rows: {pub['source']}."
    return text


def toy(d: dict[str, dict | None], out: Path) -> str:
    rep = d["toy"]
    if rep is None:
        return missing("toy", "the toy benchmark")
    s = rep["settings"]
    parts = [
        f"Machine: {rep['machine']}. Target `{rep['target']}`, sequences of length {s['length']}, "
        f"{s['samples']} samples per cell; sampler steps per path: {num(s['sample_steps'])}.",
        toy_table(rep),
    ]
    if k8 := d["toy_k8"]:
        parts += [
            f"Target `{k8['target']}` (`{FILES['toy_k8']}`, machine: {k8['machine']}), "
            f"{k8['settings']['samples']} samples per cell:",
            toy_table(k8),
        ]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ks = sorted({r["K"] for r in rep["rows"]})
    for path in dict.fromkeys(r["path"] for r in rep["rows"]):
        pts = sorted((r["K"], r["kl"]) for r in rep["rows"] if r["path"] == path)
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=path)
    ax.plot(ks, [rep["reference"][str(k)]["floor"] for k in ks], "k--", label="floor")
    pub = rep.get("published", {})
    for name, values in pub.get("kl", {}).items():
        ax.plot(pub["K"], values, ":", marker="s", mfc="none", ms=4, label=f"{name} (published)")
    ax.set(xscale="log", yscale="log", xlabel="K (symbols)", ylabel="KL(samples || target)")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xticks([], minor=True)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    parts.append(save(fig, out, "fig_toy.png", "Toy KL against K per path"))
    return "\n\n".join(parts)


def positions(d: dict[str, dict | None], out: Path) -> str:
    rep = d["positions"]
    if rep is None:
        return missing("positions", "the positions ablation")
    s = rep["settings"]
    by = {(r["family"], r["backbone"]): r for r in rep["rows"]}
    backbones = list(rep["backbones"])
    tables = []
    for split in s["splits"]:
        rows = []
        for fam in s["families"]:
            cells = [by.get((fam, b), {}) for b in backbones]
            bound = next((c["bound"] for c in cells if "bound" in c), "-")
            vals = [bpc(c.get(f"{split}_bpc"), c.get(f"{split}_bpc_stderr")) for c in cells]
            rows.append([fam, bound] + vals)
        tables.append(
            f"{split.capitalize()} split:\n\n" + table(["family", "bound"] + backbones, rows)
        )
    about = "\n".join(
        f"* `{b}`: {spec['about']} (`{' '.join(spec['overrides']) or 'defaults'}`)"
        for b, spec in rep["backbones"].items()
    )
    series = {
        b: [(by.get((f, b), {}).get("test_bpc"), by.get((f, b), {}).get("test_bpc_stderr"))
            for f in s["families"]]
        for b in backbones
    }  # fmt: skip
    fig, ax = bars(s["families"], series, "test bound, bits/char")
    ax.legend(fontsize=8)
    return "\n\n".join(
        [
            f"Machine: {rep['machine']}. Recipe `{rep['recipe']}` with each family and each "
            f"backbone, {s['steps']} steps per cell (equal steps, not equal time), seed and "
            "settings shared; bits/char ± 1 s.e. A backbone is today's defaults or a change of "
            "them; a cell not evaluated was not trained (some details ran for some families "
            "only; the causal AR model reads no time):",
            about,
            *tables,
            save(fig, out, "fig_positions.png", "Test bound per family and backbone"),
        ]
    )


def side_by_side(d: dict[str, dict | None], out: Path) -> str:
    rep = d["side"]
    if rep is None:
        return missing("side", "the side-by-side")
    rows, settings = [], []
    for r in rep["rows"]:
        m = r.get("sample_metrics", {})
        sampler = f"{r['sampler']} ({r['sample_steps']} steps)" if "sampler" in r else "-"
        bound = bpc(r.get("test_bpc"), r.get("test_bpc_stderr"))
        ref = bpc(m.get("reference_bpc"), m.get("reference_bpc_stderr"))
        quality = [f"{m[k]:.3f}" if k in m else "not evaluated" for k in QUALITY]
        lead = [family(r), str(r["steps"]), f"{r['train_seconds']:g}", r.get("bound", "-")]
        rows.append(lead + [bound, sampler, ref, *quality])
        if "bound_settings" in r:
            settings.append(f"{family(r)}: {num(r['bound_settings'])}")
    head = ["family", "steps", "train s", "bound", f"{rep['split']} bits/char", "sampler"]
    head += ["ref-AR bits/char of samples", "sample entropy", "word validity"]
    scored = sorted((r["test_bpc"], family(r), r["bound"]) for r in rep["rows"] if "test_bpc" in r)
    order = ", ".join(f"{f} ({b}) {bpc(v)}" for v, f, b in scored)
    parts = [
        f"Machine: {rep['machine']}. Every row trained for {rep['budget_seconds']:g} s of wall "
        f"clock in one run; bound on the first {rep['eval_sequences']} {rep['split']} chunks, "
        "bits/char ± 1 s.e.",
        table(head, rows),
        "Bound settings: " + "; ".join(settings) + "." if settings else "",
        f"Test bounds, lowest first: {order}." if order else "",
    ]
    ms = [r.get("sample_metrics", {}) for r in rep["rows"]]
    series = {
        "test bound": [(r.get("test_bpc"), r.get("test_bpc_stderr")) for r in rep["rows"]],
        "ref-AR bits/char of samples": [
            (m.get("reference_bpc"), m.get("reference_bpc_stderr")) for m in ms
        ],
    }
    fig, ax = bars([family(r) for r in rep["rows"]], series, "bits/char")
    if ent := [m["train_unigram_entropy"] for m in ms if "train_unigram_entropy" in m]:
        ax.axhline(ent[0], color="k", ls="--", lw=1, label="train-split unigram entropy")
    ax.legend(fontsize=7)
    parts.append(save(fig, out, "fig_side_by_side.png", "Side-by-side bounds and sample quality"))
    return "\n\n".join(p for p in parts if p)


def reference_name(ref: str | None) -> str:
    """``protocol/run`` of a reference checkpoint ``runs/ablate/<protocol>/<run>/points/<p>``
    (no machine paths in the paper)."""
    if ref is None:
        return "none"
    p = Path(ref)
    return f"{p.parts[-4]}/{p.parts[-3]}" if p.parent.name == "points" else p.name


def ablation(key: str, d: dict[str, dict | None], out: Path) -> str:
    """Learning curves and speed-quality frontier of a ``benchmarks/ablate.py`` report."""
    name = Path(FILES[key]).stem
    rep = d[key]
    if rep is None:
        return missing(key, f"the protocol `benchmarks/protocols/{name}.yaml`")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablate_report import curves, draw_curves, reading

    pr, ev, fr = rep["protocol"], rep["protocol"]["eval"], rep["protocol"]["frontier"]
    intro = (
        f"Machine: {rep['machine']} (lightning {rep['lightning']}, commit "
        f"`{rep['commit']}` as recorded). {len(pr['rows'])} rows x seeds {num(pr['seeds'])}, "
        f"{pr['budget_seconds']:g} s of training each, {pr['jobs']} at a time on {pr['device']}; "
        f"overrides for all rows: `{' '.join(pr['overrides']) or '-'}`. Bound on the first "
        f"{ev['sequences']} {ev['split']} chunks (num_t {ev['num_t']}, ODE steps "
        f"{ev['ode_steps']}) at every curve point, bits/token (bits/char for a char tokenizer) "
        "± 1 s.e. (step in brackets)."
    )
    lines = curves(rep)
    bounds = {r["row"]: r["points"][-1].get("bound", "-") for r in rep["runs"].values()}
    rows = []
    for row, line in lines.items():
        cells = {p: f"{bpc(b, e)} ({s})" for p, b, e, s in line}
        spec = pr["rows"][row]
        rows.append(
            [row, spec["recipe"], f"`{' '.join(spec['overrides'])}`" if spec["overrides"] else "-"]
            + [bounds.get(row, "-")]
            + [cells.get(p, "-") for p in pr["points"]]
        )
    curve_head = ["row", "recipe", "row overrides", "bound"] + [f"{p:g} s" for p in pr["points"]]
    cells, series = [], {}
    for run in rep["runs"].values():
        label = run["row"] + (f" s{run['seed']}" if len(pr["seeds"]) > 1 else "")
        for c in run.get("frontier", []):
            lead = [run["row"], str(run["seed"]), c["sampler"], str(c["steps"])]
            if "error" in c:
                cells.append(lead + [f"failed ({c['error'].split(':')[0]})"] + ["-"] * 4)
                continue
            ref = c.get("reference_bpc")
            cells.append(
                lead
                + [str(c["nfe"]), bpc(ref, c.get("reference_bpc_stderr"))]
                + [f"{c[k]:.3f}" for k in ("unigram_entropy", "word_validity", "ngram_kl_2")]
            )
            if ref is not None:
                series.setdefault(f"{label} {c['sampler']}", []).append((c["nfe"], ref))
    front_head = ["row", "seed", "sampler", "steps", "NFE", "ref-AR bits/char"]
    front_head += ["entropy", "word validity", "2-gram KL"]
    parts = [intro, table(curve_head, rows)]
    if any(lines.values()):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        draw_curves(ax, lines)
        parts.append(save(fig, out, f"fig_{name}_curves.png", f"Learning curves, {name}"))
        parts.append("\n".join(reading(lines)))
    parts += [
        f"Speed-quality frontier: {fr['samples']} samples per cell from each final checkpoint at "
        f"steps {num(fr['steps'])} with every sampler of the family, measured under the "
        f"reference AR model `{reference_name(rep.get('reference'))}` (the final checkpoint of an "
        "`ar` row).",
        table(front_head, cells) if cells else "No frontier recorded yet.",
    ]
    if series:
        fig = frontier_figure(series)
        parts.append(save(fig, out, f"fig_{name}_frontier.png", f"Frontier, {name}"))
    return "\n\n".join(parts)


def sampler_sweep(d: dict[str, dict | None], out: Path) -> str:
    rep = d["sweep"]
    if rep is None:
        return missing("sweep", "the sampler sweep")
    s = rep["settings"]
    steps = sorted({r["steps"] for r in rep["rows"]})
    grid: dict[str, dict[int, str]] = {}
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rep["rows"]:
        key = f"{r['recipe']} / {r['sampler']}"
        ref = r.get("reference_bpc")
        cell = " / ".join([bpc(ref)] + [f"{r[k]:.3f}" if k in r else "-" for k in QUALITY])
        cell += "" if r["nfe"] == r["steps"] else f" [{r['nfe']}]"
        grid.setdefault(key, {})[r["steps"]] = cell
        if ref is not None:
            series.setdefault(key, []).append((r["nfe"], ref))
    parts = [
        f"Machine: {rep['machine']}. {s['samples']} samples of {s['length']} chars per cell, seed "
        f"{s['seed']}. Each cell: ref-AR bits/char of the samples / sample entropy / word "
        "validity; denoiser calls in brackets where they differ from the steps.",
        table(
            ["recipe / sampler"] + [f"{n} steps" for n in steps],
            [[k] + [g.get(n, "-") for n in steps] for k, g in grid.items()],
        ),
    ]
    if d["side"] and d["side"]["machine"] != rep["machine"]:
        parts.append(
            "The sweep's machine differs from the side-by-side's (3.3): it measured the "
            "checkpoints of an earlier side-by-side run, not those of section 3.3."
        )
    if series:
        fig = frontier_figure(series)
        parts.append(save(fig, out, "fig_sampler_sweep.png", "Sampler sweep: quality vs calls"))
    return "\n\n".join(parts)


def throughput(d: dict[str, dict | None]) -> str:
    rep = d["throughput"]
    if rep is None:
        return missing("throughput", "the throughput benchmark")
    c = rep["config"]
    paths = [
        [p["path"], p["backbone"], f"{p['train_step_s']:.3f}", f"{p['step_over_bare']:.3f}"]
        + [f"{p['tokens_per_s']:.0f}", f"{p['share_of_matmul_peak']:.3f}"]
        for p in rep["paths"]
    ]
    bones = [
        [
            b["backbone"],
            b["positions"],
            f"{b['bare_step_s']:.3f}",
            f"{b['over_rotary']:.3f}",
            f"{b['share_of_matmul_peak']:.3f}",
        ]
        for b in rep["backbones"]
    ]
    return "\n\n".join(
        [
            f"Machine: {rep['machine']['name']}. Backbone {num(c)}; measured matmul peak "
            f"{rep['matmul_peak_flops_per_s']:.3g} FLOP/s.",
            table(
                ["path", "backbone", "train step s", "step / bare", "tokens/s", "share of peak"],
                paths,
            ),
            table(
                ["backbone", "positions", "bare step s", "step / rotary", "share of peak"], bones
            ),
        ]
    )


def per_byte(d: dict[str, dict | None], out: Path) -> str:
    """The Tiny Shakespeare protocol: its curves and frontier, then every row in bits per byte."""
    rep = d["shake"]
    if rep is None:
        return missing("shake", "the protocol `benchmarks/protocols/cpu_shakespeare.yaml`")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablate_report import per_byte as per_byte_lines

    lines = per_byte_lines(rep)
    return ablation("shake", d, out) + "\n\n" + "\n".join(lines[1:])


def vocab_scaling(d: dict[str, dict | None], out: Path) -> str:
    rep = d["vocab_scaling"]
    if rep is None:
        return missing("vocab_scaling", "`benchmarks/vocab_scaling.py`")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vocab_scaling import figure, markdown

    body = markdown(rep).split("\n", 2)[2]  # without its title
    body = body.replace("\n## ", "\n#### ")
    figure(rep, out / "fig_vocab_scaling.png")
    return f"Machine: {rep['machine']}.\n\n{body.strip()}\n\n![Vocabulary scaling](fig_vocab_scaling.png)"


def conditional(d: dict[str, dict | None]) -> str:
    """Instruction fine-tuning and the reversal curse: the benchmarks' own tables."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    parts = []
    for key, script in (("instruct", "instruct"), ("reversal", "reversal")):
        rep = d[key]
        if rep is None:
            parts.append(missing(key, f"`benchmarks/{script}.py`"))
            continue
        module = __import__(script)
        parts.append(module.markdown(rep).split("\n", 2)[2].strip())  # without its title
    if d["instruct"] is not None and d["reversal"] is not None:
        parts.append(conditional_summary(d["instruct"], d["reversal"]))
    return "\n\n".join(parts)


def conditional_summary(instruct: dict, reversal: dict) -> str:
    """One paragraph read off the two tables: who passes the instruction set, and the reversal
    claim (the best diffusion family's reverse-by-infilling accuracy against autoregression's)."""
    at_90 = [r["family"] for r in instruct["runs"] if r["exact_match"] >= 0.9]
    acc = {
        r["family"]: {k: q["accuracy"] for k, q in r["queries"].items()} for r in reversal["runs"]
    }
    ar = acc.get("ar")
    best = max((f for f in acc if f != "ar"), key=lambda f: acc[f]["reverse_infill"], default=None)
    text = f"Families at or above 90% exact match on the instruction set: {', '.join(at_90) or 'none'}."
    if ar is not None and best is not None:
        b = acc[best]
        text += (
            f" Reversal: {best} recovers a fact seen only forward by infilling "
            f"{b['reverse_infill']:.0%} of the time (autoregressive: {ar['reverse_infill']:.0%}), "
            f"with forward accuracy {b['forward']:.0%} (autoregressive: {ar['forward']:.0%}); asked "
            f"by a reversed prompt, a sentence form seen only for other pairs, {best} answers "
            f"{b['reverse_prompt']:.0%} (autoregressive: {ar['reverse_prompt']:.0%})."
        )
    return text


def flow_decoders(d: dict[str, dict | None]) -> str:
    """The flow bound with each decoder and decode time: the benchmark's own table."""
    rep = d["flow_decoders"]
    if rep is None:
        return missing("flow_decoders", "`benchmarks/flow_decoders.py`")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from flow_decoders import markdown

    return markdown(rep).strip()


def time_profile(d: dict[str, dict | None], out: Path) -> str:
    """Per-time bound integrand and x1 cross-entropy of trained checkpoints."""
    rep = d["time_profile"]
    if rep is None:
        return missing("time_profile", "`benchmarks/time_profile.py`")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from time_profile import plot

    s = rep["settings"]
    labels = [r["label"] for r in rep["checkpoints"]]
    head = ["t"] + [f"{lab} {k}" for lab in labels for k in ("integrand", "x1 CE")]
    rows = []
    for i, t in enumerate(p["t"] for p in rep["checkpoints"][0]["profile"]):
        cells = [f"{t:.4f}"]
        for r in rep["checkpoints"]:
            point = r["profile"][i]
            cells += [
                num(point[k]) if point[k] is not None else "-" for k in ("integrand", "x1_ce")
            ]
        rows.append(cells)
    plot(rep, out / "fig_time_profile.png")
    return "\n\n".join(
        [
            f"Per-time profile (`benchmarks/time_profile.py`, machine: {rep['machine']}) of the "
            f"final checkpoints above on the first {s['sequences']} test chunks, nats per token: "
            "the bound's integrand at $t$ (its integral over $t$ is the bound, less the end "
            "terms) and the x1 cross-entropy at $t$ (continuous paths).",
            table(head, rows),
            "![Per-time profile](fig_time_profile.png)",
        ]
    )


def provenance(results: Path) -> str:
    rows = []
    for name in FILES.values():
        f = results / name
        digest = hashlib.sha256(f.read_bytes()).hexdigest()[:16] if f.exists() else "not present"
        rows.append([f"`benchmarks/results/{name}`", digest])
    return (
        "The paper was generated by `make paper` (`python paper/build.py`) from `paper/template.md` "
        "and these result files alone (no git state is read); sha256 prefixes identify the "
        "versions used.\n\n" + table(["file", "sha256 (first 16 hex)"], rows)
    )


# --- build -----------------------------------------------------------------------------------------
def fill(template: str, parts: dict[str, str]) -> str:
    keys = set(re.findall(r"\{\{(\w+)\}\}", template))
    if keys != set(parts):
        raise SystemExit(f"template placeholders {sorted(keys)} != generated {sorted(parts)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], template)


def build(out: Path, results: Path) -> None:
    """Write ``out/paper.md`` and ``out/fig_*.png`` (stale figures there are removed first)."""
    matplotlib.use("Agg")
    matplotlib.rcdefaults()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("fig_*.png"):
        old.unlink()
    d = {
        k: json.loads((results / f).read_text()) if (results / f).exists() else None
        for k, f in FILES.items()
    }
    vocab = next(
        (r["path"]["vocab_size"] for r in (d["side"] or {}).get("rows", []) if "path" in r), None
    )
    parts = {
        "vocab": "$V$" if vocab is None else f"$V = {vocab}$",
        "protocols": protocols(d),
        "toy": toy(d, out),
        "positions": positions(d, out),
        "side_by_side": side_by_side(d, out),
        "cpu_text8": ablation("cpu", d, out),
        "cpu_text8_rdlm": ablation("rdlm", d, out),
        "time_profile": time_profile(d, out),
        "gpu_text8": ablation("gpu", d, out),
        "sampler_sweep": sampler_sweep(d, out),
        "throughput": throughput(d),
        "shakespeare": per_byte(d, out),
        "vocab_scaling": vocab_scaling(d, out),
        "conditional": conditional(d),
        "flow_decoders": flow_decoders(d),
        "provenance": provenance(results),
    }
    text = fill(TEMPLATE.read_text(encoding="utf-8"), parts)
    (out / "paper.md").write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "paper", help="output folder (paper/)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    build(args.out, args.results)


if __name__ == "__main__":
    main()
