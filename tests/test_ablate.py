"""The ablation harness (``benchmarks/ablate.py``) and its wall-clock budget callback: a tiny
protocol killed mid-run and rerun finishes without retraining finished rows; the GPU script runs
end to end on a CPU at a tiny size; the GPU protocol file loads; bad protocols are one-line
errors; the report reads its curves."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

import simplexdiff as sd
from simplexdiff.lightning import WallClockBudget

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ablate.py"
TINY = ROOT / "benchmarks" / "protocols" / "tiny.yaml"


def _ablate(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its worker processes die with it
        **kw,
    )


@pytest.mark.slow
def test_tiny_protocol_killed_and_rerun_finishes_without_retraining(tmp_path):
    out, runs = tmp_path / "tiny.json", tmp_path / "runs"
    args = (str(TINY), "jobs=1", "--out", str(out), "--runs", str(runs))
    proc = _ablate(*args)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once the first row is trained and recorded
        if out.exists() and json.loads(out.read_text() or "{}").get("runs"):
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = json.loads(out.read_text())["runs"]
    assert len(first) == 1, "killed after the first row"
    ((key, done),) = first.items()
    stamps = {p["checkpoint"]: Path(p["checkpoint"]).stat().st_mtime_ns for p in done["points"]}

    proc = _ablate(*args)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    report = json.loads(out.read_text())
    assert f"== trained {key}" not in log  # the finished row is not trained again
    assert {p: Path(p).stat().st_mtime_ns for p in stamps} == stamps
    assert report["runs"][key]["steps"] == done["steps"]
    assert set(report["runs"]) == {"ar-s0", "masked-s0", "fisher_rao-s0"}
    bounds = {"ar": "exact_nll", "masked": "nelbo", "fisher_rao": "dequantized_flow_bound"}
    for run in report["runs"].values():
        points = run["points"]
        assert [p["point_seconds"] for p in points] == [1.5, 3.0]
        assert 0 < points[0]["step"] < points[1]["step"] == run["steps"]
        assert points[1]["tokens"] == run["steps"] * 8 * 32  # batch x seq_len of the protocol
        assert all(p["bound"] == bounds[run["row"]] for p in points)
        for p in points:  # finite, or (a flow leaving the prior's support) null: unavailable
            left = p["bound_settings"].get("prior_support_violations", 0)
            assert math.isfinite(p["bpc"]) if p["bpc"] is not None else left > 0
        assert run["frontier"] and all("reference_bpc" in c for c in run["frontier"])
    # the AR row learned something in 3 s: below the uniform code length log2(27) = 4.75
    assert report["runs"]["ar-s0"]["points"][-1]["bpc"] < 4.6
    samplers = {c["sampler"] for c in report["runs"]["masked-s0"]["frontier"]}
    assert samplers == {"ancestral", "remask", "confidence"}
    assert out.with_suffix(".md").read_text().count("| masked | nelbo |") == 1
    assert out.with_suffix(".png").stat().st_size > 0
    assert report["commit"] and report["machine"] and report["torch"] == torch.__version__


TINY_ON_CPU = [  # the GPU protocol's rows, shrunk to the tiny protocol's seconds, on the CPU
    "device=cpu",
    "jobs=2",
    "budget_seconds=3",
    "points=[1.5,3]",
    "overrides=[trainer.precision=bf16-mixed,data.seq_len=32,data.batch_size=8,model.d_model=32,"
    "model.n_layers=1,model.n_heads=2,optim.warmup_steps=5]",
    "eval={split: test, sequences: 8, num_t: 2, ode_steps: 4, batch_size: 8}",
    "frontier={steps: [4], samples: 4, batch_size: 4}",
]


@pytest.mark.slow
def test_the_gpu_script_runs_end_to_end_on_cpu_at_a_tiny_size(tmp_path):
    """``benchmarks/gpu.sh`` as the device call runs it (``python3`` on the PATH, no git), with
    the GPU protocol's overrides shrunk to seconds: every row trained, scored and sampled."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RUNS_DIR": str(tmp_path / "runs"),
        "WHEELS_DIR": str(tmp_path / "no-wheels"),
        "SIMPLEXDIFF_COMMIT": "abc123",
    }
    script = ROOT / "benchmarks" / "gpu.sh"
    proc = subprocess.run(["bash", str(script), str(out), *TINY_ON_CPU], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_text8.json").read_text())
    rows = report["protocol"]["rows"]
    assert {"ar", "masked", "uniform", "fisher_rao_ce", "linear"} <= set(rows)
    assert set(report["runs"]) == {f"{row}-s0" for row in rows}
    for run in report["runs"].values():
        assert [p["point_seconds"] for p in run["points"]] == [1.5, 3.0]
        assert all("bpc" in p for p in run["points"]) and run["frontier"]
    assert report["commit"] == "abc123" and report["protocol"]["device"] == "cpu"
    log = (out / "gpu_log.txt").read_text()
    assert log.count("== trained") == len(rows) and log.count("== scored") == len(rows)
    assert (out / "gpu_text8.md").read_text().count("| ar | exact_nll |") == 1
    assert (out / "gpu_text8.png").stat().st_size > 0


@pytest.mark.slow
def test_the_gpu_protocol_loads_and_bad_protocols_fail_in_one_line(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import ablate
    finally:
        sys.path.pop(0)
    proto = ablate.load_protocol(ROOT / "benchmarks" / "protocols" / "gpu_text8.yaml")
    assert proto.device == "gpu" and proto.points[-1] == proto.budget_seconds
    cfg = ablate.row_cfg(proto, "masked_cosine", proto.rows["masked_cosine"], 0, "x")
    assert cfg.path.schedule == "cosine" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.accelerator == "gpu" and cfg.data.batch_size == 128
    cases = [
        ("device=tpu", "device must be one of"),
        ("points=[0]", "every point in (0, budget]"),
        ("rows.ar.recipe=nonexistent", "protocol row 'ar'"),
        ("rows.ar.overrides=[model.bogus=3]", "protocol row 'ar'"),
        ("budget_seconds=oops", "bad protocol"),
        ("frontier.steps=[4,0]", "must all be >= 1"),
    ]
    out = str(tmp_path / "x.json")
    for bad, message in cases[1:]:  # in this process: one line on stderr, exit 2
        with pytest.raises(SystemExit) as stopped:
            ablate.main([str(TINY), bad, "--out", out])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err
        assert not (tmp_path / "x.json").exists()
    bad, message = cases[0]  # and the script itself, once
    proc = subprocess.run([sys.executable, str(SCRIPT), str(TINY), bad, "--out", out], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2, (bad, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "x.json").exists()
    # results of another protocol in --out: one line, and the file is left as it was
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"protocol": {"name": "else"}, "runs": {"ar-s0": {}}}))
    before = other.read_text()
    with pytest.raises(SystemExit) as stopped:
        ablate.main([str(TINY), "--out", str(other)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "holds results of another protocol" in err and other.read_text() == before


def _tiny_fit(
    callback: WallClockBudget, max_steps: int = 10**6
) -> tuple[L.Trainer, sd.DiffusionLM]:
    lm = sd.DiffusionLM(
        model=sd.models.build(name="dit", vocab_size=5, d_model=16, n_layers=1, n_heads=2),
        path=sd.paths.build(name="masked", vocab_size=5),
        warmup_steps=3,
        min_lr_ratio=0.1,
    )
    data = torch.utils.data.DataLoader(torch.randint(0, 5, (64, 8)), batch_size=4, shuffle=True)
    trainer = L.Trainer(
        max_steps=max_steps,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(lm, data)
    return trainer, lm


def test_wall_clock_budget_stops_saves_and_anneals(tmp_path):
    budget = WallClockBudget(1.0, points=(0.3, 1.0), dirpath=tmp_path, anneal=True)
    trainer, lm = _tiny_fit(budget)
    assert 1.0 <= budget.elapsed() < 1.5  # stopped by the budget, right after it
    assert [r["point_seconds"] for r in budget.records] == [0.3, 1.0]
    assert 0 < budget.records[0]["step"] < budget.records[1]["step"] == trainer.global_step
    reloaded = sd.DiffusionLM.load(budget.records[1]["checkpoint"])
    for a, b in zip(reloaded.state_dict().values(), lm.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # the learning rate of the last step: annealed by time down to (nearly) min_lr_ratio x lr
    assert budget.factor == pytest.approx(lm.hparams.min_lr_ratio, abs=0.02)


def test_wall_clock_budget_rejects_bad_settings(tmp_path):
    for kwargs in [
        {"budget_seconds": 0},
        {"budget_seconds": 1, "points": (2,), "dirpath": tmp_path},
        {"budget_seconds": 1, "points": (0.5,)},  # points need a folder
        {"budget_seconds": 1, "warmup_seconds": 1},
    ]:
        with pytest.raises(sd.ConfigError):
            WallClockBudget(**kwargs)


def test_report_reads_the_ranking_at_every_point_and_where_curves_cross():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "benchmarks"))
        from ablate_report import crossings, ranks, reading

    lines = {
        "a": [(1.0, 3.0, 0.01, 10), (2.0, 2.0, 0.01, 20)],  # passes b clearly
        "b": [(1.0, 2.5, 0.01, 10), (2.0, 2.4, 0.01, 20)],
        "c": [(1.0, 4.0, 0.5, 10), (2.0, math.inf, math.nan, 20)],  # unavailable at 2 s
        "d": [(1.0, 2.45, 0.2, 10), (2.0, 2.5, 0.2, 20)],  # falls behind b within the noise
    }
    assert ranks(lines) == {1.0: ["d", "b", "a", "c"], 2.0: ["a", "b", "d"]}
    assert crossings(lines) == [
        ("a", "b", 1.0, 2.0, True),
        ("a", "d", 1.0, 2.0, True),
        ("b", "d", 1.0, 2.0, False),
    ]
    text = "\n".join(reading(lines))
    assert "- 1 s: d ≈ b < a ≈ c" in text and "- 2 s: a < b ≈ d" in text
    assert (
        "a passes b between 1 s and 2 s;" in text
        and "b passes d between 1 s and 2 s (within" in text
    )
    assert "No two curves cross" in "\n".join(reading({"a": lines["a"]}))
