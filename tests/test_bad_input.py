"""Bad input, table-driven: each mistake is one line naming it, exit 2, before any training, and
no file is created or changed (the run folder, the checkpoint, the data)."""

import os
import random
from pathlib import Path

import pytest
import torch

import simplexdiff as sd
from simplexdiff.cli import main
from simplexdiff.errors import SamplingError

ROOT = Path(__file__).parents[1]
TINY = [
    "data.seq_len=16", "data.batch_size=8", "model.d_model=16", "model.n_layers=1",
    "model.n_heads=2", "optim.warmup_steps=2", "trainer.max_time=null", "trainer.max_steps=2",
    "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "sample.num=1",
    "sample.length=8", "sample.steps=8",
]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A corpus with a warm cache, and a masked checkpoint trained for 2 steps."""
    base = tmp_path_factory.mktemp("bad")
    corpus = base / "data" / "corpus.txt"
    corpus.parent.mkdir()
    rng = random.Random(0)
    corpus.write_text(" ".join(rng.choice("a cat sat on the mat".split()) for _ in range(2000)))
    (base / "data" / "latin1.txt").write_bytes("caf\xe9 au lait ".encode("latin-1") * 200)
    (base / "data" / "empty.jsonl").write_text('{"text": ""}\n')
    data = [f"data.corpus={corpus}", f"data.cache_dir={base / 'cache'}"]
    args = ["train", ROOT / "recipes/text8/masked.yaml", *data, *TINY, f"out_dir={base / 'ok'}"]
    assert main([str(a) for a in args]) == 0
    return base, data, base / "ok" / "version_0" / "final.ckpt"


def snapshot(*folders: Path) -> dict:
    return {
        str(f): (f.stat().st_size, f.stat().st_mtime_ns, f.read_bytes() if f.is_file() else b"")
        for folder in folders
        for f in sorted(folder.rglob("*"))
    }


def masked(*overrides: str) -> list[str]:
    return ["train", "recipes/text8/masked.yaml", *overrides]


def recipe(name: str, *overrides: str) -> list[str]:
    return ["train", f"recipes/text8/{name}.yaml", *overrides]


BPE = "data.tokenizer={{{{name: bpe, vocab_size: {}}}}}"  # braces survive two .format
CASES = {
    # recipe values (checked as the recipe loads)
    "unknown key": (masked("trainer.max_stepz=3"), "unknown recipe key 'trainer.max_stepz'"),
    "not a number": (masked("trainer.max_steps=many"), "bad recipe value for 'trainer.max_steps'"),
    "negative max_steps": (masked("trainer.max_steps=-5"), "'trainer.max_steps': -5"),
    "zero max_steps": (masked("trainer.max_steps=0"), "'trainer.max_steps': 0"),
    "nan lr": (masked("optim.lr=nan"), "'optim.lr': nan"),
    "negative lr": (masked("optim.lr=-0.001"), "'optim.lr': -0.001"),
    "one beta": (masked("optim.betas=[0.9]"), "'optim.betas': [0.9]"),
    "beta of 1.5": (masked("optim.betas=[0.9,1.5]"), "two numbers in [0, 1)"),
    "negative weight decay": (masked("optim.weight_decay=-1"), "'optim.weight_decay'"),
    "negative warm-up": (masked("optim.warmup_steps=-1"), "'optim.warmup_steps'"),
    "min lr ratio 2": (masked("optim.min_lr_ratio=2"), "'optim.min_lr_ratio'"),
    "malformed max_time": (masked("trainer.max_time=3min"), "'trainer.max_time': '3min'"),
    "zero val interval": (masked("trainer.val_check_interval=0"), "'trainer.val_check_interval'"),
    "negative workers": (masked("data.num_workers=-1"), "'data.num_workers': -1"),
    "zero seq_len": (masked("data.seq_len=0"), "'data.seq_len': 0"),
    "zero batch": (masked("data.batch_size=0"), "'data.batch_size': 0"),
    "negative val batches": (masked("trainer.limit_val_batches=-1"), "limit_val_batches"),
    "zero log interval": (masked("trainer.log_every_n_steps=0"), "log_every_n_steps"),
    "negative clip": (masked("trainer.gradient_clip_val=-1"), "gradient_clip_val"),
    "ema decay 1.5": (masked("trainer.ema_decay=1.5"), "'trainer.ema_decay': 1.5"),
    "zero checkpoint_every": (masked("trainer.checkpoint_every=0"), "checkpoint_every"),
    "negative seed": (masked("seed=-1"), "'seed': -1"),
    "zero samples": (masked("sample.num=0"), "'sample.num': 0"),
    "zero sample steps": (masked("sample.steps=0"), "'sample.steps': 0"),
    "negative temperature": (masked("sample.temperature=-1"), "'sample.temperature': -1"),
    "vocab_size by hand": (masked("model.vocab_size=30"), "'model.vocab_size' is not set by hand"),
    "path vocab_size": (masked("path.vocab_size=30"), "'path.vocab_size' is not set by hand"),
    # names and options (registries, as the model is built)
    "unknown path": (masked("path.name=fisher"), "unknown path 'fisher'"),
    "unknown path option": (masked("path.temperature=2"), "unknown option 'temperature'"),
    "unknown schedule": (masked("path.schedule=bogus"), "unknown schedule 'bogus'"),
    "unknown model": (masked("model.name=unet"), "unknown model 'unet'"),
    "heads do not divide": (masked("model.n_heads=3"), "not divisible by n_heads=3"),
    "max_len below seq_len": (masked("model.max_len=8"), "model.max_len 8 is shorter"),
    "unknown tokenizer": (masked("data.tokenizer=wordpiece"), "unknown tokenizer 'wordpiece'"),
    "bpe below the bytes": (masked(BPE.format(100)), r"vocab_size must be an integer in [257"),
    "bpe too large for ids": (masked(BPE.format(2**33)), "2**32), got 8589934592"),
    "split base 1": (
        recipe("fisher_rao", "path.split={{base: 1}}"),
        "split base must be an integer",
    ),
    "split of a discrete path": (masked("path.split={{base: 2}}"), "unknown option 'split'"),
    "missing data": (masked("data.corpus=/no/such/file.txt"), "data file not found"),
    "invalid UTF-8": (masked("data.corpus={data}/latin1.txt"), "can't decode byte 0xe9"),
    "no documents": (masked("data.corpus={data}/empty.jsonl"), "is empty (no document"),
    # Lightning's own settings
    "bogus precision": (masked("trainer.precision=bogus"), "bad trainer setting: "),
    "gpu without one": (masked("trainer.accelerator=gpu"), "bad trainer setting: "),
    "bogus strategy": (masked("trainer.strategy=bogus"), "bad trainer setting: "),
    "zero devices": (masked("trainer.devices=0"), "bad trainer setting: "),
    # sampling settings: refused before training, not after it
    "unknown sampler": (masked("sample.sampler=magic"), "unknown sampler 'magic'"),
    "sampler of the other family": (masked("sample.sampler=euler"), "does not apply"),
    "continuous sampler for masked": (recipe("fisher_rao", "sample.sampler=remask"), "remask"),
    "AR with too few steps": (recipe("ar", "sample.steps=2"), "fills one position per step"),
    "guidance without prompts": (masked("sample.cfg=2"), "sample.cfg guides on prompts"),
    "negative guidance": (masked("sample.cfg=-1"), "'sample.cfg': -1"),
    "prompt dropout of 1": (masked("prompt_dropout=1"), "'prompt_dropout': 1"),
    # the run folder and resuming
    "out_dir is a file": (masked("out_dir={data}/corpus.txt"), "is a file, not a folder"),
    "missing resume": (masked("resume={base}/nope.ckpt"), "checkpoint not found"),
    "resume not a checkpoint": (masked("resume={data}/corpus.txt"), "could not read checkpoint"),
    "resume another path": (recipe("fisher_rao", "resume={ckpt}"), "path differs: name='masked'"),
    "resume another model": (masked("resume={ckpt}", "model.d_model=32"), "model differs"),
    "resume another schedule": (masked("resume={ckpt}", "path.schedule=cosine"), "schedule"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line_and_exit_2_before_work(case, setup, capsys):
    base, data, ckpt = setup
    args, message = CASES[case]
    fill = {"base": base, "data": base / "data", "ckpt": ckpt}
    args = [a.format(**fill) for a in args]
    args[1] = str(ROOT / args[1])
    out_dir = base / "runs" / case.replace(" ", "_")
    if not any(a.startswith("out_dir=") for a in args):
        args.append(f"out_dir={out_dir}")
    before = snapshot(base / "data", base / "ok")
    code = main([*args[:2], *data, *TINY, *args[2:]])
    captured = capsys.readouterr()
    assert code == 2, captured.err[-2000:]
    assert "Traceback" not in captured.err
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("simplexdiff:")]
    assert len(lines) == 1 and lines[0] == captured.err.strip().splitlines()[-1]
    assert lines[0].startswith("simplexdiff: error: ") and message in lines[0], lines[0]
    assert "Epoch" not in captured.out + captured.err  # no training started
    assert snapshot(base / "data", base / "ok") == before
    assert not out_dir.exists()


def test_bad_input_table_has_at_least_30_kinds():
    assert len(CASES) >= 30


def test_unwritable_out_dir(setup, capsys, tmp_path):
    base, data, _ = setup
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        target = locked / "runs"
        if not _cannot_write(locked):  # root writes anywhere: a folder the kernel refuses
            if os.access("/proc/sys", os.W_OK):
                pytest.skip("no unwritable folder on this machine")
            target = Path("/proc/sys/simplexdiff-runs")
        code = main(masked(*data, *TINY, f"out_dir={target}"))
        err = capsys.readouterr().err
        assert code == 2 and "is not writable" in err.strip().splitlines()[-1]
        assert not target.exists()
    finally:
        locked.chmod(0o700)


def _cannot_write(folder: Path) -> bool:
    try:
        (folder / "probe").write_text("")
    except PermissionError:
        return True
    (folder / "probe").unlink()
    return False


def test_non_finite_logits_are_a_sampling_error():
    path = sd.paths.build("masked", vocab_size=5)

    def diverged(inputs, t):
        return torch.full((*inputs.shape, 5), float("nan"))

    with pytest.raises(SamplingError, match="non-finite logits"):
        sd.samplers.sample(diverged, path, 2, 4, 4)


def test_sample_defaults_to_the_trained_length(setup, capsys):
    _, _, ckpt = setup
    assert main(["sample", str(ckpt), "--num", "2", "--steps", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(len(line) == 16 for line in lines)  # data.seq_len=16
    assert sd.DiffusionLM.load(ckpt).model.config()["max_len"] == 16  # follows seq_len
