"""Text corpora as documents packed into fixed-length chunks of token ids, or as conditional
(prompt, response) examples one per row, through ``datasets``.

``corpus`` is a bundled name (``text8``: the first 12M characters of text8; ``tinyshakespeare``;
``instruct``: synthetic instructions, ``simplexdiff.data.synthetic``), a local file (a text file,
also ``.xz`` / ``.gz``, is one document; ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` have a
row per document in a ``text`` column, or a conditional example per row in ``prompt`` and
``response`` or ``messages`` columns, ``simplexdiff.data.conditional``), a folder (of text files,
one document each, or of data files) or a hub dataset name; ``datasets`` reads and caches them as
Arrow. A corpus without its own train / validation / test splits is cut at fractions ``11/12,
1/24, 1/24``: documents by character position (for text8-12M exactly the standard split: ``[0,
11.0M)``, ``[11.0M, 11.5M)``, ``[11.5M, 12.0M)``), examples in order by count.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import datasets
import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from simplexdiff.data.conditional import (
    COLUMNS,
    Example,
    encode_examples,
    pack_examples,
    row_format,
    rows_examples,
)
from simplexdiff.data.stream import EvalBatches, TrainStream
from simplexdiff.data.synthetic import instruct_splits
from simplexdiff.data.tokenizer import (
    TOKENIZERS,
    Tokenizer,
    fit_tokenizer,
    tokenizer_from_config,
    tokenizers_version,
)
from simplexdiff.errors import DataError

CORPORA_DIR = Path(__file__).parent / "corpora"
BUNDLED = {"text8": "text8-12M.txt.xz", "tinyshakespeare": "tinyshakespeare.txt"}
GENERATED: dict[str, Callable[[], datasets.DatasetDict]] = {
    "instruct": lambda: datasets.DatasetDict(
        {s: datasets.Dataset.from_list(rows) for s, rows in instruct_splits(seed=0).items()}
    ),
}
"""Bundled corpora generated in memory, deterministically (no file)."""
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (11 / 12, 1 / 24, 1 / 24)


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids ``0 .. vocab_size - 1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise DataError(f"vocabulary of {vocab_size} symbols is too large")


TEXT_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def resolve_corpus(corpus: str) -> tuple[str, str]:
    """``(kind, location)`` with kind ``"file"`` (a local file), ``"dataset"`` (hub/folder) or
    ``"generated"`` (a ``GENERATED`` name, its location)."""
    if corpus in GENERATED:
        return "generated", corpus
    if corpus in BUNDLED:
        return "file", str(CORPORA_DIR / BUNDLED[corpus])
    p = Path(corpus).expanduser()
    if p.is_file():
        return "file", str(p)
    if p.is_dir():
        return "dataset", str(p)
    if "/" in corpus and not corpus.startswith((".", "/", "~")) and not p.suffix:
        return "dataset", corpus  # a hub name such as "owner/name"
    raise DataError(f"data file not found: {corpus!r} (not a bundled corpus, a file or a folder)")


def _builder(file: Path) -> str:
    """``datasets``' builder for a file: json(l) / parquet / csv rows, else one text document
    (compressed ``.xz`` / ``.gz`` files by their inner suffix)."""
    suffixes = [s for s in file.suffixes if s not in (".xz", ".gz", ".bz2", ".zst")]
    return TEXT_SUFFIXES.get(suffixes[-1] if suffixes else "", "text")


def _load_dataset(corpus: str, cache_dir: str | None) -> datasets.DatasetDict:
    kind, location = resolve_corpus(corpus)
    if kind == "generated":
        return GENERATED[location]()
    if kind == "file":
        builder = _builder(Path(location))
        extra = {"sample_by": "document"} if builder == "text" else {}
        return datasets.load_dataset(
            builder, data_files={"corpus": location}, cache_dir=cache_dir, **extra
        )
    folder = Path(location)
    files = [f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")]
    if folder.is_dir() and files and all(_builder(f) == "text" for f in files):
        # a folder of text files: one document per file, split by file name (train.txt, ...)
        return datasets.load_dataset(
            "text", data_dir=location, sample_by="document", cache_dir=cache_dir
        )
    return datasets.load_dataset(location, cache_dir=cache_dir)


Pieces = list[tuple[str, bool]]
"""A split's text: ``(text, ends_document)`` pieces (the split cuts at most two documents)."""


def read_corpus(corpus: str, cache_dir: str | None = None) -> tuple[datasets.DatasetDict, str]:
    """The rows of ``corpus`` and what they hold (``conditional.row_format``): ``"text"``
    (documents), ``"prompt"`` (prompt and response columns) or ``"messages"`` (dialogues)."""
    try:
        ds = _load_dataset(corpus, cache_dir)
    except DataError:
        raise
    except Exception as e:  # corrupt archive, invalid UTF-8, unreadable file, unknown hub name
        while e.__cause__ is not None or e.__context__ is not None:  # datasets wraps the cause
            e = e.__cause__ or e.__context__  # type: ignore[assignment]
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"could not read corpus {corpus!r}: {msg}") from None
    for split in ds.values():
        if row_format(split.column_names) is None:
            raise DataError(
                f"corpus {corpus!r} has no 'text' column (documents), nor 'prompt' and 'response' "
                f"or 'messages' columns (conditional examples); columns: {split.column_names}"
            )
    formats = {row_format(split.column_names) for split in ds.values()}
    if len(formats) != 1:
        raise DataError(f"the splits of corpus {corpus!r} hold different rows: {sorted(formats)}")
    return ds, formats.pop()


def load_split_documents(
    corpus: str, cache_dir: str | None = None
) -> tuple[dict[str, Pieces], int]:
    """The train / validation / test documents of ``corpus`` and how many documents it has.

    Documents are the rows of its ``text`` column (a text file is one document, a folder of text
    files one per file, a ``.jsonl`` / ``.parquet`` file one per row); empty ones are dropped. A
    dataset with train / validation / test splits keeps them; otherwise the documents, in order,
    are cut by character position at the fractions ``11/12, 1/24, 1/24`` (for a single document,
    text8-12M, exactly the standard split)."""
    ds, fmt = read_corpus(corpus, cache_dir)
    if fmt != "text":
        raise DataError(f"corpus {corpus!r} holds conditional examples ({fmt!r}), not documents")
    return _split_documents(ds, corpus)


def _split_documents(ds: datasets.DatasetDict, corpus: str) -> tuple[dict[str, Pieces], int]:
    def documents(split: datasets.Dataset) -> list[str]:
        return [t for t in split["text"] if isinstance(t, str) and t]

    if all(s in ds for s in SPLITS):
        pieces = {s: [(t, True) for t in documents(ds[s])] for s in SPLITS}
    else:
        pieces = _cut([t for split in ds.values() for t in documents(split)])
    count = sum(end for split in pieces.values() for _, end in split)
    if count == 0:
        raise DataError(f"corpus {corpus!r} is empty (no document with text)")
    return pieces, count


def _cut_points(n: int) -> list[int]:
    """Where ``SPLIT_FRACTIONS`` cut ``n`` items: ``round(n f1)``, ``round(n (f1 + f2))``."""
    f1, f2, _ = SPLIT_FRACTIONS
    return [round(n * f1), round(n * (f1 + f2))]


def _cut(docs: list[str]) -> dict[str, Pieces]:
    """Documents in order cut at their characters' ``_cut_points``."""
    n = sum(map(len, docs))
    cuts = [*_cut_points(n), n + 1]
    out: dict[str, Pieces] = {s: [] for s in SPLITS}
    k, start = 0, 0  # current split; position of the current document
    for doc in docs:
        at = 0  # how much of doc is placed
        while at < len(doc):
            end = min(len(doc), cuts[k] - start)
            if end > at:
                out[SPLITS[k]].append((doc[at:end], end == len(doc)))
                at = end
            if at < len(doc):
                k += 1
        start += len(doc)
    return out


def load_split_examples(corpus: str, cache_dir: str | None = None) -> dict[str, list[Example]]:
    """The train / validation / test ``(prompt, response)`` examples of a conditional corpus
    (``simplexdiff.data.conditional``). A dataset with train / validation / test splits keeps
    them; otherwise the examples, in order, are cut by count at the fractions ``11/12, 1/24,
    1/24``."""
    ds, fmt = read_corpus(corpus, cache_dir)
    if fmt == "text":
        raise DataError(f"corpus {corpus!r} holds documents ('text' column), not examples")
    return _split_examples(ds, fmt, corpus)


def _split_examples(ds: datasets.DatasetDict, fmt: str, corpus: str) -> dict[str, list[Example]]:
    def split_examples(split: datasets.Dataset) -> list[Example]:
        return rows_examples(fmt, split.select_columns(COLUMNS[fmt]).to_dict())

    if all(s in ds for s in SPLITS):
        examples = {s: split_examples(ds[s]) for s in SPLITS}
    else:
        pooled = [ex for split in ds.values() for ex in split_examples(split)]
        a, b = _cut_points(len(pooled))
        examples = dict(zip(SPLITS, (pooled[:a], pooled[a:b], pooled[b:]), strict=True))
    if not any(examples.values()):
        raise DataError(f"corpus {corpus!r} is empty (no prompt / response example)")
    return examples


def load_split_texts(corpus: str, cache_dir: str | None = None) -> dict[str, str]:
    """Each split's text, its documents joined by newlines."""
    pieces, _ = load_split_documents(corpus, cache_dir)
    return {s: "\n".join(t for t, _ in p) for s, p in pieces.items()}


def _load_npz(file: Path) -> dict[str, np.ndarray]:
    with np.load(file) as arrays:
        return dict(arrays)


class TextDataModule(L.LightningDataModule):
    """Language-model data: ``TextDataModule(corpus="text8", seq_len=256, batch_size=32)``.

    Batches are ``LongTensor [batch_size, seq_len]`` of clean ids: each split's documents, each
    followed by the tokenizer's ``EOS`` where the corpus has several, packed into one id stream
    and cut into chunks of ``seq_len`` (the ragged tail is dropped). ``tokenizer`` is what a
    recipe names (``"text8"``, ``"char"``, ``"byte"``, ``"bpe"`` or ``{"name": "bpe",
    "vocab_size": 4096}``; ``None``: text8 for the text8 corpus, else char), fitted on the
    training split, or a built ``Tokenizer`` (or its ``config()`` dict), e.g. a checkpoint's, to
    read other data as a trained model does (a character outside a char tokenizer's alphabet is
    a ``DataError``). Under ``cache_dir`` (default ``~/.cache/simplexdiff``): a fitted BPE, and
    each split's ids as ``.npy`` keyed by the corpus content and the tokenizer (any ``seq_len``
    reads them) in the smallest integer type that holds the vocabulary.

    A *conditional* corpus (``prompt`` and ``response`` or ``messages`` columns, see
    ``simplexdiff.data.conditional``; ``conditional`` is true) has one row per example:
    ``encode(prompt) + encode(response)`` padded with ``EOS`` to ``seq_len`` (at least one; an
    example that does not fit is dropped with a warning), and its batches are dicts ``{"ids":
    LongTensor [batch_size, seq_len], "prompt_len": LongTensor [batch_size]}``. ``split``,
    ``prompt_lengths`` and ``examples`` give a split's rows, prompt lengths and ``(prompt,
    response)`` strings, row by row. Its tokenizer always has an ``EOS``.

    Training batches are ``TrainStream``: an endless stream of passes reshuffled from ``seed``,
    sharded over the Trainer's processes and resumed at the Trainer's restored step, so a run
    resumed from a checkpoint reads exactly the batches the uninterrupted run read. Training
    stops at ``max_steps`` (or ``max_time``), never at an epoch end: validate every N steps with
    ``Trainer(val_check_interval=N, check_val_every_n_epoch=None)``. Validation and test batches
    are ``EvalBatches``: each batch once, in order, sharded over processes without padding.
    """

    def __init__(
        self,
        corpus: str = "text8",
        seq_len: int = 256,
        batch_size: int = 32,
        tokenizer: str | dict | Tokenizer | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if seq_len < 1 or batch_size < 1:
            raise DataError(f"seq_len and batch_size must be positive, got {seq_len}, {batch_size}")
        if num_workers < 0:
            raise DataError(f"num_workers must not be negative, got {num_workers}")
        resolve_corpus(corpus)  # fail early on a missing file
        self.corpus, self.seq_len, self.batch_size = corpus, seq_len, batch_size
        if isinstance(tokenizer, dict) and ("kind" in tokenizer or "name" not in tokenizer):
            tokenizer = tokenizer_from_config(tokenizer)
        self._tokenizer: Tokenizer | None = tokenizer if isinstance(tokenizer, Tokenizer) else None
        # what to fit on the training split (None for a given tokenizer)
        self.tokenizer_spec: str | dict | None = None
        if self._tokenizer is None:
            self.tokenizer_spec = tokenizer or ("text8" if corpus == "text8" else "char")
            name = self.tokenizer_spec
            TOKENIZERS.get(name if isinstance(name, str) else name.get("name"))  # fail early
        self.num_workers, self.seed = num_workers, seed
        self._cache_dir_arg = cache_dir
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "simplexdiff")
        self._chunks: dict[str, Tensor] = {}
        # a conditional corpus: each row's prompt length and (prompt, response)
        self._prompt_len: dict[str, Tensor] = {}
        self._examples: dict[str, list[Example]] = {}

    def config(self) -> dict:
        """What rebuilds this data (``TextDataModule(**config)``), as checkpoints store it: the
        corpus (a local file as an absolute path), ``seq_len``, the tokenizer (what the recipe
        named, or the ``config()`` of a given one) and ``cache_dir``; not the loader settings."""
        _, location = resolve_corpus(self.corpus)
        named = self.corpus in BUNDLED or self.corpus in GENERATED
        local = not named and Path(location).exists()  # a file or folder here
        return {
            "corpus": str(Path(location).resolve()) if local else self.corpus,
            "seq_len": self.seq_len,
            "tokenizer": self.tokenizer_spec or self.tokenizer.config(),
            "cache_dir": self._cache_dir_arg,
        }

    def state_dict(self) -> dict:
        """What checkpoints keep of the data: the shuffling seed, so a resumed run reads the
        batches of the original one whatever seed it is given."""
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seed = int(state_dict.get("seed", self.seed))

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self.setup()
        assert self._tokenizer is not None
        return self._tokenizer

    @property
    def conditional(self) -> bool:
        """Whether the corpus holds (prompt, response) examples rather than documents."""
        self.setup()
        return bool(self._examples)

    def setup(self, stage: str | None = None) -> None:
        if self._chunks:
            return
        ds, fmt = read_corpus(self.corpus, str(self.cache_dir / "datasets"))
        if fmt != "text":
            self._setup_examples(_split_examples(ds, fmt, self.corpus))
            return
        pieces, count = _split_documents(ds, self.corpus)
        corpus_digest = hashlib.sha256()
        for split in SPLITS:
            for text, end in pieces[split]:
                corpus_digest.update(f"{split}\0{int(end)}\0{len(text)}\0{text}".encode())
        if self._tokenizer is None:
            texts = [t for t, _ in pieces["train"]]
            self._tokenizer = self._fit_tokenizer(texts, count > 1, corpus_digest)
        tokenizer = self._tokenizer
        digest = self._ids_digest(corpus_digest)
        dtype = id_dtype(tokenizer.vocab_size)
        for split in SPLITS:
            ids = self._cached(
                f"ids/{digest}-{split}.npy",
                lambda s=split: tokenizer.encode_documents(pieces[s]).astype(dtype),
            )
            n = len(ids) // self.seq_len
            self._chunks[split] = torch.from_numpy(ids[: n * self.seq_len].reshape(n, self.seq_len))
        if len(self._chunks["train"]) == 0:
            raise DataError(
                f"corpus {self.corpus!r} has fewer training tokens than seq_len={self.seq_len}"
            )

    def _ids_digest(self, corpus_digest) -> str:
        """Keys the cached ids of a corpus (its ``corpus_digest``) under the tokenizer."""
        assert self._tokenizer is not None
        text = corpus_digest.hexdigest() + self._tokenizer.digest()
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _setup_examples(self, examples: dict[str, list[Example]]) -> None:
        """One row per example that fits ``seq_len`` (``conditional.pack_examples``); the
        prompt and response ids of every example are cached, so any ``seq_len`` reads them."""
        corpus_digest = hashlib.sha256(b"examples")
        for split in SPLITS:
            for prompt, response in examples[split]:
                text = f"{split}\0{len(prompt)}\0{prompt}\0{len(response)}\0{response}"
                corpus_digest.update(text.encode())
        if self._tokenizer is None:
            texts = [t for example in examples["train"] for t in example]
            self._tokenizer = self._fit_tokenizer(texts, True, corpus_digest)
        tokenizer = self._tokenizer
        if tokenizer.eos_id is None:
            raise DataError(
                f"the tokenizer has no end-of-sequence symbol (EOS), which pads the responses "
                f"of the conditional corpus {self.corpus!r}"
            )
        digest = self._ids_digest(corpus_digest)
        dtype = id_dtype(tokenizer.vocab_size)
        rows, prompt_len, kept, dropped, needed = {}, {}, {}, {}, []
        for split in SPLITS:
            encoded = self._cached(
                f"ids/{digest}-{split}.npz",
                lambda s=split: encode_examples(tokenizer, examples[s], dtype),
                save=lambda f, value: np.savez(f, **value),
                load=_load_npz,
            )
            rows[split], prompt_len[split], fits = pack_examples(
                encoded["ids"], encoded["lengths"], self.seq_len, tokenizer.eos_id
            )
            kept[split] = [ex for ex, ok in zip(examples[split], fits, strict=True) if ok]
            dropped[split] = int((~fits).sum())
            needed.append(encoded["lengths"].sum(1) + 1)
        if len(needed[0]) == 0:
            raise DataError(f"corpus {self.corpus!r} has no training example")
        if len(rows["train"]) == 0:
            raise DataError(
                f"no training example of corpus {self.corpus!r} fits seq_len={self.seq_len}: they "
                f"need {needed[0].min()} to {needed[0].max()} tokens (prompt + response + EOS)"
            )
        if any(dropped.values()):
            longest = max(int(n.max()) for n in needed if len(n))
            counts = ", ".join(f"{n} {s}" for s, n in dropped.items())
            rank_zero_warn(
                f"{self.corpus}: dropped the examples that do not fit seq_len={self.seq_len} "
                f"(prompt + response + EOS; the longest needs {longest} tokens): {counts}"
            )
        self._chunks = {s: torch.from_numpy(r) for s, r in rows.items()}
        self._prompt_len = {s: torch.from_numpy(n) for s, n in prompt_len.items()}
        self._examples = kept

    def _fit_tokenizer(self, texts: list[str], documents: bool, corpus_digest) -> Tokenizer:
        """The recipe's tokenizer fitted on the training split's ``texts`` (a BPE once, then from
        the cache: every process of a run reads the same one)."""
        spec = self.tokenizer_spec
        if (spec if isinstance(spec, str) else spec.get("name")) != "bpe":
            return fit_tokenizer(spec, texts, documents)
        key = json.dumps([spec, documents, tokenizers_version()], sort_keys=True)
        digest = hashlib.sha256((corpus_digest.hexdigest() + key).encode()).hexdigest()[:16]
        config = self._cached(
            f"tokenizers/{digest}.json",
            lambda: fit_tokenizer(spec, texts, documents).config(),
            save=lambda f, c: f.write_text(json.dumps(c)),
            load=lambda f: json.loads(f.read_text()),
        )
        return tokenizer_from_config(config)

    def _cached(self, name: str, make, save=None, load=None):
        """``make()``, written once under ``cache_dir / name`` and read from there afterwards
        (atomically: a killed run never leaves a half-written file)."""
        save = save or (lambda f, value: np.save(f, value))
        load = load or np.load
        file = self.cache_dir / name
        if file.exists():
            return load(file)
        value = make()
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp{file.suffix}")
        save(tmp, value)
        tmp.replace(file)
        return value

    def split(self, name: str) -> Tensor:
        """All chunks (a conditional corpus: rows) of a split as ``LongTensor [N, seq_len]``."""
        return self.compact_split(name).long()

    def prompt_lengths(self, name: str) -> Tensor:
        """How many prompt ids each row of a conditional corpus's split starts with,
        ``LongTensor [N]`` (a ``DataError`` for a corpus of documents)."""
        self.compact_split(name)  # checks the name
        self._check_conditional("prompt lengths")
        return self._prompt_len[name]

    def examples(self, name: str) -> list[Example]:
        """The ``(prompt, response)`` strings of each row of a conditional corpus's split."""
        self.compact_split(name)  # checks the name
        self._check_conditional("examples")
        return self._examples[name]

    def _check_conditional(self, what: str) -> None:
        if not self.conditional:
            raise DataError(f"corpus {self.corpus!r} holds documents, not {what}")

    def compact_split(self, name: str) -> Tensor:
        """All chunks of a split ``[N, seq_len]`` in the cache's compact integer type."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")
        self.setup()
        return self._chunks[name]

    def train_dataloader(self) -> DataLoader:
        """``TrainStream`` from the attached Trainer's step and process (else from step 0, one
        process): ``global_step x accumulate_grad_batches`` micro-batches are already trained."""
        trainer = self.trainer
        start, rank, world = 0, 0, 1
        if trainer is not None:
            start = trainer.global_step * trainer.accumulate_grad_batches
            rank, world = trainer.global_rank, trainer.world_size
        try:
            stream = TrainStream(
                self.compact_split("train"),
                self.batch_size,
                self.seed,
                start,
                rank,
                world,
                prompt_len=self._prompt_len.get("train"),
            )
        except ValueError as e:
            raise DataError(f"training split of {self.corpus!r}: {e}") from None
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers)

    def _eval_loader(self, split: str, limit: int | float | None) -> DataLoader:
        """The split's batches in order as ``EvalBatches`` (``(k, batch)`` pairs), sharded over
        the attached Trainer's processes. A count ``limit`` (the Trainer's ``limit_*_batches``)
        caps the *global* number of batches, so 1 and ``W`` processes score the same sequences
        (Lightning applies a fraction to each process's share)."""
        chunks = self.compact_split(split)
        limit = limit if isinstance(limit, int) else None
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        prompt_len = self._prompt_len.get(split)
        batches = EvalBatches(chunks, self.batch_size, limit, rank, world, prompt_len)
        return DataLoader(batches, batch_size=None, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        trainer = self.trainer
        return self._eval_loader("validation", trainer.limit_val_batches if trainer else None)

    def test_dataloader(self) -> DataLoader:
        trainer = self.trainer
        return self._eval_loader("test", trainer.limit_test_batches if trainer else None)
