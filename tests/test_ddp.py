"""Multi-process training through Lightning's DDP (2 CPU processes, gloo): the same validation
metrics as one process, and each rank its own noise over the global batch's stratified times."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    corpus = out / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text(
        " ".join(rng.choice("the cat sat on a mat by the dog".split()) for _ in range(3000))
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for devices in (1, 2):
        done = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "ddp_check.py"), str(corpus), str(devices), str(out)],
            cwd=out, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_validation_is_the_same_on_one_and_two_processes(runs):
    one = json.loads((runs / "val-1.json").read_text())
    two = json.loads((runs / "val-2.json").read_text())
    assert one.keys() == two.keys() == {"masked", "uniform", "ar", "fisher_rao"}
    for path in one:
        assert "val/bpc" in one[path] and one[path].keys() == two[path].keys()
        for key, value in one[path].items():
            assert value == two[path][key] or abs(value - two[path][key]) <= 1e-9, (path, key)


def test_ranks_draw_their_own_times_over_the_global_batch(runs):
    rank0, rank1 = (torch.load(runs / f"times-2-{r}.pt") for r in (0, 1))
    alone = torch.load(runs / "times-1-0.pt")
    assert len(rank0) == len(rank1) == 2  # two steps each
    for step in range(2):
        both = torch.cat([rank0[step], rank1[step]]).double()
        assert not torch.equal(rank0[step], rank1[step])
        # one stratified draw over the 16 sequences of the global batch: gaps of 1/16
        gaps = torch.diff(both.sort().values)
        assert torch.allclose(gaps, torch.full_like(gaps, 1 / 16), atol=1e-6)
        # the same shared offset as one process drawing the 8 of its batch
        assert torch.allclose(both[::2], alone[step].double(), atol=1e-6)
    assert not torch.equal(rank0[0], rank0[1])  # and new times every step
