"""RDLM (``paths/rdlm.py``, ``paths/sphere_bridge.py``): the schedule's closed forms, the exact
radial reduction against a walk on the whole sphere, the Riemannian normal approximation against
the simulated marginal, the drift's known answers, the bound's validity, sampling and checkpoints.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, special, stats

import simplexdiff as sd
from simplexdiff.geometry import expmap, geodesic, log_to_vertices, proju
from simplexdiff.geometry.sphere import arccos_ratio
from simplexdiff.paths.fisher_rao import FisherRao
from simplexdiff.paths.sphere_bridge import (
    GeometricNoise,
    chi2,
    mean_cosine,
    simulate,
    spread_for,
)

NOISE = GeometricNoise()


@given(st.floats(0, 1))
def test_remaining_noise_is_the_integral_of_beta(t):
    exact, _ = integrate.quad(lambda s: 1e-3 ** (1 - s) * 0.2**s, t, 1)
    got = float(NOISE.remaining(torch.tensor(t, dtype=torch.float64)))
    assert got == pytest.approx(exact, rel=1e-9, abs=1e-15)


@given(st.floats(0, 1 - 1e-6), st.floats(0, 1))
def test_bridge_steps(t, frac):
    """``a`` and ``s`` of a step are the flat bridge's: a in [0, 1], ``a = 1``, ``s = 0`` at
    ``t' = 1``; as the step shrinks, ``a ~ gamma dt`` and ``s^2 ~ beta dt``."""
    t = torch.tensor(t, dtype=torch.float64)
    t_next = t + frac * (1 - t)
    a, s = NOISE.step(t, t_next)
    assert 0 <= float(a) <= 1 and float(s) >= 0
    a1, s1 = NOISE.step(t, torch.tensor(1.0, dtype=torch.float64))
    assert float(a1) == 1 and float(s1) == 0
    t_next = t + 1e-7 * (1 - t)
    dt = t_next - t  # the step as represented
    a, s = NOISE.step(t, t_next)
    assert float(a) == pytest.approx(float(NOISE.gamma(t) * dt), rel=1e-5)
    assert float(s**2) == pytest.approx(float(NOISE.beta(t) * dt), rel=1e-5)


def test_arccos_ratio_on_the_whole_sphere():
    y = torch.linspace(-0.999, 1, 2001, dtype=torch.float64)
    theta = torch.acos(y)
    expected = torch.where(y < 1, theta / torch.sin(theta), torch.ones_like(y))
    assert torch.allclose(arccos_ratio(y), expected, rtol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 26])
def test_chi2_draws_follow_the_law(k):
    x = chi2(k, (40000,), torch.Generator().manual_seed(k), torch.zeros(1, dtype=torch.float64))
    assert stats.kstest(x.numpy(), stats.chi2(k).cdf).pvalue > 1e-3


@pytest.mark.parametrize("dim", [3, 27])
def test_mean_cosine_is_the_kummer_function(dim):
    rho = np.linspace(0, 1.5 / math.sqrt(dim), 7)
    assert np.allclose(
        mean_cosine(rho, dim), special.hyp1f1(dim / 2, 0.5, -(rho**2) / 2), atol=1e-9
    )
    assert np.allclose(spread_for(mean_cosine(rho, dim), dim), rho, atol=1e-4)


def whole_sphere_walk(vocab, c, t, steps, n, seed):
    """The bridge's geodesic random walk in all ``V + 1`` coordinates (the reference the radial
    reduction must reproduce): ``<X, e>`` and ``<X, f>``."""
    g = torch.Generator().manual_seed(seed)
    e = torch.zeros(vocab + 1, dtype=torch.float64)
    e[0] = 1
    f = torch.zeros_like(e)
    f[1 if c > 0 else vocab] = 1  # any unit vector orthogonal to e
    x = (c * e + math.sqrt(1 - c * c) * f).repeat(n, 1)
    for i in range(steps):
        a, s = NOISE.step(torch.tensor(t * i / steps), torch.tensor(t * (i + 1) / steps))
        y = x[:, :1]
        z = torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = expmap(x, float(a) * arccos_ratio(y) * (e - y * x) + float(s) * proju(x, z))
        x = x / x.norm(dim=-1, keepdim=True)
    return x @ e, x @ f


@pytest.mark.parametrize("vocab", [3, 27])
def test_the_radial_reduction_is_the_walk_on_the_whole_sphere(vocab):
    """Moments of ``<X_t, e>`` and ``<X_t, f>`` from the reduced walk and from the walk in all
    coordinates agree within 4 standard errors (mask-like start ``c = 0`` and uniform-like
    ``c = 1 / sqrt(V)``)."""
    n = 6000
    for c in (0.0, 1 / math.sqrt(vocab)):
        for t in (0.5, 0.9):
            y_ref, w_ref = whole_sphere_walk(vocab, c, t, 32, n, seed=1)
            yw, _ = simulate(NOISE, c, vocab, torch.full((n,), t), 32, torch.Generator())
            for ref, got in ((y_ref, yw[:, 0]), (w_ref, yw[:, 1]), (y_ref**2, yw[:, 0] ** 2)):
                se = math.hypot(ref.std(), got.std()) / math.sqrt(n)
                assert abs(float(ref.mean() - got.mean())) < 4 * se + 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("vocab", [3, 27])
@pytest.mark.parametrize("prior", ["mask", "uniform"])
def test_the_approximate_marginal_matches_the_simulated_one(vocab, prior):
    """The Riemannian normal approximation against ``X_t`` simulated from the SDE: the mean and
    second moment of the target's coordinate and the probability that it is the largest token
    coordinate, at times from 0.1 to 0.995. Tolerance 0.01 (measured: at most 0.0013 for the
    moments, 0.009 for the probability, with 20,000 draws each)."""
    path = sd.paths.build("rdlm", vocab_size=vocab, prior=prior)
    n = 20000
    x1 = torch.zeros(n, 1, dtype=torch.long)
    uniform = torch.full((n,), prior == "uniform")
    g = torch.Generator().manual_seed(0)
    for t in (0.1, 0.3, 0.5, 0.7, 0.9, 0.995):
        times = torch.full((n,), t)
        approx = path.approximate(x1, times, uniform, g)[:, 0].double()
        exact = path.simulated(x1, times.double(), uniform, g)[:, 0]
        assert torch.allclose(approx.norm(dim=-1), torch.ones(n, dtype=torch.float64), atol=1e-5)
        for stat in (
            lambda x: x[:, 0].mean(),
            lambda x: x[:, 0].square().mean(),
            lambda x: (x[:, :vocab].argmax(-1) == 0).double().mean(),
        ):
            assert abs(float(stat(approx) - stat(exact))) < 0.01, t


def test_drift_known_answers():
    """At the target vertex with a one-hot prediction the drift vanishes; it is tangent
    everywhere; and with constant beta (so ``gamma = 1 / (1 - t)``) it is the Fisher-Rao
    x1-prediction field, ``sum_k p_k log_X(e_k) / (1 - t)``, on the orthant."""
    g = torch.Generator().manual_seed(0)
    v = 6
    e = torch.eye(v + 1, dtype=torch.float64)[2]
    assert log_to_vertices(e, torch.eye(v, dtype=torch.float64)[2]).abs().max() < 1e-12
    x = torch.randn(50, v + 1, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    p = torch.softmax(torch.randn(50, v, generator=g, dtype=torch.float64), -1)
    assert (log_to_vertices(x, p) * x).sum(-1).abs().max() < 1e-12
    flat = GeometricNoise(0.05, 0.05)
    t = torch.rand(50, generator=g, dtype=torch.float64) * 0.9
    assert torch.allclose(flat.gamma(t), 1 / (1 - t))
    orthant = torch.rand(50, v, generator=g, dtype=torch.float64) + 1  # far from faces, where
    # Fisher-Rao's vanish_on_faces changes the prediction by exp(-20) at most
    orthant = orthant / orthant.norm(dim=-1, keepdim=True)
    padded = torch.nn.functional.pad(orthant, (0, 1))
    fr = FisherRao(v).field(orthant, p, t)
    drift = flat.gamma(t)[:, None] * log_to_vertices(padded, p)
    assert drift[:, v].abs().max() < 1e-12  # nothing moves into the mask coordinate
    assert torch.allclose(drift[:, :v], fr, atol=1e-7)


def test_without_noise_the_walk_follows_the_geodesic():
    """The ``sigma -> 0`` limit: with beta constant and tiny, one sampler step from ``t`` to
    ``t'`` under a one-hot prediction moves along the great circle to the target by the
    fraction ``(t' - t) / (1 - t)``, as the Fisher-Rao geodesic does."""
    path = sd.paths.build("rdlm", vocab_size=5, beta_min=1e-12, beta_max=1e-12)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 6, generator=g, dtype=torch.float64)
    x0 = x0 / x0.norm(dim=-1, keepdim=True)
    target = torch.randint(0, 5, (4, 3), generator=g)
    logits = 60.0 * torch.nn.functional.one_hot(target, 5).double()
    t, t_next = torch.tensor(0.2), torch.tensor(0.6)
    moved = path.walk_step(x0, logits, t, t_next, g)
    expected = geodesic(x0, path.vertex(target).double(), torch.tensor(0.5, dtype=torch.float64))
    assert torch.allclose(moved, expected, atol=1e-6)


def zero_denoiser(inputs, t):
    return torch.zeros(*inputs.shape[:2], 4)


@pytest.mark.parametrize("prior", ["mask", "uniform", "mixture"])
def test_the_bound_of_a_blind_denoiser_is_above_the_entropy(prior):
    """Uniformly random tokens (entropy log V): an untrained denoiser, and one that predicts the
    uniform distribution, both bound them far above log V."""
    v = 4
    path = sd.paths.build("rdlm", vocab_size=v, prior=prior)
    tokens = torch.randint(0, v, (64, 6), generator=torch.Generator().manual_seed(0))
    untrained = sd.models.build("dit", vocab_size=v, d_model=32, n_layers=1, n_heads=2, max_len=6)
    for denoiser in (zero_denoiser, untrained):
        res = sd.eval.likelihood(
            denoiser, tokens, path=path, num_t=16, generator=torch.Generator().manual_seed(1)
        )
        assert res["bound"] == "nelbo"
        assert res["nats_per_token"] - 3 * res["stderr"] > math.log(v)


def test_a_perfect_denoiser_of_a_fixed_sequence_has_a_bound_near_zero():
    """Data = one fixed sequence (entropy 0): a denoiser that always predicts it has no drift
    error and a decoder term of ``-log 1``; the bound is 0 to rounding."""
    v, target = 5, torch.tensor([[3, 1, 4, 1, 0]])
    path = sd.paths.build("rdlm", vocab_size=v)

    def oracle(inputs, t):
        return 50.0 * torch.nn.functional.one_hot(target, v).float().expand(len(inputs), -1, -1)

    res = sd.eval.likelihood(oracle, target.repeat(8, 1), path=path, num_t=64)
    assert 0 <= res["nats_per_token"] < 1e-6


def test_sampling_with_a_perfect_denoiser_reproduces_the_data_and_honours_a_prompt():
    v, target = 5, torch.tensor([3, 1, 4, 1, 0, 2])
    path = sd.paths.build("rdlm", vocab_size=v, prior="mixture")

    def oracle(inputs, t):
        return 50.0 * torch.nn.functional.one_hot(target, v).float().expand(len(inputs), -1, -1)

    out = sd.samplers.sample(oracle, path, 16, 6, 32, generator=torch.Generator().manual_seed(0))
    assert (out.tokens == target).all() and out.nfe == 32
    again = sd.samplers.sample(oracle, path, 16, 6, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.tokens, out.tokens)
    prompted = sd.samplers.sample(
        zero_denoiser_v(v), path, 4, 6, 8, prompt=torch.tensor([2, 2]),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert (prompted.tokens[:, :2] == 2).all()


def zero_denoiser_v(v):
    return lambda inputs, t: torch.zeros(*inputs.shape[:2], v)


def test_only_the_diffusion_sampler_applies():
    path = sd.paths.build("rdlm", vocab_size=4)
    with pytest.raises(sd.ConfigError, match="grw"):
        sd.samplers.sample(zero_denoiser, path, 2, 3, 4, sampler="euler")
    fr = sd.paths.build("fisher_rao", vocab_size=4)
    with pytest.raises(sd.ConfigError, match="euler"):
        sd.samplers.sample(zero_denoiser, fr, 2, 3, 4, sampler="grw")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prior": "gauss"}, "unknown prior"),
        ({"objective": "fm"}, "unknown objective"),
        ({"window": [0.8, 0.3]}, "window"),
        ({"beta_min": 0.5, "beta_max": 0.1}, "beta"),
        ({"mix": 2}, "mix"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(sd.ConfigError, match=message):
        sd.paths.build("rdlm", vocab_size=4, **options)


def test_window_times_reweight_to_uniform_ones():
    """Times drawn by the window's density, weighted by ``time_weight``, integrate any function
    as uniform times do."""
    path = sd.paths.build("rdlm", vocab_size=4, window=[0.3, 0.75, 0.1])
    u = (torch.arange(200000, dtype=torch.float64) + 0.5) / 200000
    t = path.training_times(u)
    assert float(((t > 0.3) & (t < 0.75)).double().mean()) > 0.8
    f = torch.sin(5 * t) + t**2
    end = 1 - path.t_eps
    exact = (1 - math.cos(5 * end)) / 5 / end + end**2 / 3
    assert float((path.time_weight(t) * f).mean()) == pytest.approx(exact, rel=1e-3)


def test_tables_travel_in_the_path_state():
    path = sd.paths.build("rdlm", vocab_size=3, prior="mixture")
    state = path.state()
    assert set(state) == {"mask", "uniform"}
    other = sd.paths.build(**path.config())
    other.load_state(state)
    t = torch.linspace(0, 1, 11)
    for kind in state:
        assert all(
            torch.equal(a, b)
            for a, b in zip(path.table(kind).at(t), other.table(kind).at(t), strict=True)
        )


def test_a_checkpoint_carries_the_tables(tmp_path, monkeypatch):
    """A model saved by the module is read back with the tables it was trained with, even where
    the cache holds different ones (nothing is recomputed or read from the cache)."""
    path = sd.paths.build("rdlm", vocab_size=3)
    model = sd.models.build("dit", vocab_size=3, d_model=16, n_layers=1, n_heads=2, max_len=4)
    lm = sd.DiffusionLM(model=model, path=path)
    ckpt = {"state_dict": lm.state_dict()}
    lm.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "model.ckpt")
    monkeypatch.setenv("SIMPLEXDIFF_CACHE", str(tmp_path / "empty"))
    loaded = sd.DiffusionLM.load(tmp_path / "model.ckpt")
    assert set(loaded.path._tables) == {"mask"}
    t = torch.linspace(0, 1, 7)
    assert all(
        torch.equal(a, b)
        for a, b in zip(path.table("mask").at(t), loaded.path.table("mask").at(t), strict=True)
    )
    assert not (tmp_path / "empty").exists()
