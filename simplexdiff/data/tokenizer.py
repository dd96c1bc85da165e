"""Character tokenizers. text8 uses the fixed 27-symbol alphabet ``" abcdefghijklmnopqrstuvwxyz"``;
other corpora use the sorted set of characters of their training split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from simplexdiff.errors import DataError

TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"


class CharTokenizer:
    """Maps each character of ``alphabet`` to its index."""

    def __init__(self, alphabet: str) -> None:
        if len(set(alphabet)) != len(alphabet) or len(alphabet) < 2:
            raise DataError("a tokenizer alphabet needs at least 2 distinct characters, no repeats")
        self.alphabet = alphabet
        codes = np.frombuffer(alphabet.encode("utf-32-le"), dtype=np.uint32)
        self._table = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        self._table[codes] = np.arange(len(alphabet))

    @classmethod
    def text8(cls) -> CharTokenizer:
        return cls(TEXT8_ALPHABET)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def config(self) -> dict[str, Any]:
        return {"alphabet": self.alphabet}

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
                f"{self.vocab_size}-symbol alphabet"
            )
        return ids

    def decode(self, ids: Tensor | np.ndarray | list) -> str | list[str]:
        """Text of a 1-D id sequence, or a list of texts for a 2-D batch."""
        arr = np.asarray(ids.cpu() if isinstance(ids, Tensor) else ids)
        if arr.ndim == 2:
            return [self.decode(row) for row in arr]
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = int(arr[(arr < 0) | (arr >= self.vocab_size)][0])
            raise DataError(f"token id {bad} is out of range for vocab size {self.vocab_size}")
        return "".join(self.alphabet[i] for i in arr.tolist())

    def encode_tensor(self, text: str) -> Tensor:
        return torch.from_numpy(self.encode(text))
