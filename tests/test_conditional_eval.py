"""Conditional evaluation: ``score_choices`` against likelihoods computed by hand, ``complete`` /
``exact_match`` on a denoiser with a known answer, and the CLI (training on prompt / response
rows, ``eval --choices``, ``sample --cfg``, one-line errors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import simplexdiff as sd
from simplexdiff.cli import main
from simplexdiff.data.tokenizer import EOS, CharTokenizer

TOK = CharTokenizer("abc: ", [EOS])  # ids a0 b1 c2 :3 space4 EOS5
V, L = 6, 8


class FakeLM:
    """What the conditional helpers read of a ``DiffusionLM``: model, path, tokenizer, length."""

    def __init__(self, model, path):
        self.model, self.path, self.tokenizer = model, path, TOK

    def trained_length(self) -> int:
        return L

    def generate(self, num, length, steps, sampler=None, **options):
        return sd.samplers.sample(
            self.model, self.path, num, length, steps, sampler, **options
        ).tokens


def unigram(q: torch.Tensor):
    """An autoregressive 'model' that ignores its context: ``log q`` at every position."""
    return lambda inputs, t: q.log().expand(*inputs.shape, V).float()


def test_score_choices_is_the_exact_conditional_nll_of_each_padded_choice():
    q = torch.tensor([0.4, 0.1, 0.2, 0.05, 0.05, 0.2])
    lm = FakeLM(unigram(q), sd.paths.build("ar", vocab_size=V))
    prompt, choices = "ab:", ["ab", "c", "bbcc"]
    res = sd.eval.score_choices(lm, prompt, choices)
    by_hand = []
    for c in choices:  # the response: the choice's ids, then EOS to the row's end
        ids = TOK.encode(c).tolist() + [TOK.eos_id] * (L - len(prompt) - len(c))
        by_hand.append(-sum(math.log(q[i]) for i in ids))
    assert res["nats"] == pytest.approx(by_hand, rel=1e-5)
    assert res["choice"] == min(range(3), key=by_hand.__getitem__) == 0
    assert res["bound"] == "exact_nll"
    with pytest.raises(sd.errors.ConfigError, match="does not fit"):
        sd.eval.score_choices(lm, prompt, ["aaaaa"])  # 3 + 5 leaves no room for EOS


def test_conditional_likelihood_scores_the_response_given_the_prompt():
    """An AR 'model' whose logits depend on the previous token: the bound of a response given a
    prompt differs from that of the response alone exactly by the first token's context."""
    trans = torch.softmax(torch.randn(V + 1, V, generator=torch.Generator().manual_seed(0)), -1)

    def markov(inputs, t):
        return trans[inputs].log()

    path = sd.paths.build("ar", vocab_size=V)
    prompts = [torch.tensor([0, 1]), torch.tensor([2]), torch.tensor([3, 4, 0])]
    responses = torch.tensor([[1, 2, 5], [0, 0, 5], [4, 3, 5]])
    res = sd.eval.likelihood(markov, responses, path=path, prompt=prompts)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        prev = [int(p[-1])] + r[:-1].tolist()
        want = -sum(math.log(trans[a, b]) for a, b in zip(prev, r.tolist(), strict=True))
        assert res["nats"][i] == pytest.approx(want, rel=1e-5)
    assert res["nats_per_token"] == pytest.approx(sum(res["nats"]) / 9, rel=1e-9)
    assert res["num_tokens"] == 9


def test_complete_returns_the_text_after_the_prompt_up_to_eos():
    """A masked 'model' that always predicts the row ``"ab: cab"`` + EOS: every prompt that is a
    prefix of it gets the rest, read up to EOS."""
    target = TOK.encode("ab: cab").tolist() + [TOK.eos_id]

    def denoiser(inputs, t):
        return (
            torch.nn.functional.one_hot(torch.tensor(target), V)
            .float()
            .expand(inputs.shape[0], L, V)
            * 20
        )

    lm = FakeLM(denoiser, sd.paths.build("masked", vocab_size=V))
    answers = sd.eval.complete(lm, ["ab: ", "ab: c", "ab"], temperature=0.0)
    assert answers == ["cab", "ab", ": cab"]
    res = sd.eval.exact_match(lm, [("ab: ", "cab"), ("ab: c", "ab"), ("ab: ", "bac")])
    assert res["accuracy"] == pytest.approx(2 / 3)


ROOT = Path(__file__).parents[1]
TINY = [
    "data.seq_len=16", "data.batch_size=8", "model.d_model=16", "model.n_layers=1",
    "model.n_heads=2", "trainer.max_steps=3", "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1", "optim.warmup_steps=1", "sample.num=2", "sample.steps=16",
]  # fmt: skip


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A masked model trained for 3 steps on prompt / response rows, with prompt dropout."""
    tmp = tmp_path_factory.mktemp("cond_cli")
    rows = [{"prompt": f"copy {w}:", "response": w} for w in ["ab", "ba", "abc", "cab"] * 30]
    corpus = tmp / "pairs.jsonl"
    corpus.write_text("\n".join(map(json.dumps, rows)) + "\n")
    args = [
        "train", str(ROOT / "recipes/instruct/masked.yaml"), f"data.corpus={corpus}",
        f"data.cache_dir={tmp / 'cache'}", f"out_dir={tmp / 'run'}", "prompt_dropout=0.5",
        "sample.cfg=1.5", *TINY,
    ]  # fmt: skip
    assert main(args) == 0
    run = tmp / "run" / "version_0"
    return tmp, run / "final.ckpt", json.loads((run / "results.json").read_text())


def test_training_on_prompt_response_rows_reports_exact_match(conditional_run):
    _, ckpt, results = conditional_run
    em = results["exact_match"]
    assert 0 <= em["accuracy"] <= 1 and em["num"] == 5  # the validation split: 120 / 24
    assert all(e["prompt"].startswith("copy ") for e in em["examples"])
    lm = sd.DiffusionLM.load(ckpt)
    assert lm.hparams.prompt_dropout == 0.5
    # the recipe answers greedily (sample.temperature: 0): what complete gives at temperature 0
    # from the run's seed; drawing at temperature 1 answers otherwise
    assert results["recipe"]["sample"]["temperature"] == 0
    prompts = [p for p, _ in sd.data.TextDataModule(**lm.data_config).examples("validation")]
    options = {"length": 16, "steps": 16, "cfg": 1.5}
    greedy, drawn = (
        sd.eval.complete(
            lm, prompts, temperature=t, generator=torch.Generator().manual_seed(0), **options
        )
        for t in (0.0, 1.0)
    )
    assert [e["answer"] for e in em["examples"]] == greedy[:2]
    assert drawn != greedy


def test_eval_choices_reports_accuracy(conditional_run, capsys, tmp_path):
    _, ckpt, _ = conditional_run
    questions = tmp_path / "q.jsonl"
    lines = [{"prompt": "copy ab:", "choices": ["ab", "ba"], "answer": 0}] * 3
    questions.write_text("\n".join(map(json.dumps, lines)) + "\n")
    out = tmp_path / "choices.json"
    code = main(["eval", str(ckpt), "--choices", str(questions), "--num-t", "4", "--out", str(out)])
    assert code == 0
    assert "accuracy" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["data"]["questions"] == 3 and res["metrics"]["accuracy"] in (0, 1 / 3, 2 / 3, 1)
    assert all(len(q["nats"]) == 2 for q in res["questions"])


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "q.jsonl:1: not a JSON object"),
        ('{"prompt": "x", "choices": ["a"], "answer": 0}', "two or more"),
        ('{"prompt": "x", "choices": ["a", "b"], "answer": 2}', "index of the right choice"),
    ],
)
def test_bad_choices_file_is_one_line(conditional_run, capsys, tmp_path, line, message):
    _, ckpt, _ = conditional_run
    questions = tmp_path / "q.jsonl"
    questions.write_text(line + "\n")
    assert main(["eval", str(ckpt), "--choices", str(questions)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_sample_with_guidance(conditional_run, capsys):
    _, ckpt, _ = conditional_run
    assert main(["sample", str(ckpt), "--num", "2", "--prompt", "copy ab:", "--cfg", "2"]) == 0
    texts = capsys.readouterr().out.splitlines()
    assert len(texts) == 2 and all(t.startswith("copy ab:") for t in texts)
    assert main(["sample", str(ckpt), "--num", "2", "--cfg", "2"]) == 2  # nothing to guide on
    assert "cfg guides on a prompt" in capsys.readouterr().err


def test_response_likelihood_pools_rows_of_different_prompt_lengths():
    """Rows laid out as in training (prompt, response, EOS to the end): each row's bound is that of
    its positions after its own prompt, and the pooled figure is per response token."""
    trans = torch.softmax(torch.randn(V + 1, V, generator=torch.Generator().manual_seed(1)), -1)
    lm = FakeLM(lambda inputs, t: trans[inputs].log(), sd.paths.build("ar", vocab_size=V))
    rows = torch.randint(0, V, (5, L), generator=torch.Generator().manual_seed(2))
    prompt_len = torch.tensor([2, 3, 2, 1, 3])
    res = sd.eval.response_likelihood(lm, rows, prompt_len)
    want = [
        -sum(math.log(trans[rows[i, j - 1], rows[i, j]]) for j in range(p, L))
        for i, p in enumerate(prompt_len.tolist())
    ]
    assert res["nats"] == pytest.approx(want, rel=1e-5)
    assert res["num_tokens"] == int((L - prompt_len).sum()) == 29
    assert res["nats_per_token"] == pytest.approx(sum(want) / 29, rel=1e-5)
    assert res["bound"] == "exact_nll" and res["num_sequences"] == 5
    with pytest.raises(sd.errors.ConfigError, match="leaves no response"):
        sd.eval.response_likelihood(lm, rows, torch.tensor([2, 3, 2, 1, L]))
