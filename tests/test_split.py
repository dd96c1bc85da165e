"""Dimension splitting of the continuous paths (issue 14): tokens as base-b digit strings."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import simplexdiff as sd
from simplexdiff.errors import ConfigError
from simplexdiff.eval.flow_bound import flow_bound
from simplexdiff.paths.digits import DigitCode

CONTINUOUS = ["fisher_rao", "linear", "dirichlet"]


@given(vocab=st.integers(3, 5000), base=st.integers(2, 40))
def test_digits_are_a_bijection_of_the_ids(vocab, base):
    if base >= vocab:
        with pytest.raises(ConfigError, match="not below the vocabulary size"):
            DigitCode(vocab, base)
        return
    code = DigitCode(vocab, base)
    assert base ** (code.m - 1) < vocab <= base**code.m  # m = ceil(log_b V), exactly
    ids = torch.arange(vocab).view(1, -1)
    digits = code.to_digits(ids)
    assert digits.shape == (1, vocab * code.m) and 0 <= digits.min() and digits.max() < base
    assert torch.equal(code.to_ids(digits), ids)


@given(
    vocab=st.integers(3, 70),
    base=st.integers(2, 5),
    seed=st.integers(0, 2**31),
    peaked=st.booleans(),
)
def test_best_valid_is_the_most_probable_token(vocab, base, seed, peaked):
    """Against brute force over every id (and every digit string, for the invalid flag)."""
    if base >= vocab:
        return
    code = DigitCode(vocab, base)
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 3 * code.m, base, generator=gen, dtype=torch.float64)
    log_probs = torch.log_softmax(logits * (8.0 if peaked else 1.0), -1)
    ids, invalid = code.best_valid(log_probs)
    grouped = log_probs.unflatten(1, (3, code.m))  # [4, 3, m, b]
    every = torch.tensor(list(itertools.product(range(base), repeat=code.m)))  # [b^m, m]
    scores = grouped.gather(-1, every.T.expand(4, 3, -1, -1)).sum(-2)  # [4, 3, b^m]
    values = code.to_ids(every.flatten()).view(1, 1, -1)
    best_valid = scores.masked_fill(values >= vocab, -math.inf).argmax(-1)
    assert torch.equal(ids, values[0, 0][best_valid])
    assert torch.equal(invalid, values[0, 0][scores.argmax(-1)] >= vocab)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_split_path_is_its_base_path_on_digits(name):
    """Split with base b, a path's state, loss and flow bound are those of the unsplit path with
    b symbols on the ``L m`` digit positions; the denoiser sees ``m b`` features per token."""
    vocab, base, length = 50, 4, 6
    split = sd.paths.build(name, vocab_size=vocab, split={"base": base})
    plain = sd.paths.build(name, vocab_size=base)
    m = split.digits.m
    assert (m, split.model_vocab_size, split.config()["split"]) == (3, 12, {"base": 4})
    torch.manual_seed(0)
    model = sd.models.DiT(vocab_size=12, d_model=16, n_layers=1, n_heads=2, max_len=length)
    seen = []

    def on_digits(inputs, t):  # the same denoiser, reading the digit positions
        seen.append(inputs.shape)
        return model(inputs.reshape(2, length, m * base), t).reshape(2, length * m, base)

    x = torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(1))
    digits = split.digits.to_digits(x)
    t = torch.tensor([0.3, 0.8])
    a = split.training_loss(model, x, t, torch.Generator().manual_seed(2))
    b = plain.training_loss(on_digits, digits, t, torch.Generator().manual_seed(2))
    assert seen[0] == (2, length * m, base)
    assert torch.equal(a.loss, b.loss)
    assert a.metrics["x1_ce"] == pytest.approx(m * float(b.metrics["x1_ce"]))  # per token
    nats, _ = flow_bound(model, split, x, steps=4, generator=torch.Generator().manual_seed(3))
    ref, _ = flow_bound(
        on_digits, plain, digits, steps=4, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(nats, ref)  # per sequence, over its L tokens' digits


@pytest.mark.parametrize("name", CONTINUOUS)
def test_split_sampling_gives_tokens_and_counts_invalid_strings(name):
    vocab, base = 10, 3  # m = 3: 17 of the 27 digit strings spell no token
    path = sd.paths.build(name, vocab_size=vocab, split={"base": base})
    model = sd.models.DiT(
        vocab_size=path.model_vocab_size, d_model=16, n_layers=1, n_heads=2, max_len=8
    )
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([-3.0, -3.0, 3.0] * 3))  # prefers "222" = 26, invalid
    prompt = torch.tensor([7, 1, 9])
    for decode in ("argmax", "sample"):
        out = sd.samplers.sample(
            model, path, 4, 8, 6, prompt=prompt, decode=decode,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        assert out.tokens.shape == (4, 8) and out.tokens.max() < vocab
        assert torch.equal(out.tokens[:, :3], prompt.expand(4, 3))
        assert 0 < out.invalid_tokens <= 4 * 5
        if decode == "argmax":
            # every digit heads for 2; the best valid string below V - 1 = "100" keeps a 0 first
            # and then the 2s: "022" = 8 (one unlikely digit; "100" itself has three)
            assert (out.tokens[:, 3:] == 8).all()


def test_split_options_are_checked():
    with pytest.raises(ConfigError, match="split base must be an integer of at least 2"):
        sd.paths.build("fisher_rao", vocab_size=50, split={"base": 1})
    with pytest.raises(ConfigError, match="split takes one option, base"):
        sd.paths.build("linear", vocab_size=50, split={"bits": 2})
    with pytest.raises(ConfigError, match="unknown option 'split'"):
        sd.paths.build("masked", vocab_size=50, split={"base": 2})
    path = sd.paths.build("dirichlet", vocab_size=50, split={"base": 7})
    rebuilt = sd.paths.build(**path.config())
    assert (
        rebuilt.config() == path.config() and rebuilt.model_vocab_size == 21
    )  # 7**2 < 50: 3 digits
