"""The committed paper (``paper/``) is what ``paper/build.py`` makes from the committed results:
rebuilt into a temporary folder, ``paper.md`` and every figure are byte-identical; its numbers trace
to the JSON; an ablation report (``benchmarks/ablate.py``'s format) gets its tables and figures."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "paper"
RESULTS = ROOT / "benchmarks" / "results"


def _build(out: Path, results: Path = RESULTS) -> None:
    cmd = [sys.executable, str(PAPER / "build.py"), "--out", str(out), "--results", str(results)]
    subprocess.run(cmd, check=True, cwd=ROOT)


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in [folder / "paper.md", *folder.glob("fig_*.png")] if p.exists())


@pytest.mark.slow
def test_committed_paper_is_up_to_date(tmp_path):
    _build(tmp_path)
    built = _outputs(tmp_path)
    assert "paper.md" in built and any(n.endswith(".png") for n in built)
    assert _outputs(PAPER) == built, "paper/ is stale: run `make paper`"
    for name in built:
        same = (tmp_path / name).read_bytes() == (PAPER / name).read_bytes()
        assert same, f"paper/{name} differs from a fresh build: run `make paper`"
    text = (tmp_path / "paper.md").read_text()
    assert "{{" not in text and str(ROOT) not in text and str(tmp_path) not in text


def test_numbers_trace_to_the_json():
    text = (PAPER / "paper.md").read_text()
    rows = json.loads((RESULTS / "text8_side_by_side_15min.json").read_text())["rows"]
    scored = [r for r in rows if "test_bpc" in r]
    assert scored, "the side-by-side JSON has no scored row"
    for r in scored:
        assert f"{r['test_bpc']:.3f} ± {r['test_bpc_stderr']:.3f}" in text
    for r in rows:
        if "test_bpc" not in r:
            assert "not evaluated" in text
    toy = json.loads((RESULTS / "toy_simplex.json").read_text())
    assert toy["published"]["source"] in text
    rdlm = json.loads((RESULTS / "cpu_text8_rdlm.json").read_text())  # section 3.11
    for run in rdlm["runs"].values():
        end = run["points"][-1]
        assert f"{end['bpc']:.3f} ± {end['bpc_stderr']:.3f} ({end['step']})" in text
    for name in ("instruct", "reversal"):  # the conditional benchmarks' rows (section 3.10)
        for r in json.loads((RESULTS / f"{name}.json").read_text())["runs"]:
            assert f"| {r['family']} | {r['steps']} |" in text


def _report() -> dict:
    """A small report in ``benchmarks/ablate.py``'s format: two rows, two points, a frontier."""
    proto = {
        "name": "cpu_text8",
        "budget_seconds": 4.0,
        "points": [2.0, 4.0],
        "rows": {
            "ar": {"recipe": "ar", "overrides": []},
            "masked": {"recipe": "masked", "overrides": ["path.schedule=cosine"]},
        },
        "device": "cpu",
        "jobs": 2,
        "seeds": [0],
        "warmup_fraction": 0.05,
        "overrides": ["data.seq_len=32"],
        "eval": {"split": "test", "sequences": 8, "num_t": 2, "ode_steps": 4, "batch_size": 8},
        "frontier": {"steps": [4, 8], "samples": 4, "batch_size": 4},
    }
    metrics = {"unigram_entropy": 4.1, "word_validity": 0.25, "ngram_kl_2": 3.5}
    runs = {}
    for i, row in enumerate(proto["rows"]):
        bound = ["exact_nll", "nelbo"][i]
        points = [
            {
                "point_seconds": p,
                "step": 10 * (j + 1),
                "bound": bound,
                "bpc": 4.5 - 0.25 * j - 0.125 * i,
                "bpc_stderr": 0.0625,
                "checkpoint": f"/fixture-root/{row}/{p}.ckpt",
            }
            for j, p in enumerate(proto["points"])
        ]
        frontier = [
            {
                "sampler": "ancestral",
                "steps": n,
                "nfe": n,
                "reference_bpc": 5.0 - 0.0625 * n,
                "reference_bpc_stderr": 0.03125,
                **metrics,
            }
            for n in proto["frontier"]["steps"]
        ]
        frontier.append(
            {"sampler": "remask", "steps": 4, "error": "ConfigError: /fixture-root/x bad"}
        )
        runs[f"{row}-s0"] = {
            "row": row,
            "seed": 0,
            "recipe": f"recipes/text8/{row}.yaml",
            "steps": 20,
            "train_seconds": 4.0,
            "points": points,
            "frontier": frontier,
        }
    return {
        "protocol": proto,
        "runs": runs,
        "machine": "test machine",
        "python": "3",
        "torch": "t",
        "lightning": "l",
        "commit": "abc",
        "reference": "/fixture-root/ar.ckpt",
    }


@pytest.mark.slow
def test_ablation_report_gets_tables_and_figures(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    (results / "cpu_text8.json").write_text(json.dumps(_report()))
    _build(tmp_path / "paper", results)
    text = (tmp_path / "paper" / "paper.md").read_text()
    assert "4.125 ± 0.062 (20)" in text  # masked at the last point: 4.5 - 0.25 - 0.125
    assert "4.750 ± 0.031" in text  # a frontier cell: 5 - 4 / 16
    assert "failed (ConfigError)" in text and "/fixture-root" not in text
    assert "cpu_text8.json` does not exist" not in text and "gpu_text8.json` does not exist" in text
    for fig in ("fig_cpu_text8_curves.png", "fig_cpu_text8_frontier.png"):
        assert (tmp_path / "paper" / fig).stat().st_size > 0 and f"({fig})" in text
