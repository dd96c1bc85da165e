"""Tokenizers (char, byte, byte-level BPE), document corpora and bits per byte (issue 14)."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import simplexdiff as sd
from simplexdiff.data import (
    EOS,
    ByteTokenizer,
    CharTokenizer,
    TextDataModule,
    fit_tokenizer,
    tokenizer_from_config,
)
from simplexdiff.errors import ConfigError, DataError

SHAKESPEARE = sd.data.datamodule.CORPORA_DIR / "tinyshakespeare.txt"


@pytest.fixture(scope="module")
def bpe():
    """A 400-id byte-level BPE fitted on 100k characters of Tiny Shakespeare, with EOS."""
    text = SHAKESPEARE.read_text()[:100_000]
    return fit_tokenizer({"name": "bpe", "vocab_size": 400}, [text], documents=True)


def any_text():
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=60)


@given(text=any_text())
def test_byte_and_bpe_round_trip_any_unicode_and_count_its_bytes(bpe, text):
    for tok in (ByteTokenizer(), ByteTokenizer([EOS]), bpe):
        ids = tok.encode(text)
        assert ids.dtype == np.int64 and tok.decode(ids) == text
        assert tok.token_bytes()[ids].sum() == len(text.encode("utf-8"))
        assert tok.eos_id is None or tok.eos_id not in ids.tolist()  # specials never read


@given(text=any_text().filter(lambda t: len(set(t)) >= 2))
def test_char_tokenizer_counts_utf8_bytes(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.token_bytes()[ids].sum() == len(text.encode("utf-8"))


def test_bpe_fits_the_training_text_and_rebuilds_from_plain_json(bpe):
    assert bpe.vocab_size == 400 and bpe.eos_id == 0
    text = SHAKESPEARE.read_text()[200_000:201_000]
    ids = bpe.encode(text)
    assert len(ids) < 0.6 * len(text.encode())  # merges learned: well under a token per byte
    again = tokenizer_from_config(json.loads(json.dumps(bpe.config())))
    assert np.array_equal(again.encode(text), ids) and again.digest() == bpe.digest()
    assert again.decode(np.append(ids[:3], bpe.eos_id)).endswith(EOS)
    # a literal "<|endoftext|>" inside a document is text, not the document end
    assert bpe.eos_id not in bpe.encode(f"a{EOS}b").tolist()


def test_specials_take_the_last_ids_of_char_and_byte():
    tok = CharTokenizer("ab", [EOS])
    assert tok.vocab_size == 3 and tok.eos_id == 2 and tok.decode([0, 2, 1]) == f"a{EOS}b"
    assert tok.token_bytes().tolist() == [1, 1, 0]
    byte = ByteTokenizer([EOS])
    assert byte.vocab_size == 257 and byte.decode([104, 256, 105]) == f"h{EOS}i"
    assert byte.decode([0xC3]) == "\ufffd"  # a sample's invalid UTF-8 decodes, marked
    legacy = tokenizer_from_config({"alphabet": " ab"})  # configs written before kinds existed
    assert isinstance(legacy, CharTokenizer) and legacy.vocab_size == 3


def test_bad_tokenizer_specs_fail_in_one_line():
    cases = [
        (
            {"name": "bpe", "vocab_size": 100},
            ConfigError,
            r"vocab_size must be an integer in \[258",
        ),
        ({"name": "bpe", "vocab_size": 2**32}, ConfigError, "vocab_size"),
        ({"name": "bpe", "merges": 3}, ConfigError, "unknown option 'merges'"),
        ({"name": "wordpiece"}, ConfigError, "unknown tokenizer 'wordpiece'"),
        ({"vocab_size": 3}, ConfigError, "a tokenizer is a name"),
    ]
    for spec, error, message in cases:
        with pytest.raises(error, match=message) as e:
            fit_tokenizer(spec, ["some text"], documents=True)
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="unknown tokenizer kind"):
        tokenizer_from_config({"kind": "sentencepiece"})
    with pytest.raises(DataError, match="not a Hugging Face tokenizer JSON"):
        tokenizer_from_config({"kind": "bpe", "json": "{"})


def write_jsonl(file, docs):
    file.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def test_jsonl_documents_end_with_eos_and_are_packed(tmp_path, cache_dir):
    docs = [f"doc {i}: " + "ab " * (i % 7 + 1) for i in range(300)]
    write_jsonl(tmp_path / "docs.jsonl", docs)
    dm = TextDataModule(str(tmp_path / "docs.jsonl"), seq_len=16, cache_dir=cache_dir)
    tok = dm.tokenizer
    assert tok.eos_id == len(tok.alphabet) and tok.vocab_size == len(set("".join(docs))) + 1
    whole = "".join(d + EOS for d in docs)
    texts = {s: "".join(tok.decode(dm.split(s).flatten())) for s in ("train", "validation", "test")}
    # each split is a stretch of the documents in order, each document followed by EOS (only the
    # ragged tail of a split is dropped, and a split's cut of a document carries no EOS)
    assert whole.startswith(texts["train"]) and texts["train"].count(EOS) > 250
    assert texts["validation"] in whole and texts["test"] in whole
    assert texts["test"].count(EOS) >= 10
    assert dm.config()["tokenizer"] == "char"


def test_parquet_rows_and_a_folder_of_text_files_are_documents(tmp_path, cache_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = ["first document. " * 20, "second one! " * 30, "third, last. " * 25] * 10
    pq.write_table(pa.table({"text": docs}), tmp_path / "docs.parquet")
    dm = TextDataModule(
        str(tmp_path / "docs.parquet"), seq_len=8, tokenizer="byte", cache_dir=cache_dir
    )
    assert dm.tokenizer.vocab_size == 257
    assert int((dm.split("train") == 256).sum()) >= 25
    folder = tmp_path / "plays"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"{i:02d}.txt").write_text(d)
    by_file = TextDataModule(str(folder), seq_len=8, tokenizer="byte", cache_dir=cache_dir)
    ids = by_file.split("train")
    assert int((ids == 256).sum()) >= 25  # one document per file, not per line


def test_bad_corpora_fail_in_one_line(tmp_path, cache_dir):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait ".encode("latin-1") * 40)
    with pytest.raises(DataError, match="could not read corpus .*utf-8") as e:
        TextDataModule(str(bad), cache_dir=cache_dir).setup()
    assert "\n" not in str(e.value)
    write_jsonl(tmp_path / "empty.jsonl", ["", ""])
    with pytest.raises(DataError, match="is empty"):
        TextDataModule(str(tmp_path / "empty.jsonl"), cache_dir=cache_dir).setup()
    (tmp_path / "rows.jsonl").write_text('{"body": "no text column"}\n')
    with pytest.raises(DataError, match="no 'text' column"):
        TextDataModule(str(tmp_path / "rows.jsonl"), cache_dir=cache_dir).setup()
    write_jsonl(tmp_path / "docs.jsonl", ["abc " * 50] * 30)
    with pytest.raises(DataError, match="no end-of-document symbol"):
        TextDataModule(
            str(tmp_path / "docs.jsonl"), tokenizer=CharTokenizer(" abc"), cache_dir=cache_dir
        ).setup()


def test_a_fitted_bpe_is_cached_and_every_seq_len_reads_the_same_ids(
    tmp_path, cache_dir, monkeypatch
):
    spec = {"name": "bpe", "vocab_size": 300}
    dm = TextDataModule("tinyshakespeare", seq_len=64, tokenizer=spec, cache_dir=cache_dir)
    test = dm.split("test")
    assert dm.tokenizer.vocab_size == 300 and dm.tokenizer.eos_id is None  # one document
    assert dm.split("train").dtype == torch.long and dm.compact_split("train").dtype == torch.uint16

    def refit(*args, **kwargs):
        raise AssertionError("fitted again")

    monkeypatch.setattr(sd.data.datamodule, "fit_tokenizer", refit)
    again = TextDataModule("tinyshakespeare", seq_len=32, tokenizer=spec, cache_dir=cache_dir)
    assert again.tokenizer.digest() == dm.tokenizer.digest()
    assert torch.equal(
        again.split("test")[: 2 * len(test)].flatten()[: test.numel()], test.flatten()
    )
    assert len(list((tmp_path / "cache" / "ids").glob("*.npy"))) == 3


def tiny_lm(path_name: str, tokenizer, seq_len: int = 16) -> sd.DiffusionLM:
    vocab = tokenizer.vocab_size
    model = sd.models.MODELS.build(
        "causal" if path_name == "ar" else "dit",
        vocab_size=vocab,
        d_model=16,
        n_layers=1,
        n_heads=2,
        max_len=seq_len,
    )
    return sd.DiffusionLM(model, sd.paths.build(path_name, vocab_size=vocab), tokenizer=tokenizer)


@pytest.mark.parametrize("path_name", ["masked", "ar"])
def test_bits_per_byte_is_bits_per_char_times_chars_per_byte(tmp_path, cache_dir, path_name):
    """On text8 (ASCII: a byte per char) bpb equals bpc; on a text with multi-byte characters
    bpb = bpc x chars / bytes, in ``sd.eval.likelihood`` and in validation."""
    text8 = TextDataModule("text8", seq_len=16, batch_size=8, cache_dir=cache_dir)
    lm = tiny_lm(path_name, text8.tokenizer)
    tokens = text8.split("test")[:16]
    out = sd.eval.likelihood(lm, tokens, generator=torch.Generator().manual_seed(0), num_t=2)
    assert out["num_bytes"] == tokens.numel() and out["bpb"] == pytest.approx(out["bpc"], rel=1e-12)
    (tmp_path / "greek.txt").write_text("καλημέρα κόσμε, good morning world. " * 200)
    dm = TextDataModule(str(tmp_path / "greek.txt"), seq_len=16, batch_size=8, cache_dir=cache_dir)
    lm = tiny_lm(path_name, dm.tokenizer)
    tokens = dm.split("test")
    out = sd.eval.likelihood(lm, tokens, generator=torch.Generator().manual_seed(0), num_t=2)
    chars = sum(len(t) for t in dm.tokenizer.decode(tokens))
    num_bytes = sum(len(t.encode()) for t in dm.tokenizer.decode(tokens))
    assert out["num_bytes"] == num_bytes > chars
    assert out["bpb"] == pytest.approx(out["bpc"] * chars / num_bytes, rel=1e-12)
    trainer = sd.lightning.module.L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=2
    )
    val = trainer.validate(lm, datamodule=dm, verbose=False)[0]
    scored = dm.split("validation")[:16]
    ratio = scored.numel() / int(dm.tokenizer.count_bytes(scored).sum())
    assert val["val/bpb"] == pytest.approx(val["val/bpc"] * ratio, rel=1e-5)


def test_a_checkpoint_scores_new_text_without_its_corpus(tmp_path):
    """The tokenizer travels in the checkpoint: with the training corpus and every cache gone,
    the loaded model encodes and scores new text in bits per token and per byte."""
    corpus = tmp_path / "train.jsonl"
    write_jsonl(corpus, [SHAKESPEARE.read_text()[i : i + 2000] for i in range(0, 60_000, 2000)])
    cache = tmp_path / "cache"
    dm = TextDataModule(
        str(corpus),
        seq_len=16,
        batch_size=8,
        tokenizer={"name": "bpe", "vocab_size": 300},
        cache_dir=str(cache),
    )
    lm = tiny_lm("masked", dm.tokenizer)
    trainer = sd.lightning.module.L.Trainer(
        max_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=1,
        val_check_interval=3,
        check_val_every_n_epoch=None,
    )
    trainer.fit(lm, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    corpus.unlink()
    shutil.rmtree(cache)
    loaded = sd.DiffusionLM.load(tmp_path / "m.ckpt")
    assert loaded.tokenizer.config() == dm.tokenizer.config()
    new = "O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name."
    ids = loaded.tokenizer.encode_tensor(new)[:16].unsqueeze(0)
    out = sd.eval.likelihood(loaded, ids, generator=torch.Generator().manual_seed(0), num_t=4)
    assert math.isfinite(out["bpb"]) and out["num_bytes"] == len(
        loaded.tokenizer.decode(ids[0]).encode()
    )
    assert not cache.exists()


def test_reference_bits_per_char_under_a_bpe_model(bpe):
    """Samples of several lengths in BPE tokens are scored per token length, and the total is
    reported per character scored."""
    ar = tiny_lm("ar", bpe, seq_len=12).eval()
    texts = ["the king is dead", "zqxj vvkk", "and so to bed!!"]
    ids = [bpe.encode_tensor(t) for t in texts]
    assert len({len(i) for i in ids}) > 1 and max(len(i) for i in ids) <= 12
    out = sd.eval.reference_bpc(texts, ar)
    nats = sum(
        sd.eval.likelihood(ar, i[None])["nats_per_token"] * len(i) for i in ids
    )  # one sequence at a time
    assert out["num_chars"] == sum(map(len, texts)) and out["num_tokens"] == sum(map(len, ids))
    assert out["bpc"] == pytest.approx(nats / out["num_chars"] / math.log(2), rel=1e-9)
