"""``sd.eval.likelihood`` and validation ``val/bpc``: known answers, errors, and trained models on a
random first-order Markov chain whose entropy is known exactly."""

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

import simplexdiff as sd
from simplexdiff.errors import ConfigError
from simplexdiff.paths.continuous import ContinuousPath
from simplexdiff.paths.linear import LinearSimplex


def constant(logits):
    logits = torch.as_tensor(logits)
    return lambda inputs, t: logits.expand(*inputs.shape[:2], logits.shape[-1])


def trainer(**kw):
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


# --- known answers -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["masked", "uniform"])
@pytest.mark.parametrize("schedule", ["loglinear", "cosine", "linear"])
def test_equal_logits_give_log_v(name, schedule):
    """Equal logits over V tokens: the NELBO is log V exactly (tests/test_discrete.py checks it by
    quadrature); here the stratified Monte-Carlo estimate must find it within 4 standard errors,
    with a standard error small enough (< 1% of log V) for that to mean something."""
    v = 6
    path = sd.paths.build(name, vocab_size=v, schedule=schedule)
    tokens = torch.randint(0, v, (16000, 8), generator=torch.Generator().manual_seed(0))
    res = sd.eval.likelihood(
        constant(torch.zeros(v)),
        tokens,
        path=path,
        num_t=8,
        batch_size=4000,
        generator=torch.Generator().manual_seed(1),
    )
    assert res["bound"] == "nelbo" and res["num_t"] == 8
    assert res["num_sequences"] == 16000 and res["num_tokens"] == 128000
    assert 0 < res["stderr"] < 0.01 * math.log(v)
    assert abs(res["nats_per_token"] - math.log(v)) < 4 * res["stderr"]
    assert res["bpc"] == res["nats_per_token"] / math.log(2)


def test_ar_equal_logits_exactly_log_v():
    v = 6
    tokens = torch.randint(0, v, (50, 9), generator=torch.Generator().manual_seed(0))
    res = sd.eval.likelihood(
        constant(torch.zeros(v)), tokens, path=sd.paths.build("ar", vocab_size=v)
    )
    assert res["bound"] == "exact_nll" and res["num_t"] == 1
    assert abs(res["nats_per_token"] - math.log(v)) < 1e-6 and res["stderr"] < 1e-6


class NoDensity(LinearSimplex):
    """A user's continuous path without kernel densities (``log_conditional``): no bound."""

    registry_name = "no_density"
    log_conditional = ContinuousPath.log_conditional


def test_errors_and_modes():
    with pytest.raises(
        ConfigError, match="no likelihood bound for continuous path 'no_density' yet"
    ):
        sd.eval.likelihood(
            constant(torch.zeros(5)), torch.zeros(2, 3, dtype=torch.long), path=NoDensity(5)
        )
    path = sd.paths.build("masked", vocab_size=5)
    model = sd.models.DiT(5, 16, 1, 2, 8)
    lm = sd.DiffusionLM(model=model, path=path)
    for bad in (torch.zeros(3, dtype=torch.long), torch.zeros(2, 3), torch.full((2, 3), 5)):
        with pytest.raises(ConfigError):
            sd.eval.likelihood(lm, bad)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    model.train()
    res = sd.eval.likelihood(lm, torch.zeros(3, 4, dtype=torch.long), num_t=2)
    assert seen == [False, False] and model.training  # eval mode inside, restored after
    assert isinstance(res["nats_per_token"], float) and res["num_tokens"] == 12


# --- training, validation and the bound on a Markov chain with known entropy ---------------------
K, LENGTH = 8, 16


def markov_chain():
    """A random first-order chain over 8 symbols (seeded), started from its stationary law."""
    g = torch.Generator().manual_seed(0)
    trans = torch.softmax(1.5 * torch.randn(K, K, generator=g, dtype=torch.float64), -1)
    evals, evecs = torch.linalg.eig(trans.T)
    pi = evecs[:, torch.argmin((evals - 1).abs())].real
    pi = pi / pi.sum()
    assert torch.allclose(pi @ trans, pi, atol=1e-12) and (pi > 0).all()
    return pi, trans


def draw(pi, trans, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, LENGTH, dtype=torch.long)
    x[:, 0] = torch.multinomial(pi, n, replacement=True, generator=g)
    for i in range(1, LENGTH):
        x[:, i] = torch.multinomial(trans[x[:, i - 1]], 1, generator=g)[:, 0]
    return x


@pytest.fixture(scope="module")
def markov():
    pi, trans = markov_chain()
    h_pi = float(-(pi * pi.log()).sum())
    h_rate = float(-(pi[:, None] * trans * trans.log()).sum())
    # exact entropy per token of a stationary length-L sequence: (H(pi) + (L - 1) H_rate) / L
    truth = (h_pi + (LENGTH - 1) * h_rate) / LENGTH
    return draw(pi, trans, 20000, 1), draw(pi, trans, 2000, 2), truth


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ar", "masked", "uniform", "rdlm"])
def test_markov_chain_bounds(name, markov):
    """Same LightningModule, data and budget (300 steps) for the three families and RDLM. Bounds are
    estimates on 2000 held-out sequences: a valid bound is >= the true entropy in expectation, so
    each must be >= truth - 3 stderr (stderr covers both the Monte-Carlo noise and the sampling of
    the test sequences); AR's exact NLL must come within 2% of the truth. Validation logs the same
    quantity (val/bpc): equal for AR (exact), within 4 combined standard errors otherwise."""
    train, test, truth = markov
    torch.manual_seed(0)
    path = sd.paths.build(name, vocab_size=K)
    model = sd.models.build(
        "causal" if path.causal else "dit",
        vocab_size=K,
        d_model=64,
        n_layers=2,
        n_heads=4,
        max_len=LENGTH,
    )
    lm = sd.DiffusionLM(model=model, path=path, lr=3e-3, warmup_steps=20)
    loader = DataLoader(
        train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    trainer(max_steps=300, limit_val_batches=0).fit(lm, loader)
    res = sd.eval.likelihood(
        lm, test, num_t=8, batch_size=500, generator=torch.Generator().manual_seed(3)
    )
    nats, se = res["nats_per_token"], res["stderr"]
    print(f"{name}: {nats:.4f} +- {se:.4f} nats/token, truth {truth:.4f}, ratio {nats / truth:.4f}")
    assert nats >= truth - 3 * se
    assert nats < 0.9 * math.log(K)  # it learned something (uniform prediction: log 8)
    if name == "ar":
        assert nats <= 1.02 * truth
    val = trainer().validate(lm, DataLoader(test, batch_size=500), verbose=False)[0]
    assert ("val/x1_ce_bits" in val) == (path.family == "continuous")
    val_nats = val["val/bpc"] * math.log(2)
    if name == "ar":
        assert abs(val_nats - nats) < 1e-5
    else:  # one stratified time per sequence: about sqrt(num_t) times the grid's stderr
        one_t = sd.eval.likelihood(lm, test, num_t=1, batch_size=500, generator=torch.Generator())
        assert abs(val_nats - nats) < 4 * math.hypot(se, one_t["stderr"])


def test_validation_logs_the_bound_only_for_paths_with_one():
    x = torch.randint(0, 5, (16, 8), generator=torch.Generator().manual_seed(0))
    for name, model, has_bound in [
        (NoDensity(5), sd.models.DiT(5, 16, 1, 2, 8), False),
        ("fisher_rao", sd.models.DiT(5, 16, 1, 2, 8), True),
        ("uniform", sd.models.DiT(5, 16, 1, 2, 8), True),
        # an untied head starts at zero: the untrained AR model predicts uniformly
        (
            "ar",
            sd.models.build(
                "causal", vocab_size=5, d_model=16, n_layers=1, n_heads=2, tie_weights=False
            ),
            True,
        ),  # fmt: skip
    ]:
        path = name if isinstance(name, NoDensity) else sd.paths.build(name, vocab_size=5)
        lm = sd.DiffusionLM(model=model, path=path)
        val = trainer(inference_mode=False).validate(lm, DataLoader(x, batch_size=8), verbose=False)
        val = val[0]
        assert "val/loss" in val
        assert ("val/bpc" in val) == has_bound
        assert ("val/x1_ce_bits" in val) == (lm.path.family == "continuous")
        if name == "fisher_rao":  # the flow bound needs gradients: it leaves inference mode
            again = trainer().validate(lm, DataLoader(x, batch_size=8), verbose=False)[0]
            assert again["val/bpc"] == val["val/bpc"]  # the same draws, the same bound
            continue
        if name == "ar":  # an untrained model predicts uniformly: exactly log2(5) bits
            assert abs(val["val/bpc"] - math.log2(5)) < 1e-5
        if name == "uniform":  # a one-draw estimate of log2(5); test_markov_chain_bounds checks
            assert 0 < val["val/bpc"] < 10  # val/bpc against eval.likelihood
