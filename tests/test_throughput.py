"""``benchmarks/throughput.py``: timings taken in turns, so slow phases of the machine hit every
contender alike, and its run end to end at a tiny size."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import throughput  # noqa: E402


def test_turns_alternate_the_order_and_ratios_pair_rounds(monkeypatch):
    calls: list[str] = []
    clock = iter(range(1000))  # perf_counter: 0, 1, 2, ...
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    times = throughput.turns(fns, 3, lambda: None)
    # warm-up a, b; then rounds a b | b a | a b
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert times == {"a": [1, 1, 1], "b": [1, 1, 1]}
    # the median of the per-round ratios: one round slowed for both sides moves nothing
    assert throughput.median_ratio([1.2, 6.0, 1.2, 0.9], [1.0, 5.0, 1.0, 1.0]) == 1.2


@pytest.mark.slow
def test_runs_end_to_end_at_a_tiny_size(tmp_path):
    out = tmp_path / "t.json"
    cmd = [sys.executable, str(ROOT / "benchmarks/throughput.py"), "--out", str(out)]
    cmd += ["--batch", "2", "--seq", "8", "--rounds", "1", "--threads", "1", "--paths", "masked"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    rep = json.loads(out.read_text())
    assert [p["path"] for p in rep["paths"]] == ["masked"]
    assert {(b["backbone"], b["positions"]) for b in rep["backbones"]} == {
        (backbone, positions)
        for backbone in ("dit", "causal")
        for positions in ("rotary", "rotary_halves", "learned")
    }
    assert rep["machine"]["threads"] == 1 and rep["config"]["rounds"] == 1
    assert all(b["over_rotary"] == 1.0 for b in rep["backbones"] if b["positions"] == "rotary")
