"""Tables and figures of an ablation report (``benchmarks/ablate.py``): a Markdown file and a PNG
beside the JSON, made from the JSON alone (so ``paper/`` can make them again)."""

from __future__ import annotations

import math
from pathlib import Path

Line = list[tuple[float, float, float, int]]
"""A learning curve: ``(point seconds, bound, its standard error, step)`` per scored point."""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def curves(report: dict) -> dict[str, Line]:
    """Per row: ``(point seconds, mean bpc over seeds, stderr of that mean, mean step)`` for every
    point scored in every seed. With one seed the stderr is the estimator's; with several it is
    the spread over seeds (each seed's own estimator error is in the JSON). A bound recorded as
    unavailable (``null``: a flow whose backward trajectories left the prior's support) is
    ``inf`` here (tables print it, plots leave it out)."""
    by_row: dict[str, list[dict]] = {}
    for run in report["runs"].values():
        by_row.setdefault(run["row"], []).append(run)
    out = {}
    for row, runs in by_row.items():
        line = []
        for i, point in enumerate(runs[0]["points"]):
            pts = [r["points"][i] for r in runs if i < len(r["points"])]
            if len(pts) < len(runs) or any("bpc" not in q for q in pts):
                continue
            bpcs = [math.inf if q["bpc"] is None else q["bpc"] for q in pts]
            if not all(map(math.isfinite, bpcs)):
                line.append((point["point_seconds"], math.inf, math.nan, pts[0]["step"]))
                continue
            if len(bpcs) > 1:
                m = _mean(bpcs)
                err = math.sqrt(sum((b - m) ** 2 for b in bpcs) / (len(bpcs) - 1) / len(bpcs))
            else:
                err = pts[0]["bpc_stderr"]
            step = round(_mean([q["step"] for q in pts]))
            line.append((point["point_seconds"], _mean(bpcs), err, step))
        out[row] = line
    return out


def apart(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two ``(value, standard error)`` differ by more than twice the standard error of
    their difference, ``sqrt(e_a^2 + e_b^2)`` (errors taken as independent)."""
    return abs(a[0] - b[0]) > 2 * math.hypot(a[1], b[1])


def ranks(lines: dict[str, Line]) -> dict[float, list[str]]:
    """Per curve point: the rows scored there with a finite bound, lowest (best) first. Across
    bound types this orders upper bounds on each model's NLL, not the NLLs themselves."""
    at: dict[float, list[tuple[float, str]]] = {}
    for row, line in lines.items():
        for point, value, _, _ in line:
            if math.isfinite(value):
                at.setdefault(point, []).append((value, row))
    return {p: [row for _, row in sorted(pairs)] for p, pairs in sorted(at.items())}


def crossings(lines: dict[str, Line]) -> list[tuple[str, str, float, float, bool]]:
    """``(row, overtaken, from point, to point, clear)`` for each pair of rows whose order changes
    between two consecutive points both are scored at: ``row`` was behind at ``from`` and is
    ahead at ``to``; ``clear`` when the two are ``apart`` at ``to``, else the new order is within
    the noise."""
    values = {
        row: {p: (v, e) for p, v, e, _ in line if math.isfinite(v)} for row, line in lines.items()
    }
    out = []
    rows = list(values)
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            shared = sorted(set(values[a]) & set(values[b]))
            for p, q in zip(shared, shared[1:], strict=False):
                before = values[a][p][0] - values[b][p][0]
                at_a, at_b = values[a][q], values[b][q]
                if before * (at_a[0] - at_b[0]) < 0:
                    ahead, behind = (a, b) if at_a[0] < at_b[0] else (b, a)
                    out.append((ahead, behind, p, q, apart(at_a, at_b)))
    return sorted(out, key=lambda c: (c[2], c[0], c[1]))


def reading(lines: dict[str, Line]) -> list[str]:
    """The ranking at every point (``a ≈ b`` where neighbours are within two standard errors of
    their difference) and where curves cross, as Markdown lines."""
    order = ranks(lines)
    if not order:
        return []
    at = {(row, p): (v, e) for row, line in lines.items() for p, v, e, _ in line}
    text = [
        "Ranking by bound at each point (best first; ≈: within 2 s.e.; across bound types an "
        "order of upper bounds on the models' NLLs, not of the NLLs):",
        "",
    ]
    for p, rows in order.items():
        said = rows[0]
        for a, b in zip(rows, rows[1:], strict=False):  # sorted: b's bound is not below a's
            said += (" < " if apart(at[a, p], at[b, p]) else " ≈ ") + b
        text.append(f"- {p:g} s: {said}")
    found = crossings(lines)
    if not found:
        return text + ["", "No two curves cross between consecutive points."]
    said = [
        f"{a} passes {b} between {p:g} s and {q:g} s" + ("" if clear else " (within 2 s.e.)")
        for a, b, p, q, clear in found
    ]
    return text + ["", "Crossings: " + "; ".join(said) + "."]


def markdown(report: dict) -> str:
    proto = report["protocol"]
    lines = [
        f"# {proto['name']}",
        "",
        f"Machine: {report['machine']}; torch {report['torch']}, lightning {report['lightning']}, "
        f"commit {report['commit']}",
        "",
        f"{len(proto['rows'])} rows x seeds {proto['seeds']}, {proto['budget_seconds']:g} s of "
        f"training each, {proto['jobs']} at a time on {proto['device']}; overrides for all: "
        f"`{' '.join(proto['overrides']) or '-'}`. Bound on the first {proto['eval']['sequences']} "
        f"{proto['eval']['split']} chunks (num_t {proto['eval']['num_t']}, ODE steps "
        f"{proto['eval']['ode_steps']}), bits/token (bits/char for a char tokenizer) ± 1 s.e. "
        "(step in brackets).",
        "",
    ]
    points = [f"{p:g} s" for p in proto["points"]]
    lines += ["| row | bound | " + " | ".join(points) + " |", "|---|---|" + "---|" * len(points)]
    bounds = {r["row"]: r["points"][-1].get("bound", "-") for r in report["runs"].values()}
    for row, line in curves(report).items():
        cells = {
            p: f"{b:.3f} ± {e:.3f} ({s})" if math.isfinite(b) else f"inf, ODE left support ({s})"
            for p, b, e, s in line
        }
        lines.append(
            f"| {row} | {bounds[row]} | "
            + " | ".join(cells.get(p, "-") for p in proto["points"])
            + " |"
        )
    lines += ["", *reading(curves(report))]
    lines += per_byte(report)
    lines += [
        "",
        f"Frontier: {proto['frontier']['samples']} samples per cell from the final checkpoint, "
        f"measured under the reference AR model `{report.get('reference')}`.",
        "",
        "| row | seed | sampler | steps | NFE | ref-AR bpc | entropy | word validity | 2-gram KL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"].values():
        for c in run.get("frontier", []):
            if "error" in c:
                lines.append(
                    f"| {run['row']} | {run['seed']} | {c['sampler']} | {c['steps']} | "
                    f"failed: {c['error']} | | | | |"
                )
                continue
            ref = c.get("reference_bpc")
            lines.append(
                f"| {run['row']} | {run['seed']} | {c['sampler']} | {c['steps']} | {c['nfe']} | "
                f"{'-' if ref is None else f'{ref:.3f}'} | {c['unigram_entropy']:.3f} | "
                f"{c['word_validity']:.3f} | {c['ngram_kl_2']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def per_byte(report: dict) -> list[str]:
    """The final point of every run in bits per token and per UTF-8 byte (rows with different
    tokenizers compare in bytes), where the report recorded bytes."""
    runs = [r for r in report["runs"].values() if "bpb" in (r["points"] or [{}])[-1]]
    if not runs:
        return []
    lines = [
        "",
        "Final point, bits per token and bits per byte (the same bound over the text's UTF-8 "
        "bytes) ± 1 s.e.:",
        "",
        "| row | seed | tokenizer (V) | steps | bound | bits/token | bits/byte |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        p = r["points"][-1]

        def cell(value, err):
            if value is None or not math.isfinite(value):
                return "inf (ODE left support)"
            return f"{value:.3f} ± {err:.3f}"

        lines.append(
            f"| {r['row']} | {r['seed']} | {r.get('tokenizer')} ({r.get('vocab_size')}) | "
            f"{p['step']} | {p['bound']} | {cell(p['bpc'], p['bpc_stderr'])} | "
            f"{cell(p['bpb'], p['bpb_stderr'])} |"
        )
    return lines


def draw_curves(ax, lines: dict[str, Line]) -> None:
    """The learning curves of ``curves(report)`` on ``ax``: bound ± 1 s.e. against seconds."""
    for row, line in lines.items():
        if line:
            x, y, e, _ = zip(*line, strict=True)
            ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, label=row)
    ax.set(xlabel="training seconds", ylabel="bound, bits/char")
    ax.legend(fontsize=7)


def figure(report: dict, file: Path) -> None:
    """Learning curves (bound vs training seconds) and frontiers (reference-AR bits/char of the
    samples vs denoiser calls), one line per row (and sampler)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    draw_curves(a, curves(report))
    a.set_title("learning curves")
    for run in report["runs"].values():
        by_sampler: dict[str, list] = {}
        for c in run.get("frontier", []):
            if c.get("reference_bpc") is not None:
                by_sampler.setdefault(c["sampler"], []).append((c["nfe"], c["reference_bpc"]))
        for sampler, cells in by_sampler.items():
            x, y = zip(*sorted(cells), strict=True)
            b.plot(x, y, marker="o", ms=3, label=f"{run['row']} s{run['seed']} {sampler}")
    b.set(xscale="log", xlabel="denoiser calls", ylabel="ref-AR bits/char of samples")
    b.set_title("speed-quality frontier")
    b.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(file, dpi=120, metadata={"Software": None})  # no version stamp: reproducible
    plt.close(fig)


def write_tables(report: dict, out: Path) -> str:
    """Write ``out`` with suffixes ``.md`` and ``.png``; return the Markdown."""
    text = markdown(report)
    out.with_suffix(".md").write_text(text)
    figure(report, out.with_suffix(".png"))
    return text
