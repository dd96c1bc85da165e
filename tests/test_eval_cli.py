"""``simplexdiff eval``: tiny checkpoints trained for a few steps on a tiny corpus are scored on
their test split (numbers equal ``sd.eval.likelihood``'s), sampled and measured; errors are one
line."""

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

import simplexdiff as sd
from simplexdiff.cli import main
from simplexdiff.errors import ConfigError

ROOT = Path(__file__).parents[1]
TINY = [
    "data.seq_len=16",
    "data.batch_size=8",
    "model.d_model=16",
    "model.n_layers=1",
    "model.n_heads=2",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1",
    "optim.warmup_steps=1",
    "sample.num=1",
    "sample.length=16",
    "sample.steps=16",
]
TEXT = "the cat sat on the mat and the dog sat on the log "


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``{recipe: checkpoint}`` for the masked and AR text8 recipes, and the corpus they read."""
    tmp = tmp_path_factory.mktemp("eval_cli")
    corpus = tmp / "corpus.txt"
    corpus.write_text(TEXT * 40)
    ckpts = {}
    for recipe in ("masked", "ar"):
        code = main(
            [
                "train",
                str(ROOT / "recipes" / "text8" / f"{recipe}.yaml"),
                f"data.corpus={corpus}",
                f"data.cache_dir={tmp / 'cache'}",
                f"out_dir={tmp / recipe}",
                *TINY,
            ]
        )
        assert code == 0
        ckpts[recipe] = tmp / recipe / "version_0" / "final.ckpt"
    return ckpts, corpus


def eval_cli(capsys, *args):
    code = main(["eval", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err):
    """The CLI's error: one line, the last on stderr, with no traceback before it."""
    assert "Traceback" not in err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("simplexdiff: error: ")
    return last


def test_eval_scores_the_test_split_and_samples(trained, tmp_path, capsys):
    ckpts, corpus = trained
    out = tmp_path / "masked.json"
    args = ["--sequences", 4, "--num-t", 2, "--batch-size", 3, "--seed", 5, "--out", out]
    code, printed, err = eval_cli(capsys, ckpts["masked"], *args, "--samples", 2, "--steps", 8)
    assert code == 0, err
    res = json.loads(out.read_text())
    # the same numbers as the Python API on the same chunks with the same generator
    lm = sd.DiffusionLM.load(ckpts["masked"])
    assert lm.data_config["corpus"] == str(corpus) and lm.data_config["seq_len"] == 16
    dm = sd.data.TextDataModule(**{**lm.data_config, "tokenizer": lm.tokenizer})
    tokens = dm.split("test")[:4]
    direct = sd.eval.likelihood(
        lm, tokens, num_t=2, batch_size=3, generator=torch.Generator().manual_seed(5)
    )
    assert res["bound"] == "nelbo" and "upper bound" in res["bound_name"]
    m = res["metrics"]
    for key in ("bpc", "bpc_stderr", "nats_per_token", "num_t", "num_tokens"):
        assert m[key] == direct[key]
    assert m["ppl"] == pytest.approx(math.exp(direct["nats_per_token"]))
    assert res["data"] == {
        "corpus": str(corpus),
        "file": str(corpus),
        "split": "test",
        "sequences": 4,
        "seq_len": 16,
        "num_tokens": 64,
        "sha256": hashlib.sha256(tokens.numpy().tobytes()).hexdigest(),
    }
    assert res["settings"]["num_t"] == 2 and res["seed"] == 5
    assert res["checkpoint"] == str(ckpts["masked"].resolve())
    s = res["samples"]
    assert (s["num"], s["length"], s["steps"], s["sampler"]) == (2, 16, 8, "ancestral")
    assert len(s["texts"]) == 2 and all(len(t) == 16 for t in s["texts"])
    validity, words = s["metrics"]["word_validity"], s["metrics"]["num_words"]
    assert (0 <= validity <= 1 if words else validity is None) and "reference_bpc" not in s[
        "metrics"
    ]
    assert s["metrics"]["ngram_kl_3"] >= 0
    for word in ("nelbo", "bits/token", "perplexity", "word validity", "n-gram KL", str(out)):
        assert word in printed
    # reproducible: a second run writes the same numbers
    code, _, _ = eval_cli(capsys, ckpts["masked"], *args, "--samples", 2, "--steps", 8)
    assert json.loads(out.read_text())["metrics"] == m


def test_eval_ar_with_reference_and_other_data(trained, tmp_path, capsys):
    ckpts, corpus = trained
    other = tmp_path / "other.txt"
    other.write_text("a cat on a log and a dog on a mat " * 30)
    out = tmp_path / "ar.json"
    code, printed, err = eval_cli(
        capsys,
        ckpts["ar"],
        *["--data", other, "--split", "val", "--samples", 3, "--reference", ckpts["ar"]],
        *["--out", out],
    )
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["bound"] == "exact_nll" and res["metrics"]["num_t"] == 1
    assert res["data"]["file"] == str(other) and res["data"]["split"] == "validation"
    s = res["samples"]
    assert s["steps"] == 16  # AR fills one position per step: steps default to the length
    assert s["reference"] == str(ckpts["ar"].resolve())
    # the samples' bits per char under the reference, here the model itself
    ar = sd.DiffusionLM.load(ckpts["ar"])
    ids = torch.stack([ar.tokenizer.encode_tensor(t) for t in s["texts"]])
    assert s["metrics"]["reference_bpc"] == sd.eval.likelihood(ar, ids)["bpc"]
    assert "reference AR bpc" in printed


def test_default_output_file_and_no_bound(trained, capsys, monkeypatch):
    """A path without a likelihood bound is reported as such, not a crash."""
    ckpts, _ = trained

    def no_bound(*args, **kwargs):
        raise ConfigError("no likelihood bound for continuous path 'fisher_rao' yet")

    monkeypatch.setattr("simplexdiff.eval.likelihood", no_bound)  # cli imports it per call
    code, printed, err = eval_cli(capsys, ckpts["masked"], "--sequences", 2)
    assert code == 0, err
    out = ckpts["masked"].with_name("final.eval-test.json")
    res = json.loads(out.read_text())
    assert res["bound"] is None and res["metrics"] == {}
    assert "no likelihood bound" in res["bound_unavailable"] and "unavailable" in printed


def test_checkpoint_without_stored_data(trained, tmp_path, capsys):
    """Checkpoints from before the data config was stored: results.json beside them, or --data."""
    ckpts, corpus = trained
    ckpt = torch.load(ckpts["ar"], weights_only=True)
    del ckpt["simplexdiff"]["data"]
    old = tmp_path / "old" / "final.ckpt"
    old.parent.mkdir()
    torch.save(ckpt, old)
    code, _, err = eval_cli(capsys, old, "--sequences", 2)
    assert code == 2 and "records no training data; name the text to score with --data" in (
        error_line(err)
    )
    code, _, err = eval_cli(capsys, old, "--sequences", 2, "--data", corpus)
    assert code == 0, err  # chunks of the model's max_len (16: it followed data.seq_len)
    code, _, err = eval_cli(capsys, old, "--sequences", 2, "--data", corpus, "--seq-len", 12)
    assert code == 0, err
    results = ckpts["ar"].parent / "results.json"
    (old.parent / "results.json").write_text(results.read_text())
    code, _, err = eval_cli(capsys, old, "--sequences", 2)
    assert code == 0, err


def test_eval_errors_are_one_line(trained, tmp_path, capsys):
    ckpts, _ = trained
    code, _, err = eval_cli(capsys, tmp_path / "nope.ckpt")
    assert code == 2 and "checkpoint not found" in error_line(err)
    capitals = tmp_path / "capitals.txt"
    capitals.write_text("The Cat sat on the mat " * 40)
    code, _, err = eval_cli(capsys, ckpts["ar"], "--data", capitals)
    assert code == 2 and "character 'T' at position 0 is not in" in error_line(err)
    code, _, err = eval_cli(capsys, ckpts["ar"], "--data", tmp_path / "missing.txt")
    assert code == 2 and "data file not found" in error_line(err)
    code, _, err = eval_cli(capsys, ckpts["ar"], "--samples", 1, "--reference", ckpts["masked"])
    assert code == 2 and "--reference must be an autoregressive" in error_line(err)
    code, _, err = eval_cli(capsys, ckpts["ar"], "--reference", ckpts["ar"])
    assert code == 2 and "give --samples N too" in error_line(err)
    code, _, err = eval_cli(capsys, ckpts["ar"], "--seq-len", 300)
    assert code == 2 and "--seq-len 300 exceeds the model's max_len 16" in error_line(err)
    before = Path(ckpts["ar"]).read_bytes()
    for out in (ckpts["ar"], tmp_path / "other.ckpt"):  # never replaced by the JSON
        code, _, err = eval_cli(capsys, ckpts["ar"], "--out", out)
        assert code == 2 and "would overwrite a checkpoint" in error_line(err)
    assert Path(ckpts["ar"]).read_bytes() == before and not (tmp_path / "other.ckpt").exists()
    notes = tmp_path / "notes.json"  # any other existing file is kept too; an eval JSON is not
    notes.write_text('{"mine": 1}')
    code, _, err = eval_cli(capsys, ckpts["ar"], "--sequences", 2, "--out", notes)
    assert code == 2 and "exists and is not an eval result" in error_line(err)
    assert notes.read_text() == '{"mine": 1}'
    result = tmp_path / "result.json"
    for _ in range(2):  # written, then replaced by the rerun
        assert eval_cli(capsys, ckpts["ar"], "--sequences", 2, "--out", result)[0] == 0
    code, _, err = eval_cli(capsys, ckpts["ar"], "--num-t", 0)
    assert code == 2 and "--num-t must be positive" in error_line(err)
    code, _, err = eval_cli(capsys, ckpts["ar"], "--samples", 1, "--steps", 4)
    assert code == 2 and "steps >= length" in error_line(err)
