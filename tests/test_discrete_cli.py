"""The text8 recipes of the discrete family and the AR baseline through the same CLI: what training
prints and records is named for what it is, and ``sample`` works on their checkpoints."""

import json
from pathlib import Path

import pytest

import simplexdiff as sd
from simplexdiff.cli import main
from simplexdiff.recipe import load_recipe

ROOT = Path(__file__).parents[1]
TINY = [
    "data.seq_len=16",
    "data.batch_size=8",
    "model.d_model=16",
    "model.n_layers=1",
    "model.n_heads=2",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "optim.warmup_steps=2",
    "sample.num=2",
    "sample.length=12",
    "sample.steps=12",
]


@pytest.fixture
def corpus(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("the cat sat on the mat and the dog sat on the log " * 40)
    return f


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "recipe, path, model, sampler",
    [
        ("masked", "masked", "dit", "ancestral"),
        ("uniform", "uniform", "dit", "ancestral"),
        ("ar", "ar", "causal", "ancestral"),
    ],
)
def test_text8_recipes_build_the_s_config(recipe, path, model, sampler):
    cfg = load_recipe(ROOT / "recipes" / "text8" / f"{recipe}.yaml")
    assert cfg.path.name == path and cfg.model.name == model and cfg.sample.sampler == sampler
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads) == (256, 4, 4)
    assert (cfg.data.seq_len, cfg.data.batch_size) == (256, 32)
    assert cfg.sample.steps >= cfg.sample.length or path != "ar"
    lm = sd.DiffusionLM(  # the model's causality matches the path's (else ConfigError)
        model=sd.models.build(vocab_size=27, **cfg.model),
        path=sd.paths.build(vocab_size=27, **cfg.path),
    )
    assert lm.path.registry_name == path


@pytest.mark.parametrize(
    "recipe, printed",
    [
        ("masked", "validation NELBO bound"),
        ("uniform", "validation NELBO bound"),
        ("ar", "validation exact NLL"),
    ],
)
def test_train_prints_the_bound_and_samples(recipe, printed, tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = [
        "train",
        f"recipes/text8/{recipe}.yaml",
        f"data.corpus={corpus}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"out_dir={tmp_path / 'runs'}",
        *TINY,
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert f"{printed}" in out and "bits/char" in out and "x1 cross-entropy" not in out
    run = tmp_path / "runs" / "version_0"
    results = json.loads((run / "results.json").read_text())
    assert results["bound"] == sd.paths.build(recipe, vocab_size=5).bound
    assert results["reported"]["metric"] == "val_bpc" and printed in results["reported"]["name"]
    assert "val_bpc" in results and "val_x1_ce_bits" not in results
    assert results["sampler"] == "ancestral" and len(results["samples"]) == 2
    ckpt = run / "final.ckpt"
    for extra in ([], ["--sampler", "ancestral"]):  # the path's default sampler, or named
        code, out, err = run_cli(
            [
                "sample",
                ckpt,
                "--num",
                "2",
                "--steps",
                "10",
                "--length",
                "10",
                "--prompt",
                "the",
                *extra,
            ],
            capsys,
        )
        assert code == 0, err
        lines = out.strip().splitlines()
        assert len(lines) == 2 and all(line.startswith("the") and len(line) == 10 for line in lines)
    code, _, err = run_cli(["sample", ckpt, "--sampler", "euler"], capsys)
    assert code == 2 and "use one of: ancestral" in err.strip().splitlines()[-1]
