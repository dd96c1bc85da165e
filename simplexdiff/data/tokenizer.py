"""Tokenizers: characters, bytes and byte-level BPE behind one interface, named in recipes.

A recipe names a tokenizer and its options (``tokenizer: text8``, ``tokenizer: {name: bpe,
vocab_size: 2048}``); ``fit_tokenizer`` builds it from the training split through the ``TOKENIZERS``
registry. A built tokenizer is rebuilt from its ``config()`` alone (plain JSON: a checkpoint or a
run folder's ``tokenizer.json`` carries it, so a trained model reads new text without its corpus).

* ``text8``: the fixed 27-symbol alphabet ``" abcdefghijklmnopqrstuvwxyz"``;
* ``char``: the sorted characters of the training split;
* ``byte``: the 256 byte values of UTF-8;
* ``bpe``: byte-level BPE (Sennrich et al. 2016 over GPT-2's byte alphabet, Radford et al. 2019),
  trained with Hugging Face ``tokenizers``; ``vocab_size`` counts every id, specials included.

Where the corpus has several documents every tokenizer gets one special symbol, ``EOS`` (its id
after the ordinary ones for char / byte), that ends each document; special symbols are never
read from text (a literal ``"<|endoftext|>"`` in a document is ordinary text). Byte and BPE
tokenizers round-trip any text, ``decode(encode(text)) == text``; a char tokenizer refuses a
character outside its alphabet. ``token_bytes()`` gives the UTF-8 bytes of each id's text (0 for
specials), which turns a likelihood in nats per token into bits per byte.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simplexdiff.errors import ConfigError, DataError
from simplexdiff.registry import Registry

TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"
EOS = "<|endoftext|>"
MAX_VOCAB = 2**32  # ids are stored in at most 32-bit unsigned integers


class Tokenizer(ABC):
    """Text <-> int64 ids ``0 .. vocab_size - 1``; ``specials`` take the last ids of char and
    byte tokenizers."""

    kind: str  # the ``kind`` of ``config()``: which class rebuilds it

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def eos_id(self) -> int | None:
        """The id ending each document, or ``None`` for a tokenizer of one-document corpora."""

    @abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text`` (int64)."""

    @abstractmethod
    def _decode_ids(self, ids: list[int]) -> str: ...

    @abstractmethod
    def token_bytes(self) -> np.ndarray:
        """``[vocab_size]`` int64: UTF-8 bytes of each id's text, 0 for special symbols."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The constructor's arguments (plain JSON values)."""

    def config(self) -> dict[str, Any]:
        """Plain JSON that rebuilds this tokenizer: ``tokenizer_from_config(config())``."""
        return {"kind": self.kind, **self.state()}

    def digest(self) -> str:
        """A content hash of ``config()`` (keys the tokenized-corpus cache)."""
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:16]

    def count_bytes(self, ids: Tensor, where: Tensor | None = None) -> Tensor:
        """UTF-8 bytes of the text of each row of ``ids`` ``[..., L]`` (``token_bytes`` summed over
        the last axis; EOS counts 0), on the ids' device: bits per byte divide by it. ``where``
        (bool, like ``ids``): count those positions only (a response, not its prompt)."""
        counts = self._byte_table.to(ids.device)[ids]
        return (counts if where is None else torch.where(where, counts, 0)).sum(-1)

    @cached_property
    def _byte_table(self) -> Tensor:
        return torch.from_numpy(self.token_bytes())

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def encode_documents(self, pieces: list[tuple[str, bool]]) -> np.ndarray:
        """One id stream of ``(text, ends_document)`` pieces: each text's ids, then ``EOS``
        where the piece ends its document (a split may cut a document in two)."""
        if self.eos_id is None and sum(end for _, end in pieces) > 1:
            raise DataError(
                "the tokenizer has no end-of-document symbol for a multi-document corpus"
            )
        eos = [np.array([self.eos_id], dtype=np.int64)] if self.eos_id is not None else []
        parts = []
        for (_, end), ids in zip(pieces, self.encode_many([t for t, _ in pieces]), strict=True):
            parts += [ids, *eos] if end else [ids]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def decode(self, ids: Tensor | np.ndarray | list, until_eos: bool = False) -> str | list[str]:
        """Text of a 1-D id sequence, or a list of texts for a 2-D batch; special symbols are
        written out (``"<|endoftext|>"``), invalid UTF-8 as U+FFFD. ``until_eos``: each text
        ends before its first EOS (a generated response and the EOS padding after it)."""
        arr = np.asarray(ids.cpu() if isinstance(ids, Tensor) else ids)
        if arr.ndim == 2:
            return [self.decode(row, until_eos) for row in arr]
        if until_eos and self.eos_id is not None and (arr == self.eos_id).any():
            arr = arr[: int(np.argmax(arr == self.eos_id))]
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = int(arr[(arr < 0) | (arr >= self.vocab_size)][0])
            raise DataError(f"token id {bad} is out of range for vocab size {self.vocab_size}")
        return self._decode_ids(arr.astype(np.int64).tolist())

    def encode_tensor(self, text: str) -> Tensor:
        return torch.from_numpy(self.encode(text))


def _check_specials(specials: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    specials = tuple(specials)
    if any(s != EOS for s in specials) or len(specials) > 1:
        raise DataError(f"the only special symbol is {EOS!r}, got {list(specials)}")
    return specials


class CharTokenizer(Tokenizer):
    """Each character of ``alphabet`` to its index; ``specials`` (``[EOS]`` or none) after."""

    kind = "char"

    def __init__(self, alphabet: str, specials: list[str] | tuple[str, ...] = ()) -> None:
        if len(set(alphabet)) != len(alphabet) or len(alphabet) < 2:
            raise DataError("a tokenizer alphabet needs at least 2 distinct characters, no repeats")
        self.alphabet, self.specials = alphabet, _check_specials(specials)
        codes = np.frombuffer(alphabet.encode("utf-32-le"), dtype=np.uint32)
        self._table = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        self._table[codes] = np.arange(len(alphabet))
        self._symbols = list(alphabet) + list(self.specials)

    @classmethod
    def text8(cls) -> CharTokenizer:
        return cls(TEXT8_ALPHABET)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self._symbols)

    @property
    def eos_id(self) -> int | None:
        return len(self.alphabet) if self.specials else None

    def state(self) -> dict[str, Any]:
        return {"alphabet": self.alphabet, "specials": list(self.specials)}

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text`` (int64); a character outside the alphabet is a ``DataError``."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        inside = codes < len(self._table)
        ids = np.where(inside, self._table[np.where(inside, codes, 0)], -1)
        bad = np.flatnonzero(ids < 0)
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"character {text[i]!r} at position {i} is not in the tokenizer's "
                f"{len(self.alphabet)}-symbol alphabet"
            )
        return ids

    def _decode_ids(self, ids: list[int]) -> str:
        return "".join(self._symbols[i] for i in ids)

    def token_bytes(self) -> np.ndarray:
        sizes = [len(c.encode("utf-8")) for c in self.alphabet] + [0] * len(self.specials)
        return np.array(sizes, dtype=np.int64)


class ByteTokenizer(Tokenizer):
    """The 256 byte values of UTF-8 (id = byte), ``specials`` from id 256."""

    kind = "byte"

    def __init__(self, specials: list[str] | tuple[str, ...] = ()) -> None:
        self.specials = _check_specials(specials)

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.specials)

    @property
    def eos_id(self) -> int | None:
        return 256 if self.specials else None

    def state(self) -> dict[str, Any]:
        return {"specials": list(self.specials)}

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def _decode_ids(self, ids: list[int]) -> str:
        out, run = [], bytearray()
        for i in ids:
            if i < 256:
                run.append(i)
            else:
                out += [run.decode("utf-8", errors="replace"), self.specials[i - 256]]
                run = bytearray()
        return "".join([*out, run.decode("utf-8", errors="replace")])

    def token_bytes(self) -> np.ndarray:
        return np.array([1] * 256 + [0] * len(self.specials), dtype=np.int64)


class BPETokenizer(Tokenizer):
    """Byte-level BPE: a Hugging Face ``tokenizers.Tokenizer`` given as its JSON string."""

    kind = "bpe"

    def __init__(self, json: str) -> None:  # noqa: A002 - the field's name in config()
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self._hf = HFTokenizer.from_str(json)
        except Exception as e:
            raise DataError(
                f"not a Hugging Face tokenizer JSON: {str(e).splitlines()[0]}"
            ) from None
        self._hf.encode_special_tokens = True  # "<|endoftext|>" in a document is plain text
        self._json = json
        self._eos = self._hf.token_to_id(EOS)

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int | None:
        return self._eos

    def state(self) -> dict[str, Any]:
        return {"json": self._json}

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._hf.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        batch = self._hf.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in batch]

    def _decode_ids(self, ids: list[int]) -> str:
        return self._hf.decode(ids, skip_special_tokens=False)

    def token_bytes(self) -> np.ndarray:
        # GPT-2's byte-level alphabet writes each byte as one character
        specials = {t.content for t in self._hf.get_added_tokens_decoder().values() if t.special}
        sizes = np.zeros(self.vocab_size, dtype=np.int64)
        for token, i in self._hf.get_vocab(with_added_tokens=True).items():
            sizes[i] = 0 if token in specials else len(token)
        return sizes


KINDS: dict[str, type[Tokenizer]] = {
    "char": CharTokenizer,
    "byte": ByteTokenizer,
    "bpe": BPETokenizer,
}


def tokenizer_from_config(config: dict[str, Any]) -> Tokenizer:
    """The tokenizer of a ``Tokenizer.config()`` (a config without ``kind`` is a char one)."""
    config = dict(config)
    kind = config.pop("kind", "char")
    if kind not in KINDS:
        raise DataError(f"unknown tokenizer kind {kind!r}; known: {', '.join(KINDS)}")
    try:
        return KINDS[kind](**config)
    except TypeError as e:
        raise DataError(f"bad {kind} tokenizer config: {e}") from None


# --- what recipes name: fitted on the training split ----------------------------------------
TOKENIZERS: Registry[Tokenizer] = Registry("tokenizer")


def _specials(documents: bool) -> tuple[str, ...]:
    return (EOS,) if documents else ()


@TOKENIZERS.register("text8")
def text8(texts: list[str], documents: bool) -> Tokenizer:
    """The 27 symbols of text8."""
    return CharTokenizer(TEXT8_ALPHABET, _specials(documents))


@TOKENIZERS.register("char")
def char(texts: list[str], documents: bool) -> Tokenizer:
    """The sorted characters of the training split."""
    return CharTokenizer("".join(sorted(set().union(*map(set, texts)))), _specials(documents))


@TOKENIZERS.register("byte")
def byte(texts: list[str], documents: bool) -> Tokenizer:
    """The 256 values of a UTF-8 byte."""
    return ByteTokenizer(_specials(documents))


@TOKENIZERS.register("bpe")
def bpe(
    texts: list[str], documents: bool, vocab_size: int = 2048, min_frequency: int = 2
) -> Tokenizer:
    """Byte-level BPE with ``vocab_size`` ids (specials included), merges of pairs seen at least
    ``min_frequency`` times in the training split (fewer ids if it runs out of such pairs)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    least = 256 + len(_specials(documents)) + 1
    if not isinstance(vocab_size, int) or not least <= vocab_size < MAX_VOCAB:
        raise ConfigError(
            f"bpe vocab_size must be an integer in [{least}, 2**32), got {vocab_size!r}"
        )
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise ConfigError(f"bpe min_frequency must be a positive integer, got {min_frequency!r}")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(_specials(documents)),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer)
    return BPETokenizer(hf.to_str())


def tokenizers_version() -> str:
    """The Hugging Face ``tokenizers`` version (a fitted BPE may differ between versions)."""
    import tokenizers

    return tokenizers.__version__


def fit_tokenizer(spec: str | dict[str, Any], texts: list[str], documents: bool) -> Tokenizer:
    """The tokenizer a recipe names (``"bpe"`` or ``{"name": "bpe", "vocab_size": 4096}``),
    built from the training split's ``texts``; with an ``EOS`` symbol if ``documents``."""
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    if not isinstance(options.get("name"), str):
        raise ConfigError(f"a tokenizer is a name or {{name: ..., options}}, got {spec!r}")
    return TOKENIZERS.build(options.pop("name"), texts=texts, documents=documents, **options)
