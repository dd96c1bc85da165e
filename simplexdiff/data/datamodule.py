"""Text corpora as fixed-length chunks of character ids, through the ``datasets`` library.

``corpus`` is a bundled name (``text8``: the first 12M characters of text8; ``tinyshakespeare``), a
local text file (``.txt``, ``.xz``, ``.gz``, ...; read by ``datasets``' ``text`` builder and cached as
Arrow) or a hub dataset name / local dataset folder with a ``text`` column. One document is split by
character position into train / validation / test with fractions ``11/12, 1/24, 1/24`` (for text8-12M
exactly the standard split: ``[0, 11.0M)``, ``[11.0M, 11.5M)``, ``[11.5M, 12.0M)``); a dataset that
comes with train / validation / test splits keeps them. Each split is cut into non-overlapping
chunks of ``seq_len`` ids (the ragged tail is dropped).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from simplexdiff.data.stream import EvalBatches, TrainStream
from simplexdiff.data.tokenizer import CharTokenizer
from simplexdiff.errors import DataError

CORPORA_DIR = Path(__file__).parent / "corpora"
BUNDLED = {"text8": "text8-12M.txt.xz", "tinyshakespeare": "tinyshakespeare.txt"}
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (11 / 12, 1 / 24, 1 / 24)


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids ``0 .. vocab_size - 1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise DataError(f"vocabulary of {vocab_size} symbols is too large")


def resolve_corpus(corpus: str) -> tuple[str, str]:
    """``(kind, location)`` with kind ``"file"`` (a local text file) or ``"dataset"`` (hub/folder)."""
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


def load_split_texts(corpus: str, cache_dir: str | None = None) -> dict[str, str]:
    """The train / validation / test texts of ``corpus`` (see the module docstring)."""
    kind, location = resolve_corpus(corpus)
    try:
        if kind == "file":
            ds = datasets.load_dataset(
                "text", data_files={"corpus": location}, sample_by="document", cache_dir=cache_dir
            )
        else:
            ds = datasets.load_dataset(location, cache_dir=cache_dir)
    except Exception as e:  # corrupt archive, unreadable file, unknown hub name
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"could not read corpus {corpus!r}: {msg}") from None
    for split in ds.values():
        if "text" not in split.column_names:
            raise DataError(
                f"corpus {corpus!r} has no 'text' column (columns: {split.column_names})"
            )
    if all(s in ds for s in SPLITS):
        return {s: "\n".join(ds[s]["text"]) for s in SPLITS}
    text = "\n".join(t for split in ds.values() for t in split["text"])
    if not text.strip():
        raise DataError(f"corpus {corpus!r} is empty")
    n = len(text)
    cut1, cut2 = round(n * SPLIT_FRACTIONS[0]), round(n * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]))
    return {"train": text[:cut1], "validation": text[cut1:cut2], "test": text[cut2:]}


def make_tokenizer(name: str, train_text: str) -> CharTokenizer:
    if name == "text8":
        return CharTokenizer.text8()
    if name == "char":
        return CharTokenizer.from_text(train_text)
    raise DataError(f"unknown tokenizer {name!r}; known: text8, char")


class TextDataModule(L.LightningDataModule):
    """Character-level LM data: ``TextDataModule(corpus="text8", seq_len=256, batch_size=32)``.

    Batches are ``LongTensor [batch_size, seq_len]`` of clean ids. ``tokenizer`` is ``"text8"``,
    ``"char"`` (alphabet of the training split), ``None`` (text8 for the text8 corpus, else char),
    or a given ``CharTokenizer`` (or its ``config()`` dict), e.g. a checkpoint's, to read other data
    with a trained model's alphabet (a character outside it is a ``DataError``).
    Token ids are cached as ``.npy`` under ``cache_dir`` (default ``~/.cache/simplexdiff``), one
    file per split keyed by the corpus content hash and the tokenizer (any ``seq_len`` reads it), in
    the smallest integer type that holds the vocabulary.

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
        tokenizer: str | CharTokenizer | dict | None = None,
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
        if isinstance(tokenizer, dict):
            tokenizer = CharTokenizer(**tokenizer)
        given = tokenizer if isinstance(tokenizer, CharTokenizer) else None
        self.tokenizer_name = (
            "given" if given else tokenizer or ("text8" if corpus == "text8" else "char")
        )
        self.num_workers, self.seed = num_workers, seed
        self._cache_dir_arg = cache_dir
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "simplexdiff")
        self._tokenizer: CharTokenizer | None = given or (
            CharTokenizer.text8() if self.tokenizer_name == "text8" else None
        )
        self._chunks: dict[str, Tensor] = {}

    def config(self) -> dict:
        """What rebuilds this data (``TextDataModule(**config)``), as checkpoints store it: the
        corpus (a local file as an absolute path), ``seq_len``, the tokenizer (its name, or the
        alphabet of a given one) and ``cache_dir``; not the loader settings."""
        _, location = resolve_corpus(self.corpus)
        local = self.corpus not in BUNDLED and Path(location).exists()  # a file or folder here
        return {
            "corpus": str(Path(location).resolve()) if local else self.corpus,
            "seq_len": self.seq_len,
            "tokenizer": (
                self.tokenizer_or_fail().config()
                if self.tokenizer_name == "given"
                else self.tokenizer_name
            ),
            "cache_dir": self._cache_dir_arg,
        }

    def state_dict(self) -> dict:
        """What checkpoints keep of the data: the shuffling seed, so a resumed run reads the
        batches of the original one whatever seed it is given."""
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seed = int(state_dict.get("seed", self.seed))

    @property
    def tokenizer(self) -> CharTokenizer:
        if self._tokenizer is None:
            self.setup()
        assert self._tokenizer is not None
        return self._tokenizer

    def setup(self, stage: str | None = None) -> None:
        if self._chunks:
            return
        texts = load_split_texts(self.corpus, str(self.cache_dir / "datasets"))
        self._tokenizer = self._tokenizer or make_tokenizer(self.tokenizer_name, texts["train"])
        digest = hashlib.sha256(
            "\0".join([*texts.values(), self._tokenizer.alphabet]).encode()
        ).hexdigest()[:16]
        for split, text in texts.items():
            ids = self._cached_ids(text, f"{digest}-{split}")
            n = len(ids) // self.seq_len
            self._chunks[split] = torch.from_numpy(ids[: n * self.seq_len].reshape(n, self.seq_len))
        if len(self._chunks["train"]) == 0:
            raise DataError(
                f"corpus {self.corpus!r} has fewer training characters than seq_len={self.seq_len}"
            )

    def _cached_ids(self, text: str, key: str) -> np.ndarray:
        """The ids of ``text``, read from (or written once to) the cache."""
        file = self.cache_dir / "ids" / f"{key}.npy"
        if file.exists():
            return np.load(file)
        tokenizer = self.tokenizer_or_fail()
        ids = tokenizer.encode(text).astype(id_dtype(tokenizer.vocab_size))
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp.npy")
        np.save(tmp, ids)
        tmp.replace(file)  # atomic: a killed run never leaves a half-written cache
        return ids

    def tokenizer_or_fail(self) -> CharTokenizer:
        assert self._tokenizer is not None
        return self._tokenizer

    def split(self, name: str) -> Tensor:
        """All chunks of a split as ``LongTensor [N, seq_len]``."""
        return self.compact_split(name).long()

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
                self.compact_split("train"), self.batch_size, self.seed, start, rank, world
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
        batches = EvalBatches(chunks, self.batch_size, limit, rank, world)
        return DataLoader(batches, batch_size=None, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        trainer = self.trainer
        return self._eval_loader("validation", trainer.limit_val_batches if trainer else None)

    def test_dataloader(self) -> DataLoader:
        trainer = self.trainer
        return self._eval_loader("test", trainer.limit_test_batches if trainer else None)
