"""Conditional (prompt, response) corpora: chat template, rows, batches, synthetic sets."""

import json
import re

import numpy as np
import pytest
import torch

from simplexdiff.data import (
    CharTokenizer,
    TextDataModule,
    TrainStream,
    dialogue_examples,
    instruction_examples,
    render_messages,
    reversal_facts,
)
from simplexdiff.data.synthetic import TASKS, instruction_word
from simplexdiff.errors import DataError


def write_rows(file, rows):
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(file)


def pairs(n, start=0):
    """``n`` prompt / response rows, about 10-14 characters each."""
    return [{"prompt": f"say {i}: ", "response": f"ok {i}"} for i in range(start, start + n)]


DIALOGUE = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "bye"},
    {"role": "assistant", "content": "ciao"},
]


def test_chat_template_turns_a_dialogue_into_one_example_per_assistant_turn():
    assert render_messages(DIALOGUE[:2]) == "System: be brief\nUser: hi\n"
    assert dialogue_examples(DIALOGUE) == [
        ("System: be brief\nUser: hi\nAssistant: ", "hello"),
        ("System: be brief\nUser: hi\nAssistant: hello\nUser: bye\nAssistant: ", "ciao"),
    ]
    assert dialogue_examples(DIALOGUE[:2]) == []  # no assistant turn, no example
    with pytest.raises(DataError, match="a message is"):
        dialogue_examples([{"role": "robot", "content": "beep"}])


def test_messages_jsonl_through_a_real_file(tmp_path, cache_dir):
    rows = [{"messages": DIALOGUE}] + [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(23)
    ]
    dm = TextDataModule(write_rows(tmp_path / "chat.jsonl", rows), seq_len=80, cache_dir=cache_dir)
    assert dm.conditional and dm.tokenizer.eos_id is not None
    # 25 examples cut in order by count at 11/12, 1/24, 1/24: 23, 1, 1
    assert [len(dm.examples(s)) for s in ("train", "validation", "test")] == [23, 1, 1]
    assert dm.examples("train")[:2] == dialogue_examples(DIALOGUE)
    assert dm.examples("test") == [("User: q22\nAssistant: ", "a")]
    row, n = dm.split("train")[1], int(dm.prompt_lengths("train")[1])
    assert dm.tokenizer.decode(row[:n]) == dialogue_examples(DIALOGUE)[1][0]
    assert dm.tokenizer.decode(row[n:], until_eos=True) == "ciao"


def test_rows_are_prompt_then_response_then_eos(tmp_path, cache_dir):
    rows = [{"prompt": "", "response": "abc"}, {"prompt": "ab\n", "response": ""}] + pairs(22)
    dm = TextDataModule(write_rows(tmp_path / "p.jsonl", rows), seq_len=16, cache_dir=cache_dir)
    tok, ids, plen = dm.tokenizer, dm.split("train"), dm.prompt_lengths("train")
    assert ids.shape == (22, 16) and ids.dtype == torch.long
    assert plen.dtype == torch.long and plen.shape == (22,)
    assert dm.compact_split("train").dtype == torch.uint8
    for (prompt, response), row, n in zip(dm.examples("train"), ids, plen, strict=True):
        body = np.concatenate([tok.encode(prompt), tok.encode(response)])
        assert int(n) == len(tok.encode(prompt))
        assert row[: len(body)].tolist() == body.tolist()
        assert (row[len(body) :] == tok.eos_id).all() and len(body) < 16
    assert plen[0] == 0 and ids[0, :4].tolist() == [*tok.encode("abc"), tok.eos_id]
    assert plen[1] == 3 and ids[1, 3] == tok.eos_id  # an empty response: EOS only


def test_too_long_examples_are_dropped_with_one_warning(tmp_path, cache_dir):
    rows = pairs(10) + [{"prompt": "x" * 20, "response": "y"}] + pairs(13, start=10)
    file = write_rows(tmp_path / "p.jsonl", rows)
    with pytest.warns(UserWarning, match=r"seq_len=16 .* needs 22 tokens.*: 1 train, 0 valid"):
        dm = TextDataModule(file, seq_len=16, cache_dir=cache_dir)
        dm.setup()
    assert len(dm.split("train")) == len(dm.examples("train")) == 21
    assert ("x" * 20, "y") not in dm.examples("train")
    with pytest.raises(DataError, match=r"no training example .* fits seq_len=8: .* to 22 tokens"):
        TextDataModule(file, seq_len=8, cache_dir=cache_dir).setup()


def test_a_fitted_bpe_has_eos(tmp_path, cache_dir):
    file = write_rows(tmp_path / "p.jsonl", pairs(24))
    spec = {"name": "bpe", "vocab_size": 300}
    dm = TextDataModule(file, seq_len=16, tokenizer=spec, cache_dir=cache_dir)
    row, n = dm.split("train")[5], dm.prompt_lengths("train")[5]
    assert dm.tokenizer.decode(row[:n]) == "say 5: "
    assert dm.tokenizer.decode(row[n:], until_eos=True) == "ok 5" and row[-1] == dm.tokenizer.eos_id


def test_a_given_tokenizer_without_eos_fails(tmp_path, cache_dir):
    file = write_rows(tmp_path / "p.jsonl", pairs(24))
    with pytest.raises(DataError, match="no end-of-sequence symbol") as e:
        TextDataModule(
            file, tokenizer=CharTokenizer(" :0123456789aksoy"), cache_dir=cache_dir
        ).setup()
    assert "\n" not in str(e.value)


def test_batches_are_dicts_and_resume(tmp_path, cache_dir):
    file = write_rows(tmp_path / "p.jsonl", pairs(48))
    dm = TextDataModule(file, seq_len=16, batch_size=4, cache_dir=cache_dir)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"ids", "prompt_len"}
    assert batch["ids"].shape == (4, 16) and batch["prompt_len"].shape == (4,)
    assert batch["ids"].dtype == batch["prompt_len"].dtype == torch.long
    ids, plen = dm.split("train"), dm.prompt_lengths("train")
    stream = TrainStream(dm.compact_split("train"), 4, seed=3, prompt_len=plen)
    first = [b for _, b in zip(range(30), iter(stream), strict=False)]
    for b in first:  # each row with its own prompt length
        rows = [int((ids == r).all(1).nonzero()) for r in b["ids"]]
        assert torch.equal(b["prompt_len"], plen[rows])
    resumed = iter(TrainStream(dm.compact_split("train"), 4, seed=3, start=17, prompt_len=plen))
    for b in first[17:]:
        again = next(resumed)
        assert torch.equal(again["ids"], b["ids"]) and torch.equal(
            again["prompt_len"], b["prompt_len"]
        )
    # unconditional rows: the same stream yields the same ids as plain tensors
    plain = iter(TrainStream(dm.compact_split("train"), 4, seed=3))
    assert all(torch.equal(next(plain), b["ids"]) for b in first)
    evals = list(dm.val_dataloader())
    assert [k for k, _ in evals] == [0] and set(evals[0][1]) == {"ids", "prompt_len"}
    assert torch.equal(evals[0][1]["ids"], dm.split("validation"))
    assert torch.equal(evals[0][1]["prompt_len"], dm.prompt_lengths("validation"))


def test_text_corpus_keeps_plain_tensors(tmp_path, cache_dir):
    file = tmp_path / "docs.jsonl"
    file.write_text("".join(json.dumps({"text": "ab " * (i + 3)}) + "\n" for i in range(40)))
    dm = TextDataModule(str(file), seq_len=8, batch_size=2, cache_dir=cache_dir)
    assert not dm.conditional
    assert isinstance(next(iter(dm.train_dataloader())), torch.Tensor)
    k, batch = next(iter(dm.val_dataloader()))
    assert k == 0 and isinstance(batch, torch.Tensor)
    with pytest.raises(DataError, match="holds documents"):
        dm.prompt_lengths("train")
    (tmp_path / "rows.jsonl").write_text('{"question": "no usable column"}\n')
    with pytest.raises(DataError, match="no 'text' column .*'prompt' and 'response'.*'messages'"):
        TextDataModule(str(tmp_path / "rows.jsonl"), cache_dir=cache_dir).setup()


def test_bundled_instruct_holds_out_its_words(cache_dir):
    dm = TextDataModule("instruct", seq_len=32, batch_size=8, cache_dir=cache_dir)
    assert dm.conditional and dm.tokenizer.kind == "char"
    sizes = [len(dm.split(s)) for s in ("train", "validation", "test")]
    assert sizes == [20_000, 500, 500]  # every example fits 32
    words = {
        s: {instruction_word({"prompt": p}) for p, _ in dm.examples(s)}
        for s in ("train", "validation", "test")
    }
    assert not words["train"] & (words["validation"] | words["test"])
    assert not words["validation"] & words["test"]
    for prompt, response in dm.examples("validation"):
        task, word = prompt[:-1].split(": ")
        assert TASKS[task](word) == response and 3 <= len(word) <= 6
    assert TextDataModule(**dm.config()).examples("test") == dm.examples("test")


def test_generators_are_deterministic():
    a = instruction_examples(200, seed=5)
    assert a == instruction_examples(200, seed=5) != instruction_examples(200, seed=6)
    assert {p["prompt"].split(":")[0] for p in a} == set(TASKS)
    assert all(len(e["prompt"]) + len(e["response"]) <= 32 for e in a)
    held = {instruction_word(e) for e in a}
    assert not held & {instruction_word(e) for e in instruction_examples(500, 7, exclude=held)}
    facts = reversal_facts(300, seed=1)
    assert facts == reversal_facts(300, seed=1) != reversal_facts(300, seed=2)
    names = [n for pair in facts for n in pair]
    assert len(facts) == 300 and len(set(names)) == 600
    assert all(re.fullmatch(r"[A-Z][a-z]{3,5}", n) for n in names)
