"""Sample quality on decoded text (DESIGN "Samples"): numbers to report side by side.

* ``unigram_entropy``: entropy of the samples' character distribution, bits per char (too low:
  repetitive samples; the data's is about 4.1 bits for text8);
* ``word_validity``: share of generated words that occur in the training split;
* ``ngram_kl``: KL divergence of the samples' character n-gram distribution from the reference's;
* ``reference_bpc``: bits per char of the samples under a reference autoregressive model (its exact
  NLL through ``sd.eval.likelihood``);
* ``sample_metrics``: all of these in one dict.

Words are maximal runs of non-whitespace (for text8: split on spaces). Character n-grams are taken
inside each sample (none spans two samples). ``TrainReference`` holds what the training split
contributes (its word set and n-gram counts); ``train_reference(corpus)`` builds it once per corpus
and process (text8's 11M training characters take about a second) and keeps it in memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from simplexdiff.errors import ConfigError
from simplexdiff.eval.likelihood import likelihood

if TYPE_CHECKING:
    from simplexdiff.lightning import DiffusionLM

NGRAM_ORDERS = (1, 2, 3)


def _texts(samples: str | Iterable[str]) -> list[str]:
    return [samples] if isinstance(samples, str) else list(samples)


# --- character statistics ------------------------------------------------------------------------
def ngram_counts(texts: str | Iterable[str], n: int) -> dict[str, int]:
    """Counts of the character n-grams inside each text (vectorised: fast on millions of chars)."""
    if n < 1:
        raise ConfigError(f"n-gram order must be positive, got {n}")
    codes = [np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32) for t in _texts(texts)]
    codes = [c for c in codes if len(c) >= n]
    if not codes:
        return {}
    flat = np.concatenate(codes)
    alphabet = np.flatnonzero(np.bincount(flat))  # code points <= 0x10FFFF: a small table
    table = np.zeros(int(alphabet[-1]) + 1, dtype=np.int64)
    table[alphabet] = np.arange(len(alphabet))
    base = len(alphabet)
    if base**n >= 2**62:
        raise ConfigError(f"alphabet of {base} characters too large for {n}-grams")
    keys, start = [], 0
    for c in codes:  # one key per window, base-`base` digits; windows inside one text only
        idx = table[flat[start : start + len(c)]]
        start += len(c)
        m = len(c) - n + 1
        key = idx[:m].copy()
        for j in range(1, n):
            key = key * base + idx[j : m + j]
        keys.append(key)
    key = np.concatenate(keys)
    if base**n <= 1 << 24:
        counts = np.bincount(key, minlength=base**n)
        uniq = np.flatnonzero(counts)
        counts = counts[uniq]
    else:
        uniq, counts = np.unique(key, return_counts=True)
    digits = np.empty((len(uniq), n), dtype=np.int64)
    rest = uniq
    for j in range(n - 1, -1, -1):
        rest, digits[:, j] = np.divmod(rest, base)
    grams = alphabet.astype("<u4")[digits].tobytes().decode("utf-32-le")
    return {grams[i * n : (i + 1) * n]: c for i, c in enumerate(counts.tolist())}


def _entropy_bits(counts: Iterable[int]) -> float:
    c = np.asarray(list(counts), dtype=np.float64)
    if c.sum() == 0:
        return float("nan")
    p = c[c > 0] / c.sum()
    return float(-(p * np.log2(p)).sum())


def unigram_entropy(samples: str | Iterable[str]) -> float:
    """Entropy ``-sum_c p(c) log2 p(c)`` of the character frequencies ``p`` of all samples together,
    in bits per char (NaN for no characters)."""
    return _entropy_bits(ngram_counts(samples, 1).values())


def ngram_kl(
    samples: str | Iterable[str], reference: str | Iterable[str] | Mapping[str, int], n: int
) -> float:
    """``KL(P || Q) = sum_g P(g) log2(P(g) / Q(g))`` in bits, over character n-grams ``g``.

    ``P``: the samples' n-gram frequencies (unsmoothed). ``Q``: the reference's (texts, or n-gram
    counts as ``ngram_counts`` gives them), add-1/2 smoothed over the union ``U`` of n-grams seen in
    samples or reference: ``Q(g) = (count(g) + 1/2) / (N + |U| / 2)``, so an n-gram the reference
    never shows costs a finite penalty (Jeffreys / Krichevsky-Trofimov prior) instead of an infinite
    KL, and smoothing only ever covers n-grams somebody saw. NaN when the samples have no n-gram.
    """
    p = ngram_counts(samples, n)
    q = reference if isinstance(reference, Mapping) else ngram_counts(reference, n)
    if not p:
        return float("nan")
    union = len(q) + sum(1 for g in p if g not in q)
    q_total = sum(q.values()) + 0.5 * union
    p_total = sum(p.values())
    kl = 0.0
    for g, c in p.items():
        pg = c / p_total
        kl += pg * math.log2(pg * q_total / (q.get(g, 0) + 0.5))
    return max(kl, 0.0)  # exactly 0 when P = Q up to rounding


# --- words ----------------------------------------------------------------------------------------
def word_set(text: str) -> frozenset[str]:
    """The distinct words (maximal runs of non-whitespace) of ``text``."""
    return frozenset(text.split())


class WordValidity(NamedTuple):
    """``rate = valid / words`` (NaN when no word was scored)."""

    rate: float
    valid: int
    words: int


def sample_words(sample: str) -> list[str]:
    """The words of one sample that a chunk edge cannot have cut: all words, less the first unless
    the sample starts with whitespace and the last unless it ends with whitespace."""
    words = sample.split()
    if words and sample[:1] and not sample[:1].isspace():
        words = words[1:]
    if words and sample[-1:] and not sample[-1:].isspace():
        words = words[:-1]
    return words


def word_validity(samples: str | Iterable[str], vocabulary: Iterable[str]) -> WordValidity:
    """Share of generated words found in ``vocabulary`` (e.g. ``word_set(train_text)``).

    Words are split on whitespace; the first and last word of each sample are dropped, since a chunk
    edge may cut them (a model trained on chunks starts and ends its samples mid-word), except where
    the sample itself starts or ends with whitespace (see ``sample_words``). Returns
    ``WordValidity(rate, valid, words)``: words scored, and how many of them are valid.
    """
    vocab = vocabulary if isinstance(vocabulary, (set, frozenset)) else frozenset(vocabulary)
    words = [w for s in _texts(samples) for w in sample_words(s)]
    valid = sum(w in vocab for w in words)
    return WordValidity(valid / len(words) if words else float("nan"), valid, len(words))


# --- the reference corpus -------------------------------------------------------------------------
@dataclass
class TrainReference:
    """What the training split contributes to sample metrics: its words (less a first and last
    word the split's edges may cut, as for samples) and its character n-gram counts."""

    words: frozenset[str]
    ngrams: dict[int, dict[str, int]] = field(default_factory=dict)
    name: str = ""
    test_ngrams: dict[int, dict[str, int]] | None = None
    """The held-out (test) split's n-gram counts: the reference of ``ngram_kl_<n>`` (issue 5:
    samples vs the test split); ``None``: the training counts stand in."""

    @classmethod
    def from_text(
        cls,
        text: str,
        orders: Sequence[int] = NGRAM_ORDERS,
        name: str = "",
        test_text: str | None = None,
    ) -> TrainReference:
        words = frozenset(sample_words(text))
        test = None if test_text is None else {n: ngram_counts(test_text, n) for n in orders}
        return cls(words, {n: ngram_counts(text, n) for n in orders}, name, test)

    @property
    def unigram_entropy(self) -> float:
        """The training split's own character entropy, bits per char (the value to compare with)."""
        return _entropy_bits(self.ngrams[1].values()) if 1 in self.ngrams else float("nan")


_TRAIN_REFERENCES: dict[tuple, TrainReference] = {}


def train_reference(corpus: str, cache_dir: str | None = None) -> TrainReference:
    """``TrainReference`` of a corpus's training split (names as ``TextDataModule`` takes them),
    built once per corpus, file version and process, then served from memory."""
    from simplexdiff.data import load_split_texts, resolve_corpus  # the data floor, on demand

    kind, location = resolve_corpus(corpus)
    stamp = Path(location).stat().st_mtime_ns if kind == "file" else None
    key = (kind, str(Path(location).resolve()) if kind == "file" else location, stamp)
    if key not in _TRAIN_REFERENCES:
        texts = load_split_texts(corpus, cache_dir)
        _TRAIN_REFERENCES[key] = TrainReference.from_text(
            texts["train"], name=corpus, test_text=texts["test"]
        )
    return _TRAIN_REFERENCES[key]


# --- the reference model --------------------------------------------------------------------------
def reference_bpc(
    samples: str | Iterable[str], reference: DiffusionLM, batch_size: int = 64
) -> dict[str, Any]:
    """Bits per char of the samples under an autoregressive ``reference`` (a ``DiffusionLM`` with
    the ``ar`` path and a tokenizer): ``sd.eval.likelihood``'s exact NLL of the encoded samples,
    its total over the characters scored.

    Samples are encoded with the reference's tokenizer (cut to its ``max_len`` tokens; the
    characters of the cut text are the ones counted); samples of one token length are scored
    together, several lengths per length, and the totals combined. Returns ``{"bpc",
    "bpc_stderr", "num_tokens", "num_chars", "num_sequences"}``; ``bpc_stderr`` (one token length
    only) is likelihood's per-token error scaled by tokens per char. With a char tokenizer these
    are exactly likelihood's numbers.
    """
    if reference.path.family != "autoregressive":
        raise ConfigError(
            f"the reference model must be autoregressive (path 'ar'), got "
            f"{reference.path.registry_name!r}"
        )
    tokenizer = reference.tokenizer
    if tokenizer is None:
        raise ConfigError("the reference model carries no tokenizer to encode samples with")
    texts = [t for t in _texts(samples) if t]
    if not texts:
        raise ConfigError("no non-empty samples to score")
    max_len = getattr(reference.model, "max_len", None)
    by_length: dict[int, list[torch.Tensor]] = {}
    chars = 0
    for t in texts:
        whole = tokenizer.encode_tensor(t)
        ids = whole[:max_len]
        chars += len(t) if len(ids) == len(whole) else len(tokenizer.decode(ids))
        by_length.setdefault(len(ids), []).append(ids)
    results = [
        likelihood(reference, torch.stack(rows), batch_size=batch_size)
        for rows in by_length.values()
    ]
    tokens = sum(r["num_tokens"] for r in results)
    nats = sum(r["nats_per_token"] * r["num_tokens"] for r in results)
    bpc = nats / chars / math.log(2)
    if len(results) == 1 and tokens == chars:  # exactly likelihood's numbers (x * n / n may
        bpc, stderr = results[0]["bpc"], results[0]["bpc_stderr"]  # be x's float neighbour)
    else:
        stderr = results[0]["bpc_stderr"] * tokens / chars if len(results) == 1 else float("nan")
    return {
        "bpc": bpc,
        "bpc_stderr": stderr,
        "num_tokens": tokens,
        "num_chars": chars,
        "num_sequences": len(texts),
    }


# --- everything ------------------------------------------------------------------------------------
def sample_metrics(
    samples: Sequence[str],
    train: TrainReference,
    reference: DiffusionLM | None = None,
    orders: Sequence[int] = NGRAM_ORDERS,
    batch_size: int = 64,
) -> dict[str, Any]:
    """All sample metrics of decoded ``samples`` in one flat dict:

    ``num_samples``, ``num_chars``, ``unigram_entropy`` (bits/char; ``train_unigram_entropy`` beside
    it), ``word_validity`` with ``valid_words`` / ``num_words``, ``ngram_kl_<n>`` for each order
    (bits), and with a ``reference`` model ``reference_bpc`` / ``reference_bpc_stderr``.
    """
    samples = _texts(samples)
    wv = word_validity(samples, train.words)
    out: dict[str, Any] = {
        "num_samples": len(samples),
        "num_chars": sum(len(s) for s in samples),
        "unigram_entropy": unigram_entropy(samples),
        "train_unigram_entropy": train.unigram_entropy,
        "word_validity": wv.rate,
        "valid_words": wv.valid,
        "num_words": wv.words,
    }
    ngrams = train.ngrams if train.test_ngrams is None else train.test_ngrams
    out["ngram_reference"] = "train" if train.test_ngrams is None else "test"
    for n in orders:
        ref = ngrams.get(n)
        if ref is None:
            raise ConfigError(f"the train reference has no {n}-gram counts")
        out[f"ngram_kl_{n}"] = ngram_kl(samples, ref, n)
    if reference is not None:
        r = reference_bpc(samples, reference, batch_size)
        out["reference_bpc"], out["reference_bpc_stderr"] = r["bpc"], r["bpc_stderr"]
    return out


def draw_samples(
    lm: DiffusionLM,
    num: int,
    length: int,
    steps: int,
    sampler: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> tuple[list[str], int, float]:
    """``num`` decoded samples from ``lm`` through the shared sampler (seeded, in batches), with the
    total number of denoiser calls and the seconds taken."""
    if lm.tokenizer is None:
        raise ConfigError("the model carries no tokenizer to decode samples with")
    gen = torch.Generator(lm.device).manual_seed(seed)
    texts: list[str] = []
    nfe, start = 0, time.perf_counter()
    for lo in range(0, num, batch_size):
        out = lm.generate_output(min(batch_size, num - lo), length, steps, sampler, generator=gen)
        nfe += out.nfe
        texts += lm.tokenizer.decode(out.tokens.cpu())
    return texts, nfe, time.perf_counter() - start
