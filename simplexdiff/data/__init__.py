"""Data floor: tokenizers (char, byte, BPE) and the Lightning data module over ``datasets``."""

from simplexdiff.data.datamodule import (
    TextDataModule,
    load_split_documents,
    load_split_texts,
    resolve_corpus,
)
from simplexdiff.data.stream import TrainStream
from simplexdiff.data.tokenizer import (
    EOS,
    TEXT8_ALPHABET,
    TOKENIZERS,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    fit_tokenizer,
    tokenizer_from_config,
)

__all__ = [
    "EOS",
    "TEXT8_ALPHABET",
    "TOKENIZERS",
    "BPETokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "TextDataModule",
    "Tokenizer",
    "TrainStream",
    "fit_tokenizer",
    "load_split_documents",
    "load_split_texts",
    "resolve_corpus",
    "tokenizer_from_config",
]
