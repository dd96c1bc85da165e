"""Multi-process training through Lightning's DDP (2 CPU processes, gloo): the same validation
metrics as one process, and each rank its own noise over the global batch's stratified times."""

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow  # processes of Lightning and gloo: tens of seconds


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
            assert math.isfinite(value) and abs(value - two[path][key]) <= 1e-9, (path, key)


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


def test_sigterm_to_one_process_stops_both_with_a_checkpoint(tmp_path):
    """A scheduler's SIGTERM reaching only rank 0: both ranks agree, save, and exit 143."""
    rng = random.Random(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        " ".join(rng.choice("the cat sat on a mat by the dog".split()) for _ in range(3000))
    )
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "simplexdiff", "train", "recipes/text8/masked.yaml",
        f"data.corpus={corpus}", f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={out}",
        "data.seq_len=16", "data.batch_size=8", "model.d_model=16", "model.n_layers=1",
        "model.n_heads=2", "trainer.max_steps=100000", "trainer.max_time=null",
        "trainer.val_check_interval=20", "trainer.limit_val_batches=1", "trainer.strategy=ddp",
        "trainer.devices=2", "trainer.accelerator=cpu", "sample.num=1", "sample.steps=4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    last = out / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # rank 0 only: rank 1 is its child
    assert proc.wait(timeout=120) == 143
    err = proc.stderr.read()
    step = torch.load(last, weights_only=True)["global_step"]
    assert err.count("simplexdiff: stopped by SIGTERM") == 1  # said once, by rank 0
    assert f"simplexdiff: stopped by SIGTERM at step {step}: checkpoint " in err
    assert not (out / "version_0" / "results.json").exists()


def test_every_rank_fits_the_time_warp_to_the_global_batch(runs):
    rank0, rank1 = (torch.load(runs / f"warp-2-{r}.pt") for r in (0, 1))
    alone = torch.load(runs / "warp-1-0.pt")
    for key in ("sums", "counts"):
        assert torch.equal(rank0[key], rank1[key]), key  # one warp, drawn from alike
    decay = 0.99  # three steps of 16 sequences (2 x 8), of 8 alone
    assert rank0["counts"].sum().item() == pytest.approx(16 * (1 + decay + decay**2))
    assert alone["counts"].sum().item() == pytest.approx(8 * (1 + decay + decay**2))
