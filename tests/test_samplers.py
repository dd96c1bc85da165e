"""The shared sampler: exactness on targets with a known answer, conditioning, seeds, caching,
convergence order, logit shaping."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import simplexdiff as sd
from simplexdiff.errors import ConfigError
from simplexdiff.samplers import SAMPLERS, sample, shape_logits

K, L, N = 8, 4, 50_000


def target_probs(seed: int = 0) -> torch.Tensor:
    """Independent positions, random categorical targets ``[L, K]``."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.rand(L, K, generator=g, dtype=torch.float64), -1)


def kl_to_target(tokens: torch.Tensor, pi: torch.Tensor) -> float:
    """Mean over positions of KL(empirical || target)."""
    counts = torch.stack([torch.bincount(tokens[:, l], minlength=K) for l in range(L)]).double()
    emp = counts / counts.sum(-1, keepdim=True)
    terms = torch.where(emp > 0, emp * (emp.log() - pi.log()), torch.zeros_like(emp))
    return float(terms.sum(-1).mean())


def perfect_sampler_floor(pi: torch.Tensor, replicates: int = 20) -> float:
    """Mean KL of ``N`` exact draws from the target (the floor any sampler sits on)."""
    g = torch.Generator().manual_seed(123)
    kls = [
        kl_to_target(torch.multinomial(pi.float(), N, replacement=True, generator=g).T, pi)
        for _ in range(replicates)
    ]
    return sum(kls) / replicates


class MaskedPosterior:
    """Exact x1-posterior of the masked path for independent positions: the target itself, at any
    time and for any state (so it ignores time)."""

    time_conditioned = False

    def __init__(self, pi):
        self.logits = pi.log().float()

    def __call__(self, inputs, t):
        return self.logits.expand(inputs.shape[0], -1, -1)


class UniformPosterior:
    """The true posterior ``p(k | z) ∝ pi(k) (alpha δ_kz + (1 - alpha)/K)`` of the uniform path.

    Not what the UDLM parameterisation wants: its reverse step plugs the prediction into
    ``q(z_s | z_t, x)``, whose normaliser depends on ``x``, so the plug-in chain is the exact
    reversal when the prediction makes ``q(z_s | x_theta)`` the marginal of ``z_s``. For independent
    positions that is ``x_theta = pi`` at every time and state (the NELBO optimum; see
    ``test_uniform_nelbo_optimum_is_the_marginal``)."""

    def __init__(self, pi, path):
        self.pi, self.path = pi, path

    def __call__(self, inputs, t):
        alpha = self.path.schedule(t.double())[:, None, None]
        like = alpha * torch.nn.functional.one_hot(inputs, K).double() + (1 - alpha) / K
        return (self.pi[None] * like).log().float()


class ARConditional:
    """Exact next-token distribution for independent positions: the target at each position."""

    causal = True
    time_conditioned = False

    def __init__(self, pi):
        self.logits = pi.log().float()

    def __call__(self, inputs, t):
        return self.logits[: inputs.shape[1]].expand(inputs.shape[0], -1, -1)


@pytest.fixture(scope="module")
def floor():
    return perfect_sampler_floor(target_probs())


@pytest.mark.parametrize(
    "name, sampler, steps",
    [
        ("masked", "ancestral", 8),
        ("masked", "cached", 64),
        ("uniform", "ancestral", 16),
        ("ar", "ancestral", L),
    ],
)
def test_exact_denoiser_samples_the_target(name, sampler, steps, floor):
    pi = target_probs()
    path = sd.paths.build(name, vocab_size=K)
    # the exact denoiser of each parameterisation: masked and AR, the posterior (= pi here);
    # uniform (UDLM plug-in), the NELBO optimum, which for independent positions is also pi
    denoiser = {
        "masked": MaskedPosterior(pi),
        "uniform": MaskedPosterior(pi),
        "ar": ARConditional(pi),
    }[name]
    out = sample(denoiser, path, N, L, steps, sampler, generator=torch.Generator().manual_seed(1))
    kl = kl_to_target(out.tokens, pi)
    assert kl <= 2 * floor, (kl, floor)
    assert floor == pytest.approx((K - 1) / (2 * N), rel=0.3)  # the floor is the known first order


def test_uniform_nelbo_optimum_is_the_marginal():
    """For independent positions the uniform path's NELBO with the prediction ``pi`` is the exact
    entropy (a tight bound), and the true posterior as prediction scores worse."""
    pi = target_probs()
    path = sd.paths.build("uniform", vocab_size=K)
    data = torch.multinomial(
        pi.float(), 4000, replacement=True, generator=torch.Generator().manual_seed(3)
    ).T
    entropy = float(-(pi * pi.log()).sum(-1).mean())
    gen = torch.Generator().manual_seed(4)
    best = sd.eval.likelihood(MaskedPosterior(pi), data, path=path, num_t=16, generator=gen)
    post = sd.eval.likelihood(
        UniformPosterior(pi, path),
        data,
        path=path,
        num_t=16,
        generator=torch.Generator().manual_seed(4),
    )
    assert abs(best["nats_per_token"] - entropy) < 3 * best["stderr"] + 1e-3, (best, entropy)
    assert post["nats_per_token"] > best["nats_per_token"] + 3 * post["stderr"]
    # and sampling with the posterior as prediction is biased: far above the floor
    tokens = sample(
        UniformPosterior(pi, path),
        path,
        N,
        L,
        16,
        "ancestral",
        generator=torch.Generator().manual_seed(1),
    ).tokens
    assert kl_to_target(tokens, pi) > 50 * (K - 1) / (2 * N)


def test_cached_matches_ancestral_with_fewer_calls():
    torch.manual_seed(0)
    model = sd.models.DiT(6, d_model=16, n_layers=1, n_heads=2, max_len=8, time_conditioning=False)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    path = sd.paths.build("masked", vocab_size=6)
    plain = sample(model, path, 16, 8, 64, "ancestral", generator=torch.Generator().manual_seed(5))
    cached = sample(model, path, 16, 8, 64, "cached", generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain.tokens, cached.tokens)
    assert plain.nfe == 64 and cached.nfe < plain.nfe
    timed = sd.models.DiT(6, d_model=16, n_layers=1, n_heads=2, max_len=8)
    with pytest.raises(ConfigError, match="ignores time"):
        sample(timed, path, 2, 8, 8, "cached")


def _model_for(path):
    torch.manual_seed(0)
    name = "causal" if path.causal else "dit"
    model = sd.models.build(
        name, vocab_size=path.vocab_size, d_model=16, n_layers=1, n_heads=2, max_len=12
    )
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


PAIRS = [
    (s, p)
    for s in SAMPLERS.names()
    if s != "cached"
    for p in sd.paths.available()
    if SAMPLERS.build(s).fits(sd.paths.build(p, vocab_size=5))
]


@pytest.mark.parametrize("sampler, name", PAIRS)
@settings(max_examples=15)
@given(pattern=st.lists(st.integers(-1, 4), min_size=12, max_size=12), seed=st.integers(0, 99))
def test_conditioned_positions_never_change(sampler, name, pattern, seed):
    path = sd.paths.build(name, vocab_size=5)
    steps = 12
    opts = {"block_length": 4} if sampler == "semi_ar" else {}
    out = sample(
        _model_for(path),
        path,
        3,
        12,
        steps,
        sampler,
        infill=torch.tensor(pattern),
        generator=torch.Generator().manual_seed(seed),
        return_trajectory=True,
        **opts,
    )
    ids = torch.tensor(pattern)
    fixed = ids >= 0
    assert (out.tokens[:, fixed] == ids[fixed]).all()
    for state in out.trajectory:
        assert (path.decode(state)[:, fixed] == ids[fixed]).all()
    assert ((out.tokens >= 0) & (out.tokens < 5)).all()  # finished: no MASK left


@pytest.mark.parametrize("sampler, name", PAIRS)
def test_same_seed_same_samples(sampler, name):
    path = sd.paths.build(name, vocab_size=5)
    model = _model_for(path)
    opts = {"block_length": 4} if sampler == "semi_ar" else {}
    runs = [
        sample(
            model,
            path,
            4,
            12,
            12,
            sampler,
            prompt=torch.tensor([1, 2]),
            generator=torch.Generator().manual_seed(7),
            temperature=0.8,
            **opts,
        ).tokens
        for _ in range(2)
    ]
    assert torch.equal(*runs)
    assert (runs[0][:, :2] == torch.tensor([1, 2])).all()


def test_semi_ar_decodes_blocks_left_to_right():
    path = sd.paths.build("masked", vocab_size=5)
    out = sample(
        _model_for(path),
        path,
        2,
        12,
        6,
        "semi_ar",
        block_length=4,
        return_trajectory=True,
        generator=torch.Generator().manual_seed(0),
    )
    for i, state in enumerate(out.trajectory[1:], start=1):  # 3 blocks, 2 steps each
        done_blocks = i // 2
        assert (state[:, : 4 * done_blocks] != path.mask_id).all()
        assert (state[:, 4 * ((i + 1) // 2) :] == path.mask_id).all()
    with pytest.raises(ConfigError, match="divisible"):
        sample(_model_for(path), path, 2, 12, 5, "semi_ar", block_length=4)


def test_confidence_decoding_reveals_many_when_sure():
    pi = torch.full((L, K), 1e-4, dtype=torch.float64)
    pi[:, 3] = 1.0
    pi = pi / pi.sum(-1, keepdim=True)
    path = sd.paths.build("masked", vocab_size=K)
    out = sample(
        MaskedPosterior(pi),
        path,
        5,
        L,
        8,
        "confidence",
        threshold=0.9,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.nfe == 1 and out.tokens.eq(3).float().mean() > 0.99


def test_midpoint_is_second_order():
    """Fisher-Rao flow under a fixed prediction: halving h cuts Euler's error ~2x, midpoint's ~4x."""
    path = sd.paths.build("fisher_rao", vocab_size=4)
    logits = torch.tensor([1.0, -0.5, 0.3, 0.0]).expand(1, 3, 4)

    def denoiser(inputs, t):
        return logits

    def end(sampler, steps):
        grid = torch.linspace(0, 0.8, steps + 1).tolist() + [1.0]  # stop short of the 1/(1-s) end
        out = sample(
            denoiser,
            path,
            1,
            3,
            steps + 1,
            sampler,
            time_grid=torch.tensor(grid),
            generator=torch.Generator().manual_seed(0),
            return_trajectory=True,
        )
        return out.trajectory[-2].double()

    ref = end("midpoint", 2048)
    # coarse grids, so float32 rounding (~5e-6 here) stays far below the discretisation error
    errors = {
        s: [float((end(s, n) - ref).norm()) for n in (4, 8, 16)] for s in ("euler", "midpoint")
    }
    euler_rate = errors["euler"][1] / errors["euler"][2]
    mid_rate = errors["midpoint"][1] / errors["midpoint"][2]
    assert 1.6 < euler_rate < 2.5 and 3.2 < mid_rate < 4.8, errors
    assert errors["midpoint"][2] < errors["euler"][2] / 10


def test_shape_logits_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.allclose(shape_logits(logits, temperature=2.0), logits / 2)
    top2 = shape_logits(logits, top_k=2)
    assert torch.isinf(top2[0, 2:]).all() and torch.equal(top2[0, :2], logits[0, :2])
    p = torch.softmax(logits, -1)[0]  # 0.644, 0.237, 0.087, 0.032
    nucleus = shape_logits(logits, top_p=0.85)  # 0.644 < 0.85 <= 0.881: keep two
    assert torch.isfinite(nucleus[0, :2]).all() and torch.isinf(nucleus[0, 2:]).all()
    assert float(p[:2].sum()) >= 0.85 > float(p[0])
    assert torch.isfinite(shape_logits(logits, top_p=0.1)[0, 0])  # the best token always stays


def test_bad_sampler_requests_are_one_line_errors():
    path = sd.paths.build("fisher_rao", vocab_size=5)
    model = _model_for(path)
    with pytest.raises(ConfigError, match="does not apply"):
        sample(model, path, 1, 4, 4, "ancestral")
    with pytest.raises(ConfigError, match="unknown option"):
        sample(model, path, 1, 4, 4, "euler", block_length=3)
    with pytest.raises(ConfigError, match="temperature"):
        sample(model, path, 1, 4, 4, temperature=-1.0)
    with pytest.raises(ConfigError, match="time_grid"):
        sample(model, path, 1, 4, 2, time_grid=torch.tensor([0.0, 0.7, 0.5]))
    with pytest.raises(ConfigError, match="infill"):
        sample(model, path, 1, 4, 2, infill=torch.tensor([1, -1]))
    assert math.isfinite(float(sample(model, path, 1, 4, 2, decode="sample").tokens.sum()))
