"""The CLI end to end on a tiny corpus, and its one-line errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

import simplexdiff as sd
from simplexdiff.cli import main
from simplexdiff.errors import CheckpointError, ConfigError

TINY = [
    "data.seq_len=16",
    "data.batch_size=8",
    "model.d_model=16",
    "model.n_layers=1",
    "model.n_heads=2",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "optim.warmup_steps=2",
    "sample.num=2",
    "sample.length=12",
    "sample.steps=4",
]


@pytest.fixture
def corpus(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("the cat sat on the mat and the dog sat on the log " * 40)
    return f


def error_line(err):
    """The CLI's error: one line, the last on stderr, with no traceback before it."""
    assert "Traceback" not in err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("simplexdiff: error: ")
    return last


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train_tiny(tmp_path, corpus, capsys, *extra):
    args = [
        "train",
        "recipes/quickstart.yaml",
        f"data.corpus={corpus}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"out_dir={tmp_path / 'runs'}",
        *TINY,
        *extra,
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    return out


def test_train_then_sample(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])
    out = train_tiny(tmp_path, corpus, capsys)
    assert "validation dequantized flow bound" in out and "uniform baseline" in out
    assert "validation x1 cross-entropy" in out
    results = json.loads((tmp_path / "runs" / "version_0" / "results.json").read_text())
    assert results["steps"] == 6 and len(results["samples"]) == 2
    ckpt = tmp_path / "runs" / "version_0" / "final.ckpt"
    assert (tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt").exists()
    lm = sd.DiffusionLM.load(ckpt)
    assert lm.tokenizer.alphabet == "".join(sorted(set(corpus.read_text())))
    code, out, err = run_cli(
        ["sample", ckpt, "--num", "3", "--steps", "4", "--length", "10", "--prompt", "the"], capsys
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("the") and len(line) == 10 for line in lines)
    code, out, err = run_cli(["sample", ckpt, "--num", "1", "--until-eos"], capsys)
    assert code == 2 and "tokenizer has no end-of-document symbol" in err  # one document
    # a second run goes to a new folder: earlier checkpoints are never overwritten
    train_tiny(tmp_path, corpus, capsys, "trainer.max_steps=2")
    assert (tmp_path / "runs" / "version_1" / "final.ckpt").exists() and ckpt.exists()


def test_resume_continues_from_checkpoint(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])
    train_tiny(tmp_path, corpus, capsys)
    ckpt = tmp_path / "runs" / "version_0" / "final.ckpt"
    train_tiny(tmp_path, corpus, capsys, f"resume={ckpt}", "trainer.max_steps=8")
    results = json.loads((tmp_path / "runs" / "version_1" / "results.json").read_text())
    assert results["steps"] == 8


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_stepz=3", "unknown recipe key 'trainer.max_stepz'"),
        ("colour=red", "unknown recipe key 'colour'"),
        ("path.name=fisher", "unknown path 'fisher'"),
        ("path.temperature=2", "unknown option 'temperature' for path 'fisher_rao'"),
        ("data.corpus=/no/such/file.txt", "data file not found"),
        ("trainer.max_steps=many", "bad recipe value for 'trainer.max_steps'"),
    ],
)
def test_bad_recipes_fail_before_training_with_one_line(override, message, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])
    code, out, err = run_cli(["train", "recipes/quickstart.yaml", override], capsys)
    assert code == 2
    assert message in error_line(err)
    assert "Epoch" not in out + err


def test_missing_recipe_and_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(["train", tmp_path / "nope.yaml"], capsys)
    assert code == 2 and "recipe not found" in error_line(err)
    code, _, err = run_cli(["sample", tmp_path / "nope.ckpt"], capsys)
    assert code == 2 and "checkpoint not found" in error_line(err)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run_cli(["sample", bad], capsys)
    assert code == 2 and "could not read checkpoint" in error_line(err)


def test_vocab_mismatch_between_checkpoint_and_data(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])
    train_tiny(tmp_path, corpus, capsys)
    ckpt = tmp_path / "runs" / "version_0" / "final.ckpt"
    other = tmp_path / "other.txt"
    other.write_text("ABCDEFGH abcdefgh xyz " * 50)
    code, _, err = run_cli(
        [
            "train",
            "recipes/quickstart.yaml",
            f"data.corpus={other}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"resume={ckpt}",
            f"out_dir={tmp_path / 'runs2'}",
            *TINY,
        ],
        capsys,
    )
    assert code == 2 and "vocabulary mismatch" in error_line(err)
    # the same check in the Python API, when a loaded model meets other data
    lm = sd.DiffusionLM.load(ckpt)
    dm = sd.data.TextDataModule(str(other), seq_len=16, cache_dir=str(tmp_path / "cache"))
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    with pytest.raises(CheckpointError, match="vocabulary mismatch"):
        trainer.fit(lm, dm)


def test_model_and_path_must_agree():
    with pytest.raises(ConfigError, match="vocab_size"):
        sd.DiffusionLM(
            model=sd.models.DiT(5, 16, 1, 2, 8), path=sd.paths.build("linear", vocab_size=6)
        )


def test_checkpoint_loads_with_weights_only(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])
    train_tiny(tmp_path, corpus, capsys, "trainer.ema_decay=0.9")
    ckpt = torch.load(tmp_path / "runs" / "version_0" / "final.ckpt", weights_only=True)
    assert ckpt["simplexdiff"]["path"]["name"] == "fisher_rao"
    # with EMA on, the saved state dict holds the averaged weights; the model was swapped to them
    lm = sd.DiffusionLM.load(tmp_path / "runs" / "version_0" / "final.ckpt")
    for k, v in lm.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k])


# the venv's script, also when the venv is not activated (as under `make test`)
SCRIPT = shutil.which("simplexdiff", path=str(Path(sys.executable).parent)) or shutil.which(
    "simplexdiff"
)


@pytest.mark.skipif(SCRIPT is None, reason="console script not installed")
def test_console_script_reports_errors_in_one_line():
    proc = subprocess.run(
        [SCRIPT, "train", "recipes/quickstart.yaml", "data.bogus=1"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "simplexdiff: error: unknown recipe key 'data.bogus'"


def test_module_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "simplexdiff", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "train" in proc.stdout
