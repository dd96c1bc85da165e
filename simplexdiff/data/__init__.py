"""Data floor: tokenizers (char, byte, BPE), documents and conditional (prompt, response)
examples, synthetic corpora, and the Lightning data module over ``datasets``."""

from simplexdiff.data.conditional import dialogue_examples, render_messages
from simplexdiff.data.datamodule import (
    TextDataModule,
    load_split_documents,
    load_split_examples,
    load_split_texts,
    resolve_corpus,
)
from simplexdiff.data.stream import EvalBatches, TrainStream
from simplexdiff.data.synthetic import instruction_examples, reversal_facts
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
    "EvalBatches",
    "TextDataModule",
    "Tokenizer",
    "TrainStream",
    "dialogue_examples",
    "fit_tokenizer",
    "instruction_examples",
    "load_split_documents",
    "load_split_examples",
    "load_split_texts",
    "render_messages",
    "resolve_corpus",
    "reversal_facts",
    "tokenizer_from_config",
]
