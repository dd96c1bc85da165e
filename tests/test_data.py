import lzma
from pathlib import Path

import numpy as np
import pytest
import torch

import simplexdiff as sd
from simplexdiff.data import CharTokenizer, TextDataModule
from simplexdiff.errors import ConfigError, DataError


def test_text8_tokenizer_roundtrip_and_errors():
    tok = CharTokenizer.text8()
    assert tok.vocab_size == 27
    ids = tok.encode("hello world")
    assert ids.dtype == np.int64 and tok.decode(ids) == "hello world"
    assert tok.decode(torch.tensor([[8, 9], [0, 26]])) == ["hi", " z"]
    with pytest.raises(DataError, match="character 'H' at position 0"):
        tok.encode("Hello")
    with pytest.raises(DataError, match="token id 27 is out of range"):
        tok.decode([1, 27])


def test_bundled_text8_standard_split(cache_dir):
    dm = TextDataModule("text8", seq_len=1000, batch_size=2, cache_dir=cache_dir)
    assert [len(dm.split(s)) for s in ("train", "validation", "test")] == [11000, 500, 500]
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 1000) and batch.dtype == torch.long
    first = dm.tokenizer.decode(dm.split("train")[0])
    assert first.startswith(" anarchism originated as a term of abuse")
    # cached: a second module reads the same ids from disk, in the smallest type that holds 27
    # symbols, one file per split for every seq_len
    files = sorted((Path(cache_dir) / "ids").glob("*.npy"))
    assert len(files) == 3 and all(np.load(f, mmap_mode="r").dtype == np.uint8 for f in files)
    assert sum(f.stat().st_size for f in files) < 12_100_000  # 12M chars, one byte each
    again = TextDataModule("text8", seq_len=1000, batch_size=2, cache_dir=cache_dir)
    assert torch.equal(again.split("test"), dm.split("test"))
    shorter = TextDataModule("text8", seq_len=10, batch_size=2, cache_dir=cache_dir)
    assert torch.equal(shorter.split("test")[:100].flatten(), dm.split("test")[0])
    assert sorted((Path(cache_dir) / "ids").glob("*.npy")) == files


def test_local_text_and_xz_files(tmp_path, cache_dir):
    text = "To be, or not to be: that is the question.\n" * 60
    plain = tmp_path / "play.txt"
    plain.write_text(text)
    packed = tmp_path / "play.txt.xz"
    packed.write_bytes(lzma.compress(text.encode()))
    a = TextDataModule(str(plain), seq_len=16, cache_dir=cache_dir)
    b = TextDataModule(str(packed), seq_len=16, cache_dir=cache_dir)
    assert a.tokenizer.alphabet == "".join(sorted(set(text)))
    assert torch.equal(a.split("train"), b.split("train"))
    n = len(text)
    assert len(a.split("train")) == round(n * 11 / 12) // 16


def test_dataset_folder_keeps_its_splits(tmp_path, cache_dir):
    """The hub code path (``datasets.load_dataset(name)``) exercised on a local dataset folder."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for split, line in [("train", "abc abc abc "), ("validation", "cab "), ("test", "bca ")]:
        (folder / f"{split}.txt").write_text(line * 20)
    dm = TextDataModule(str(folder), seq_len=8, cache_dir=cache_dir)
    assert dm.tokenizer.alphabet == " abc"
    assert dm.tokenizer.decode(dm.split("validation")[0]) == "cab cab "


def test_bad_inputs_give_one_line_errors(tmp_path, cache_dir):
    with pytest.raises(DataError, match="data file not found") as e:
        TextDataModule(str(tmp_path / "missing.txt"))
    assert "\n" not in str(e.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        TextDataModule(str(empty), cache_dir=cache_dir).setup()
    corrupt = tmp_path / "broken.txt.xz"
    corrupt.write_bytes(b"\xfd7zXZ\x00 not really xz")
    with pytest.raises(DataError, match="could not read corpus") as e:
        TextDataModule(str(corrupt), cache_dir=cache_dir).setup()
    assert "\n" not in str(e.value)
    upper = tmp_path / "upper.txt"
    upper.write_text("hello World " * 50)
    with pytest.raises(DataError, match="character 'W'"):
        TextDataModule(str(upper), tokenizer="text8", cache_dir=cache_dir).setup()
    short = tmp_path / "short.txt"
    short.write_text("abc " * 10)
    with pytest.raises(DataError, match="fewer training tokens"):
        TextDataModule(str(short), seq_len=64, cache_dir=cache_dir).setup()
    with pytest.raises(ConfigError, match="unknown tokenizer 'sentencepiece'"):
        TextDataModule(str(short), tokenizer="sentencepiece", cache_dir=cache_dir)


def test_public_api_names():
    assert sd.data.TextDataModule is TextDataModule


def test_config_rebuilds_and_a_given_tokenizer(tmp_path, cache_dir, monkeypatch):
    """``config()`` is what checkpoints store: it rebuilds the same chunks from another folder; a
    given tokenizer (a checkpoint's) reads other text with its alphabet, or names what it lacks."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("abc cab bca " * 30)
    dm = TextDataModule("a.txt", seq_len=8, batch_size=4, cache_dir=cache_dir)
    cfg = dm.config()
    assert cfg == {
        "corpus": str(tmp_path / "a.txt"),  # absolute: valid from any working directory
        "seq_len": 8,
        "tokenizer": "char",
        "cache_dir": cache_dir,
    }
    assert TextDataModule("text8").config()["corpus"] == "text8"  # bundled names stay names
    test = dm.split("test")
    monkeypatch.chdir(tmp_path.parent)
    assert torch.equal(TextDataModule(**cfg).split("test"), test)
    wide = CharTokenizer(" abcdx")
    given = TextDataModule(str(tmp_path / "a.txt"), seq_len=8, tokenizer=wide, cache_dir=cache_dir)
    assert given.tokenizer is wide
    assert given.config()["tokenizer"] == {"kind": "char", "alphabet": " abcdx", "specials": []}
    assert given.tokenizer.decode(given.split("train")[0]) == "abc cab "
    assert torch.equal(TextDataModule(**given.config()).split("train"), given.split("train"))
    with pytest.raises(DataError, match="character 'c' at position 2 is not in"):
        TextDataModule(
            str(tmp_path / "a.txt"), tokenizer=CharTokenizer(" ab"), cache_dir=cache_dir
        ).setup()
