"""Runs that survive: checkpoints while training, signals, and resumes that end bit-identical
to the uninterrupted run (weights and every logged value)."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

import simplexdiff as sd
from simplexdiff.data.stream import TrainStream
from simplexdiff.lightning.checkpoint import RunCheckpoint

ROOT = Path(__file__).parents[1]
WORDS = "the cat sat on the mat and a dog ran far away from big red fox".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    f = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    rng = random.Random(0)
    f.write_text(" ".join(rng.choice(WORDS) for _ in range(4000)))
    return f


def logged(*metrics_csv: Path) -> list[tuple]:
    """Every logged value of one or more ``metrics.csv`` as sorted ``(step, key, value)``."""
    rows = [r for f in metrics_csv for r in csv.DictReader(f.open())]
    return sorted(
        (int(r["step"]), k, v) for r in rows for k, v in r.items() if v and k not in ("step",)
    )


def state(ckpt: Path) -> dict:
    return torch.load(ckpt, weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# --- the stream of training batches --------------------------------------------------------------
def test_stream_is_a_pure_function_of_seed_and_position():
    chunks = torch.arange(50 * 3).reshape(50, 3)
    stream = TrainStream(chunks, batch_size=4, seed=7)
    it = iter(stream)
    first = [next(it) for _ in range(30)]  # 30 batches: past the end of the first pass (12)
    resumed = iter(TrainStream(chunks, batch_size=4, seed=7, start=17))
    for k in range(17, 30):
        assert torch.equal(next(resumed), first[k])
    # one pass covers distinct chunks; the next pass is reshuffled
    seen = torch.cat(first[:12])[:, 0]
    assert len(set(seen.tolist())) == 48
    assert not torch.equal(torch.cat(first[:12]), torch.cat(first[12:24]))
    other_seed = next(iter(TrainStream(chunks, batch_size=4, seed=8)))
    assert not torch.equal(other_seed, first[0])


def test_stream_shards_ranks_disjointly_and_workers_keep_the_order():
    chunks = torch.arange(40).reshape(40, 1)
    ranks = [iter(TrainStream(chunks, 3, seed=1, rank=r, world=2)) for r in range(2)]
    for _ in range(6):  # one pass: 6 global batches of 2 x 3
        a, b = next(ranks[0]), next(ranks[1])
        assert not set(a.flatten().tolist()) & set(b.flatten().tolist())
    loader = torch.utils.data.DataLoader(TrainStream(chunks, 3, seed=1), None, num_workers=2)
    with_workers = [b for b, _ in zip(loader, range(10), strict=False)]
    alone = iter(TrainStream(chunks, 3, seed=1))
    assert all(torch.equal(b, next(alone)) for b in with_workers)


def test_training_times_span_the_global_batch():
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    whole = sd.lightning.stratified_times(8, gen())
    halves = [sd.lightning.stratified_times(4, gen(), rank=r, world=2) for r in range(2)]
    assert torch.equal(torch.cat(halves), whole)
    assert not torch.equal(halves[0], halves[1])


# --- a user's own Trainer: Trainer.fit(ckpt_path=...) ------------------------------------------
class SignalAt(L.Callback):
    """Sends this process ``signum`` at the end of step ``step`` (a preemption)."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


# options of the path where a case needs them: Fisher-Rao's learned time warp (4 bins: warped
# draws from the first step on), whose fitted state a resumed run must restore
OPTIONS = {"fisher_rao": {"warp": {"bins": 4}}}


def fit(corpus, tmp: Path, path: str, ema: bool, ckpt_path=None, interrupt=None, seed=0):
    L.seed_everything(seed, verbose=False)
    dm = sd.data.TextDataModule(
        str(corpus), seq_len=16, batch_size=8, cache_dir=str(tmp / "c"), seed=seed
    )
    causal = path == "ar"
    model = sd.models.build(
        "causal" if causal else "dit", vocab_size=dm.tokenizer.vocab_size, d_model=16,
        n_layers=1, n_heads=2, max_len=16,
    )  # fmt: skip
    built = sd.paths.build(path, vocab_size=dm.tokenizer.vocab_size, **OPTIONS.get(path, {}))
    lm = sd.DiffusionLM(model, built, lr=3e-3, warmup_steps=2, tokenizer=dm.tokenizer)
    callbacks = [RunCheckpoint(tmp / "checkpoints")]
    callbacks += [EMAWeightAveraging(decay=0.9)] if ema else []
    callbacks += [SignalAt(interrupt)] if interrupt else []
    trainer = L.Trainer(
        max_steps=14, val_check_interval=4, check_val_every_n_epoch=None, limit_val_batches=2,
        log_every_n_steps=1, logger=CSVLogger(tmp, name="", version=""), callbacks=callbacks,
        enable_progress_bar=False, enable_model_summary=False, inference_mode=False,
    )  # fmt: skip
    trainer.fit(lm, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    trainer.save_checkpoint(tmp / "end.ckpt")
    return trainer


@pytest.mark.parametrize(
    "path, ema, stop_at",
    [("masked", False, 4), ("fisher_rao", True, 6), ("uniform", True, 9), ("ar", False, 5)],
)
def test_fit_resumed_after_sigterm_equals_the_uninterrupted_fit(
    corpus, tmp_path, path, ema, stop_at
):
    fit(corpus, tmp_path / "straight", path, ema)
    with pytest.raises(SIGTERMException) as stopped:
        fit(corpus, tmp_path / "first", path, ema, interrupt=stop_at)
    assert stopped.value.code == 143  # not 0: a scheduler sees the job did not finish
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == stop_at
    # resumed in a session seeded otherwise: the checkpoint's seeds (training and data) win
    fit(corpus, tmp_path / "second", path, ema, ckpt_path=last, seed=1)
    assert_same_weights(tmp_path / "straight" / "end.ckpt", tmp_path / "second" / "end.ckpt")
    straight = logged(tmp_path / "straight" / "metrics.csv")
    assert len(straight) > 14
    both = logged(tmp_path / "first" / "metrics.csv", tmp_path / "second" / "metrics.csv")
    assert both == straight


# --- the CLI: SIGKILL and SIGTERM on a real process ------------------------------------------------
TINY = [
    "data.seq_len=16", "data.batch_size=8", "model.d_model=16", "model.n_layers=1",
    "model.n_heads=2", "model.max_len=16", "optim.warmup_steps=2", "trainer.max_time=null",
    "trainer.max_steps=400", "trainer.val_check_interval=40", "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1", "sample.num=1", "sample.length=8", "sample.steps=4",
]  # fmt: skip


def train_cmd(corpus, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "simplexdiff", "train", "recipes/text8/masked.yaml",
        f"data.corpus={corpus}", f"data.cache_dir={out.parent / 'cache'}", f"out_dir={out}",
        *TINY, *extra,
    ]  # fmt: skip


def start_and_signal(cmd, last: Path, signum: int, delay: float) -> subprocess.Popen:
    """Start ``cmd``; once its first checkpoint exists, wait ``delay`` s and send ``signum``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not last.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before the signal: lengthen it"
    proc.send_signal(signum)
    proc.wait(timeout=120)
    return proc


@pytest.mark.slow
def test_cli_sigkill_then_resume_equals_the_uninterrupted_run(corpus, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = subprocess.run(train_cmd(corpus, tmp_path / "a"), cwd=ROOT, env=env,
                              capture_output=True, text=True)  # fmt: skip
    assert straight.returncode == 0, straight.stderr
    last = tmp_path / "b" / "version_0" / "checkpoints" / "last.ckpt"
    delay = random.Random(os.getpid()).uniform(0.0, 0.8)  # a random point after the first save
    proc = start_and_signal(train_cmd(corpus, tmp_path / "b"), last, signal.SIGKILL, delay)
    assert proc.returncode == -signal.SIGKILL
    resumed_from = torch.load(last, weights_only=True)["global_step"]
    assert 0 < resumed_from < 400
    again = subprocess.run(train_cmd(corpus, tmp_path / "b", f"resume={last}"), cwd=ROOT,
                           env=env, capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0, again.stderr
    a, b = tmp_path / "a" / "version_0", tmp_path / "b" / "version_1"
    assert_same_weights(a / "final.ckpt", b / "final.ckpt")
    after = [row for row in logged(a / "metrics.csv") if row[0] >= resumed_from]
    assert len(after) > 10 and logged(b / "metrics.csv") == after


@pytest.mark.slow
def test_cli_sigterm_saves_and_exits_143(corpus, tmp_path):
    run = tmp_path / "run" / "version_0"
    proc = start_and_signal(train_cmd(corpus, tmp_path / "run"), run / "checkpoints" / "last.ckpt",
                            signal.SIGTERM, 0.2)  # fmt: skip
    assert proc.returncode == 143
    line = proc.stderr.read().strip().splitlines()[-1]
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert line.startswith(f"simplexdiff: stopped by SIGTERM at step {step}: checkpoint ")
    assert (run / "recipe.yaml").exists() and not (run / "results.json").exists()


# --- bf16 mixed precision on the CPU, every path ---------------------------------------------------
@pytest.mark.parametrize("path", ["masked", "uniform", "ar", "fisher_rao", "linear", "dirichlet"])
def test_bf16_mixed_trains_every_path(corpus, tmp_path, path):
    """``trainer.precision=bf16-mixed``: finite losses and bound, and the weights move."""
    L.seed_everything(0, verbose=False)
    dm = sd.data.TextDataModule(str(corpus), seq_len=16, batch_size=8, cache_dir=str(tmp_path))
    vocab = dm.tokenizer.vocab_size
    model = sd.models.build("causal" if path == "ar" else "dit", vocab_size=vocab, d_model=16,
                            n_layers=1, n_heads=2, max_len=16)  # fmt: skip
    lm = sd.DiffusionLM(model, sd.paths.build(path, vocab_size=vocab), lr=3e-3, warmup_steps=1)
    before = [p.detach().clone() for p in lm.parameters()]
    trainer = L.Trainer(
        max_steps=4, precision="bf16-mixed", val_check_interval=4, check_val_every_n_epoch=None,
        limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(lm, dm)
    logged = trainer.callback_metrics
    assert torch.isfinite(logged["train/loss"]) and torch.isfinite(logged["val/loss"])
    assert "val/bpc" in logged and not torch.isnan(logged["val/bpc"])
    assert all(not torch.equal(a, b) for a, b in zip(before, lm.parameters(), strict=True))


# --- Lightning conventions ---------------------------------------------------------------------
def test_load_from_checkpoint_validate_and_test_under_default_settings(corpus, tmp_path):
    """``load_from_checkpoint(file)`` alone; ``validate`` / ``test`` with a default Trainer
    (``inference_mode=True``) report the continuous path's flow bound too."""
    fit(corpus, tmp_path, "fisher_rao", ema=False)
    lm = sd.DiffusionLM.load_from_checkpoint(tmp_path / "end.ckpt")
    ref = sd.DiffusionLM.load(tmp_path / "end.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(lm.parameters(), ref.parameters(), strict=True))
    dm = sd.data.TextDataModule(**lm.data_config, batch_size=8)
    trainer = L.Trainer(limit_val_batches=2, limit_test_batches=2, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    assert trainer.validate_loop.inference_mode  # Lightning's default
    val = trainer.validate(lm, dm, verbose=False)[0]
    test = trainer.test(lm, dm, verbose=False)[0]
    assert {"val/bpc", "val/x1_ce_bits", "val/loss"} <= val.keys()
    assert {"test/bpc", "test/x1_ce_bits", "test/loss"} <= test.keys()
    assert val["val/bpc"] != test["test/bpc"]  # two splits


def test_checkpoints_before_format_2_keep_their_half_split_rotary_pairs(corpus, tmp_path):
    """A checkpoint without ``format`` (written before 2) said ``positions="rotary"`` for the
    half-split pairs: it loads as ``rotary_halves``, and resuming it into today's default
    ``rotary`` is refused in one line naming the option."""
    fit(corpus, tmp_path, "masked", ema=False)
    ckpt = torch.load(tmp_path / "end.ckpt", weights_only=True)
    assert ckpt["simplexdiff"]["format"] == 2
    assert ckpt["simplexdiff"]["model"]["positions"] == "rotary"
    del ckpt["simplexdiff"]["format"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    old = sd.DiffusionLM.load(tmp_path / "old.ckpt")
    assert old.model.config()["positions"] == "rotary_halves"
    now = sd.DiffusionLM.load(tmp_path / "end.ckpt")
    assert now.model.config()["positions"] == "rotary"
    with pytest.raises(
        sd.errors.CheckpointError, match="positions='rotary_halves' \\(here 'rotary'\\)"
    ):
        now.check_matches(ckpt["simplexdiff"])
    now.check_matches(torch.load(tmp_path / "end.ckpt", weights_only=True)["simplexdiff"])
    # written before the model had time_scale / mlp_ratio: their defaults apply
    for option in ("time_scale", "mlp_ratio"):
        del ckpt["simplexdiff"]["model"][option]
    ckpt["simplexdiff"]["format"] = 2
    torch.save(ckpt, tmp_path / "older.ckpt")
    assert sd.DiffusionLM.load(tmp_path / "older.ckpt").model.config() == now.model.config()
    now.check_matches(ckpt["simplexdiff"])


def test_checkpoints_before_tie_weights_load_with_their_own_head(corpus, tmp_path):
    """A checkpoint without ``tie_weights`` had an untied head (``head.weight``): it loads so, and
    with that weight set to the embedding's rows it is the tied model it was saved from."""
    fit(corpus, tmp_path, "masked", ema=False)
    ckpt = torch.load(tmp_path / "end.ckpt", weights_only=True)
    assert ckpt["simplexdiff"]["model"]["tie_weights"] is True
    state = ckpt["state_dict"]
    assert "model.head.weight" not in state
    del ckpt["simplexdiff"]["model"]["tie_weights"]
    vocab = ckpt["simplexdiff"]["path"]["vocab_size"]
    state["model.head.weight"] = state["model.input.embed.weight"][:vocab].clone()
    torch.save(ckpt, tmp_path / "untied.ckpt")
    tied, untied = (sd.DiffusionLM.load(tmp_path / f) for f in ("end.ckpt", "untied.ckpt"))
    assert untied.model.config()["tie_weights"] is False
    x, t = torch.randint(0, vocab + 1, (2, 16)), torch.full((2,), 0.4)
    assert torch.equal(untied.model(x, t), tied.model(x, t))
    with pytest.raises(sd.errors.CheckpointError, match="tie_weights=False \\(here True\\)"):
        tied.check_matches(ckpt["simplexdiff"])


def test_a_trainer_that_would_never_validate_is_warned(corpus, tmp_path):
    dm = sd.data.TextDataModule(str(corpus), seq_len=16, batch_size=8, cache_dir=str(tmp_path))
    vocab = dm.tokenizer.vocab_size
    model = sd.models.build("dit", vocab_size=vocab, d_model=16, n_layers=1, n_heads=2, max_len=16)
    lm = sd.DiffusionLM(model, sd.paths.build("masked", vocab_size=vocab))
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with pytest.warns(UserWarning, match="check_val_every_n_epoch=None"):
        trainer.fit(lm, dm)
