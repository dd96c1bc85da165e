"""Sample-quality metrics (``sd.eval.samples``): hand-computed cases, and the consistency of
``reference_bpc`` with ``sd.eval.likelihood`` on held-out real text."""

import math
from collections import Counter

import pytest
import torch

import simplexdiff as sd
from simplexdiff.errors import ConfigError, DataError
from simplexdiff.eval.samples import TrainReference


# --- characters ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_counts_match_a_counter(n):
    texts = ["the cat sat", "ab", "", "héllo ☃☃ x"]
    expected = Counter(t[i : i + n] for t in texts for i in range(len(t) - n + 1))
    assert sd.eval.ngram_counts(texts, n) == dict(expected)  # no n-gram spans two texts
    assert sd.eval.ngram_counts("abab", 2) == {"ab": 2, "ba": 1}


def test_unigram_entropy():
    assert sd.eval.unigram_entropy(["aabb"]) == pytest.approx(1.0)
    assert sd.eval.unigram_entropy(["ab", "cd"]) == pytest.approx(2.0)  # pooled over samples
    assert sd.eval.unigram_entropy("aaab") == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * -2))
    assert sd.eval.unigram_entropy("aaaa") == 0
    assert math.isnan(sd.eval.unigram_entropy([""]))


def test_ngram_kl_hand_computed():
    # unigrams: P = (1/2, 1/2); reference counts a: 2, b: 1, union {a, b}: Q = (2.5, 1.5) / 4
    kl = sd.eval.ngram_kl(["ab"], "aab", 1)
    assert kl == pytest.approx(0.5 * math.log2(0.5 / 0.625) + 0.5 * math.log2(0.5 / 0.375))
    # an n-gram the reference never shows: union {a, b, c}, Q(c) = 0.5 / (3 + 1.5) = 1/9
    assert sd.eval.ngram_kl("c", "aab", 1) == pytest.approx(math.log2(9))
    # bigrams: P = {ab: 2/3, ba: 1/3}; reference "abc": {ab: 1, bc: 1}, union {ab, bc, ba}
    q_ab, q_ba = 1.5 / 3.5, 0.5 / 3.5  # (count + 1/2) / (2 + 3 / 2)
    expected = 2 / 3 * math.log2(2 / 3 / q_ab) + 1 / 3 * math.log2(1 / 3 / q_ba)
    assert sd.eval.ngram_kl("abab", ["abc"], 2) == pytest.approx(expected)
    # the same distribution: 0; counts work as the reference; no n-gram: NaN
    assert sd.eval.ngram_kl(["ab", "ba"], "abba", 1) == pytest.approx(0.0, abs=1e-12)
    assert sd.eval.ngram_kl("abab", {"ab": 1, "bc": 1}, 2) == pytest.approx(expected)
    assert math.isnan(sd.eval.ngram_kl(["ab"], "abc", 3))


# --- words ---------------------------------------------------------------------------------------
def test_word_validity_drops_words_at_chunk_edges():
    vocab = sd.eval.word_set("the cat and the dog")
    assert vocab == {"the", "cat", "and", "dog"}
    samples = ["xx the cat zz", " dog mat ", "he dog", "single"]
    # 1: "xx" and "zz" cut by the edges -> the, cat; 2: space at both ends -> dog, mat; 3: "dog"
    # touches the end -> nothing; 4: one word, cut -> nothing
    assert [sd.eval.samples.sample_words(s) for s in samples] == [
        ["the", "cat"],
        ["dog", "mat"],
        [],
        [],
    ]
    wv = sd.eval.word_validity(samples, vocab)
    assert wv == (0.75, 3, 4) and wv.rate == 0.75 and wv.words == 4
    assert math.isnan(sd.eval.word_validity(["abc"], vocab).rate)


def test_sample_metrics_dict():
    text = "the cat sat on the mat"
    assert TrainReference.from_text(text).words == {"cat", "sat", "on", "the"}  # edges cut
    train = TrainReference.from_text(f" {text} ")
    samples = ["at the cat on", "the mat on th", "x ox"]
    out = sd.eval.sample_metrics(samples, train)
    assert out["num_samples"] == 3 and out["num_chars"] == 30
    assert (out["word_validity"], out["valid_words"], out["num_words"]) == (1.0, 4, 4)
    assert out["unigram_entropy"] == sd.eval.unigram_entropy(samples)
    assert out["train_unigram_entropy"] == sd.eval.unigram_entropy(f" {text} ")
    for n in (1, 2, 3):
        assert out[f"ngram_kl_{n}"] == pytest.approx(sd.eval.ngram_kl(samples, f" {text} ", n))
    assert "reference_bpc" not in out


def test_train_reference_is_cached_per_corpus(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("alpha beta gamma " * 30 + "delta")
    ref = sd.eval.train_reference(str(f), str(tmp_path / "cache"))
    assert ref is sd.eval.train_reference(str(f), str(tmp_path / "cache"))  # from memory
    assert ref.words == {"alpha", "beta", "gamma"}  # "delta" lies in the test split
    assert set(ref.ngrams) == {1, 2, 3}
    with pytest.raises(DataError, match="data file not found"):
        sd.eval.train_reference(str(tmp_path / "nope.txt"))


# --- the reference model -------------------------------------------------------------------------
@pytest.fixture
def held_out_and_ar(tmp_path):
    """A tiny AR model trained for a few steps on a small corpus, and that corpus's test chunks."""
    f = tmp_path / "corpus.txt"
    f.write_text("the quick brown fox jumps over the lazy dog and the cat sat on the mat " * 60)
    dm = sd.data.TextDataModule(str(f), seq_len=24, cache_dir=str(tmp_path / "cache"))
    v = dm.tokenizer.vocab_size
    torch.manual_seed(0)
    model = sd.models.build("causal", vocab_size=v, d_model=16, n_layers=1, n_heads=2, max_len=24)
    lm = sd.DiffusionLM(
        model=model, path=sd.paths.build("ar", vocab_size=v), tokenizer=dm.tokenizer
    )
    opt = torch.optim.AdamW(lm.model.parameters(), lr=1e-2)
    train = dm.split("train")
    for i in range(15):
        loss = lm.path.training_loss(lm.model, train[16 * i : 16 * i + 16], torch.zeros(16)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return dm.split("test"), lm.eval(), dm.tokenizer


def test_held_out_text_scores_as_its_likelihood(held_out_and_ar):
    """The consistency check of issue #5: real held-out text, scored as if it were samples, gets
    exactly the reference AR model's ``sd.eval.likelihood`` bits per char."""
    chunks, ar, tok = held_out_and_ar
    assert len(chunks) >= 4
    texts = tok.decode(chunks)
    direct = sd.eval.likelihood(ar, chunks, batch_size=3)
    scored = sd.eval.reference_bpc(texts, ar, batch_size=3)
    assert scored["bpc"] == direct["bpc"] and scored["bpc_stderr"] == direct["bpc_stderr"]
    assert scored["num_tokens"] == chunks.numel() and scored["num_sequences"] == len(chunks)
    assert abs(direct["bpc"] - math.log2(tok.vocab_size)) > 0.1  # trained: not the uniform log V
    out = sd.eval.sample_metrics(texts, TrainReference.from_text(" ".join(texts)), reference=ar)
    assert out["reference_bpc"] == direct["bpc"]
    assert out["word_validity"] == 1.0  # every whole word of held-out text is a word of itself
    # samples of several lengths: scored per length, combined weighted by tokens
    mixed = sd.eval.reference_bpc([texts[0], texts[1][:10]], ar)
    a = sd.eval.likelihood(ar, chunks[:1])["nats_per_token"] * 24
    b = sd.eval.likelihood(ar, chunks[1:2, :10])["nats_per_token"] * 10
    assert mixed["bpc"] == pytest.approx((a + b) / 34 / math.log(2), rel=1e-12)
    assert mixed["num_tokens"] == 34 and math.isnan(mixed["bpc_stderr"])


def test_reference_must_be_autoregressive_with_a_tokenizer(held_out_and_ar):
    _, ar, tok = held_out_and_ar
    masked = sd.DiffusionLM(
        model=sd.models.DiT(tok.vocab_size, 16, 1, 2, 24),
        path=sd.paths.build("masked", vocab_size=tok.vocab_size),
        tokenizer=tok,
    )
    with pytest.raises(ConfigError, match="must be autoregressive"):
        sd.eval.reference_bpc(["the cat"], masked)
    ar.tokenizer = None
    with pytest.raises(ConfigError, match="no tokenizer"):
        sd.eval.reference_bpc(["the cat"], ar)
