"""Data floor: character tokenizers and the Lightning data module over ``datasets``."""

from simplexdiff.data.datamodule import TextDataModule, load_split_texts, resolve_corpus
from simplexdiff.data.stream import TrainStream
from simplexdiff.data.tokenizer import TEXT8_ALPHABET, CharTokenizer

__all__ = [
    "TEXT8_ALPHABET",
    "CharTokenizer",
    "TextDataModule",
    "TrainStream",
    "load_split_texts",
    "resolve_corpus",
]
