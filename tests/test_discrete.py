"""Discrete paths (masked, uniform) and the autoregressive baseline: bounds by hand and by exact
enumeration of the discrete-time chain, known answers, reverse steps, edges, sampling."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate

import simplexdiff as sd
from simplexdiff.errors import ConfigError
from simplexdiff.paths.uniform import uniform_integrand, uniform_posterior

SCHEDULES = ["loglinear", "cosine", "linear"]
DISCRETE = ["masked", "uniform"]


def build(name, v, **kw):
    return sd.paths.build(name, vocab_size=v, **kw)


def constant(logits):
    """A denoiser predicting the same logits at every position and time."""
    logits = torch.as_tensor(logits)
    return lambda inputs, t: logits.expand(*inputs.shape[:2], logits.shape[-1])


def tiny_model(path, v, max_len=8):
    name = "causal" if path.causal else "dit"
    return sd.models.build(name, vocab_size=v, d_model=16, n_layers=1, n_heads=2, max_len=max_len)


# --- registry, config ----------------------------------------------------------------------------
def test_registry_config_and_errors():
    assert {"masked", "uniform", "ar"} <= set(sd.paths.available())
    for name in DISCRETE:
        path = build(name, 5, schedule="cosine", t_eps=0.01)
        assert sd.paths.PATHS.build(**path.config()).config() == path.config()
        assert path.family == "discrete" and path.bound == "nelbo"
        assert path.default_sampler == "ancestral" and not path.causal
        with pytest.raises(ConfigError, match="unknown schedule 'cos'"):
            build(name, 5, schedule="cos")
    ar = build("ar", 5)
    assert ar.config() == {"name": "ar", "vocab_size": 5} and ar.causal
    assert ar.bound == "exact_nll" and ar.family == "autoregressive"
    assert build("masked", 5).input_vocab_size == 6 and ar.input_vocab_size == 6
    assert build("fisher_rao", 5).bound == "dequantized_flow_bound"
    assert build("dirichlet", 5).bound == "dequantized_flow_bound"


def test_model_causality_must_match_the_path():
    with pytest.raises(ConfigError, match="'ar' path needs a causal model"):
        sd.DiffusionLM(model=sd.models.DiT(5, 16, 1, 2, 8), path=build("ar", 5))
    causal = sd.models.build("causal", vocab_size=5, d_model=16, n_layers=1, n_heads=2, max_len=8)
    with pytest.raises(ConfigError, match="'masked' path needs a bidirectional model") as e:
        sd.DiffusionLM(model=causal, path=build("masked", 5))
    assert "\n" not in str(e.value)
    sd.DiffusionLM(model=causal, path=build("ar", 5))


# --- losses by hand, edges -----------------------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_masked_loss_by_hand(schedule):
    """alpha'/(1 - alpha) * sum over masked positions of -log p(x) / L (+ alpha(0) log V)."""
    v, t = 4, {"loglinear": 0.6, "cosine": 0.6, "linear": 0.93}[schedule]  # alpha(t) ~ 0.4-0.5
    logits = torch.tensor([1.0, -0.5, 0.3, 2.0])
    path = build("masked", v, schedule=schedule)
    x1 = torch.tensor([[0, 3, 1, 2, 2, 0, 1, 3]])
    seen = {}

    def denoiser(inputs, tt):
        seen["z"] = inputs
        return logits.expand(1, 8, v)

    out = path.training_loss(denoiser, x1, torch.tensor([t]), torch.Generator().manual_seed(3))
    z = seen["z"][0]
    masked = z == v
    assert 0 < int(masked.sum()) < 8  # this seed masks some positions, not all
    assert torch.equal(z[~masked], x1[0][~masked])  # revealed positions show the clean token
    k = sd.paths.schedules.SCHEDULES.build(schedule)
    tt = torch.tensor(t, dtype=torch.float64)
    weight = float(k.derivative(tt) / (1 - k(tt)))
    logp = torch.log_softmax(logits.double(), 0)
    by_hand = weight * float(-logp[x1[0][masked]].sum()) / 8 + k.at_zero * math.log(v)
    assert abs(float(out.loss) - by_hand) < 1e-5 * by_hand
    assert set(out.metrics) == {"nelbo"}


@pytest.mark.parametrize("name", DISCRETE + ["ar"])
@given(
    v=st.integers(2, 6),
    length=st.integers(1, 5),
    t=st.one_of(st.just(0.0), st.just(1.0), st.floats(0, 1)),
    schedule=st.sampled_from(SCHEDULES),
    seed=st.integers(0, 2**16),
)
def test_losses_and_bounds_finite_at_the_ends(name, v, length, t, schedule, seed):
    torch.manual_seed(seed)
    path = build(name, v) if name == "ar" else build(name, v, schedule=schedule)
    model = tiny_model(path, v)
    for p in model.parameters():  # leave the zero-initialised head: make the logits non-trivial
        torch.nn.init.normal_(p, std=0.5)
    x1 = torch.randint(0, v, (2, length))
    tt = torch.full((2,), t)
    bound = path.sequence_bound(model, x1, tt)
    assert bound.shape == (2,) and torch.isfinite(bound).all() and (bound >= -1e-5).all()
    out = path.training_loss(model, x1, tt)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert float(path.training_times(torch.tensor(1.0))) <= 1 - getattr(path, "t_eps", 0.0) + 1e-7


@given(
    v=st.integers(2, 8),
    t=st.one_of(st.just(0.0), st.just(1.0), st.floats(0, 1)),
    schedule=st.sampled_from(SCHEDULES),
    seed=st.integers(0, 2**16),
)
def test_uniform_integrand_nonnegative_and_zero_for_a_perfect_prediction(v, t, schedule, seed):
    """l = alpha'/(V alpha) sum_{j != z} f(r_j, rho_j) with f >= 0, f = 0 iff rho = r."""
    g = torch.Generator().manual_seed(seed)
    path = build("uniform", v, schedule=schedule)
    x1 = torch.randint(0, v, (3, 6), generator=g)
    z = path.noise(x1, torch.full((3,), t), g)  # states q can produce (z = x1 surely at t = 1)
    a = path.alphas(torch.full((3,), t, dtype=torch.float64))
    logits = torch.randn(3, 6, v, generator=g, dtype=torch.float64) * 3
    l64 = uniform_integrand(logits, z, x1, *a)
    assert torch.isfinite(l64).all() and (l64 >= -1e-12).all()
    l32 = uniform_integrand(logits.float(), z, x1, *a)
    assert l32.dtype == torch.float32
    # float32 logits: ~1e-6 absolute near t = 0, ~1e-5 relative where l is large (module doc)
    assert torch.allclose(l32.double(), l64, rtol=1e-4, atol=5e-6)
    perfect = 1000.0 * torch.nn.functional.one_hot(x1, v).double()
    assert uniform_integrand(perfect, z, x1, *a).abs().max() < 1e-9


# --- known answers: exact, by quadrature over t of the exact expectation over z (L = 1) ----------
def expected_integrand(path, logits, x, t):
    """E_{z ~ q(. | x)} l(t, z) for one position, by enumerating z (float64)."""
    v = path.vocab_size
    tt = torch.tensor([t], dtype=torch.float64)
    alpha, c, _ = path.alphas(tt)
    x1 = torch.tensor([[x]])
    lg = torch.as_tensor(logits, dtype=torch.float64)[None, None]
    if path.registry_name == "masked":
        states, probs = [v, x], [float(c), float(alpha)]
    else:
        states = list(range(v))
        probs = [float(alpha) * (j == x) + float(c) / v for j in states]
    return sum(
        p * float(path.integrand(lg, torch.tensor([[s]]), x1, tt))
        for s, p in zip(states, probs, strict=True)
    )


def bound_by_quadrature(path, logits, x):
    val, err = integrate.quad(
        lambda t: expected_integrand(path, logits, x, t),
        0,
        1,
        epsabs=1e-11,
        epsrel=1e-11,
        limit=200,
    )
    assert err < 1e-9
    return val + path.prior_term()


def start_mismatch(name, a0, p, x):
    """E_{z_0 ~ q(. | x)} log(q(z_0) / p(z_0)): q(z_0) the data's marginal at t = 0, p(z_0) the
    model's prior; 0 when alpha(0) = 0."""
    v = len(p)
    if name == "masked":  # q(z_0) = (1 - a0) MASK + a0 p, prior (1 - a0) MASK + a0 / V
        return a0 * math.log(v * p[x])
    q_given_x = a0 * (np.arange(v) == x) + (1 - a0) / v
    return float(np.sum(q_given_x * np.log(v * (a0 * p + (1 - a0) / v))))


@pytest.mark.parametrize("name", DISCRETE)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_equal_logits_bound_log_v_and_exact_reversal_bound_minus_log_p(name, schedule):
    """Equal logits: the bound is log V (masked: every schedule; uniform: the reverse chain is the
    exact reversal for uniform data). More generally, for data with independent positions of
    marginal p, the constant prediction p makes the reverse kernels exact (for UDLM's plug-in
    posterior too: x_theta = p reproduces the true posterior mixture), so the model's path
    distribution differs from the data's only at t = 0, and the bound of x is exactly
    -log p(x) + E_{q(z_0|x)} log(q(z_0) / p(z_0)): -log p(x) when alpha(0) = 0, and for MDLM's
    linear schedule -log p(x) + alpha(0) log(V p_x) (masked) or an O(alpha(0)^2) term (uniform)."""
    v = 4
    path = build(name, v, schedule=schedule)
    assert abs(bound_by_quadrature(path, np.zeros(v), 2) - math.log(v)) < 1e-8
    p = np.array([0.1, 0.2, 0.3, 0.4])
    a0 = path.schedule.at_zero
    for x in (0, 3):
        want = -math.log(p[x]) + start_mismatch(name, a0, p, x)
        assert abs(bound_by_quadrature(path, np.log(p), x) - want) < 1e-8


def test_prior_terms_are_the_kl_at_time_zero():
    """Only MDLM's linear schedule has alpha(0) = exp(-10) > 0; the prior term is then
    KL(q(z_0 | x) || p(z_0)), with p(z_0) what ``prior`` draws."""
    v, a0 = 5, math.exp(-10)
    for name in DISCRETE:
        assert (
            build(name, v).prior_term() == 0.0
            and build(name, v, schedule="cosine").prior_term() == 0.0
        )
    assert abs(build("masked", v, schedule="linear").prior_term() - a0 * math.log(v)) < 1e-18
    q = np.full(v, (1 - a0) / v)
    q[0] += a0
    kl = float(np.sum(q * np.log(q * v)))
    assert abs(build("uniform", v, schedule="linear").prior_term() - kl) < 1e-6 * kl
    draw = build("masked", v, schedule="linear").prior(400, 500, torch.Generator().manual_seed(0))
    frac = float((draw < v).double().mean())  # revealed at t = 0 with probability alpha(0)
    assert abs(frac - a0) < 5 * math.sqrt(a0 / draw.numel())


# --- the uniform NELBO against the discrete-time chain, enumerated exactly -----------------------
V4 = 4
RNG = np.random.default_rng(0)
THETA, PHI = RNG.normal(size=(V4, V4)) * 1.5, RNG.normal(size=(V4, V4)) * 1.5


def prediction(t, k):
    """A time- and state-dependent prediction: logits ``THETA[k] + t PHI[k]``."""
    return THETA[k] + np.multiply.outer(np.asarray(t), PHI[k])


def softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def discrete_nelbo(path, x, steps):
    """-log p(x) <= KL(q(z_0|x) || U) + sum_i E_{q(z_{i-1}|x)} KL(q(z_i | z_{i-1}, x) || p(z_i | z_{i-1}))
    for the chain on the grid t_i = i / steps, every term summed exactly over the V states. The
    posterior is Bayes' rule on the forward kernel; the model's step is the same with
    ``q(z_i | x)`` replaced by ``alpha_i x_theta + (1 - alpha_i) / V`` (UDLM); the last step, to
    alpha = 1, is the reconstruction term -log p(x | z)."""
    v, tau = V4, np.linspace(0, 1, steps + 1)
    a = path.alphas(torch.tensor(tau))[0].numpy()
    e = np.eye(v)
    q0 = a[0] * e[x] + (1 - a[0]) / v
    total = float(np.sum(q0 * np.log(q0 * v)))
    a_n, a_c = a[:-1, None, None], a[1:, None, None]
    kernel = (a_n / a_c) * e + (1 - a_n / a_c) / v  # kernel[i, j, k] = q(z_n = k | z_c = j)
    q_n = a[:-1, None] * e[x] + (1 - a[:-1, None]) / v
    post = kernel * (a_c[..., 0] * e[x] + (1 - a_c[..., 0]) / v)[:, :, None]
    post /= post.sum(1, keepdims=True)  # post[i, j, k] = q(z_c = j | z_n = k, x)
    for k in range(v):
        m = a_c[..., 0] * softmax(prediction(tau[:-1], k)) + (1 - a_c[..., 0]) / v
        p_model = kernel[:, :, k] * m
        p_model /= p_model.sum(1, keepdims=True)
        qk = post[:, :, k]
        safe = np.where(qk > 0, qk, 1.0)
        kl = np.sum(
            np.where(qk > 0, qk * (np.log(safe) - np.log(np.where(qk > 0, p_model, 1))), 0), 1
        )
        total += float(np.sum(q_n[:, k] * kl))
    return total


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_uniform_nelbo_matches_exact_enumeration_of_the_discrete_chain(schedule):
    """V = 4, length 1, a prediction that depends on t and on z_t. The T-step discrete NELBO
    converges to the continuous-time one like C/T (a Riemann sum of a smooth integrand; C is about
    -1.4 to 0.3 for these schedules and predictions, T*(N_T - I) constant to 3 digits from T = 2000
    on). Richardson's 2 N_2T - N_T removes the C/T term; what is left, O(1/T^2) ~ 1e-8 at T = 4000,
    must agree with the quadrature of our integrand (error < 1e-9) to 2e-7, while a slip of a
    term or a factor in the integrand moves the bound by far more. (The prior term of `linear`,
    ~3e-9 here, is below this resolution: ``test_prior_terms_are_the_kl_at_time_zero``.)"""
    path = build("uniform", V4, schedule=schedule)
    x = 2

    def integrand(t):
        alpha, c, _ = path.alphas(torch.tensor([t], dtype=torch.float64))
        z = torch.arange(V4)[None]
        logits = torch.tensor(np.stack([prediction(t, k) for k in range(V4)]))[None]
        tt = torch.tensor([t], dtype=torch.float64)
        l = path.integrand(logits, z, torch.full((1, V4), x), tt).numpy()[0]
        return float(np.sum((float(alpha) * (np.arange(V4) == x) + float(c) / V4) * l))

    cont, err = integrate.quad(integrand, 0, 1, epsabs=1e-12, epsrel=1e-12, limit=500)
    cont += path.prior_term()
    assert err < 1e-9
    n1, n2 = discrete_nelbo(path, x, 4000), discrete_nelbo(path, x, 8000)
    assert abs(n1 - cont) < 2.0 / 4000 and abs(n2 - cont) < 2.0 / 8000  # O(1/T), |C| < 2
    assert abs((n1 - cont) / (n2 - cont) - 2) < 0.01  # first order: the error halves
    assert abs(2 * n2 - n1 - cont) < 2e-7


# --- reverse steps -------------------------------------------------------------------------------
@given(
    v=st.integers(2, 6),
    length=st.integers(1, 6),
    t=st.floats(0, 0.999),
    frac=st.floats(0.001, 1),
    schedule=st.sampled_from(SCHEDULES),
    seed=st.integers(0, 2**16),
)
def test_masked_reveal_step_keeps_revealed_tokens(v, length, t, frac, schedule, seed):
    g = torch.Generator().manual_seed(seed)
    path = build("masked", v, schedule=schedule)
    x1 = torch.randint(0, v, (4, length), generator=g)
    state = path.noise(x1, torch.full((4,), t), g)
    logits = torch.randn(4, length, v, generator=g)
    t_next = t + frac * (1 - t)
    new = path.ancestral_step(state, logits, torch.tensor(t), torch.tensor(t_next), g)
    revealed = state != v
    assert torch.equal(new[revealed], state[revealed])  # carried over, never changed
    assert ((new >= 0) & (new <= v)).all()
    last = path.ancestral_step(state, logits, torch.tensor(t), torch.tensor(1.0), g)
    assert (last < v).all() and torch.equal(last[revealed], state[revealed])  # all revealed at 1


def test_masked_reveal_rate():
    """Masked positions are revealed with probability (alpha(t_next) - alpha(t)) / (1 - alpha(t))."""
    v, n = 3, 200_000
    path = build("masked", v, schedule="cosine")
    state = torch.full((1, n), v)
    new = path.ancestral_step(
        state, torch.zeros(1, n, v), torch.tensor(0.3), torch.tensor(0.5), torch.Generator()
    )
    k = path.schedule
    a, b = (k(torch.tensor(s, dtype=torch.float64)) for s in (0.3, 0.5))
    p = float((b - a) / (1 - a))
    frac = float((new != v).double().mean())
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)


@given(
    v=st.integers(2, 6),
    t=st.floats(0, 0.999),
    frac=st.floats(0.001, 1),
    seed=st.integers(0, 2**16),
)
def test_uniform_posterior_is_bayes_on_the_forward_kernel(v, t, frac, seed):
    g = torch.Generator().manual_seed(seed)
    path = build("uniform", v, schedule="cosine")
    t_next = t + frac * (1 - t)
    a_n, _, _ = path.alphas(torch.tensor(t))
    a_c, c_c, _ = path.alphas(torch.tensor(t_next))
    probs = torch.softmax(torch.randn(1, 1, v, generator=g, dtype=torch.float64) * 2, -1)
    z = torch.randint(0, v, (1, 1), generator=g)
    got = uniform_posterior(probs, z, a_n, a_c, c_c)[0, 0]
    assert (got >= 0).all()
    got = got / got.sum()
    r = float(a_n / a_c) if float(a_c) > 0 else 1.0
    kernel = r * torch.eye(v, dtype=torch.float64) + (1 - r) / v  # q(z_n = k | z_c = j)
    marginal = a_c * probs[0, 0] + c_c / v
    want = kernel[:, int(z)] * marginal
    assert torch.allclose(got, want / want.sum(), atol=1e-12)


@pytest.mark.parametrize("name", DISCRETE)
def test_exact_denoiser_samples_the_data_distribution(name):
    """Independent positions with marginal p: the constant prediction p makes the reverse chain
    exact for any number of steps (see above), so 4-step samples have marginal p."""
    v = 3
    p = torch.tensor([0.15, 0.25, 0.6])
    path = build(name, v, schedule="cosine")
    out = sd.samplers.sample(
        constant(p.log()), path, 4000, 10, 4, generator=torch.Generator().manual_seed(0)
    )
    assert out.nfe == 4 and ((out.tokens >= 0) & (out.tokens < v)).all()
    counts = torch.bincount(out.tokens.flatten(), minlength=v).double()
    n = counts.sum()
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom: p-value 0.001


@pytest.mark.parametrize("name", DISCRETE + ["ar"])
def test_generate_keeps_prompt_and_default_sampler(name):
    v = 5
    path = build(name, v)
    model = tiny_model(path, v, max_len=12)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    lm = sd.DiffusionLM(model=model, path=path)
    prompt = torch.tensor([4, 0, 3])
    out = lm.generate(3, 10, 10, prompt=prompt, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 10) and ((out >= 0) & (out < v)).all()
    assert (out[:, :3] == prompt).all()
    with pytest.raises(ConfigError, match="use one of: ancestral"):
        lm.generate(2, 6, 6, sampler="euler")


# --- the autoregressive baseline -----------------------------------------------------------------
def test_ar_nll_is_the_product_of_conditionals():
    """The path's NLL of a sequence equals -sum_l log p(x_l | BOS, x_<l), each conditional from
    the model run on that prefix alone (checks the shift, BOS and causality)."""
    torch.manual_seed(0)
    v = 6
    path = build("ar", v)
    model = tiny_model(path, v)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randint(0, v, (2, 7))
    got = path.sequence_bound(model, x, torch.zeros(2))
    by_prefix = torch.zeros(2)
    for i in range(7):
        inputs = torch.cat([torch.full((2, 1), v), x[:, :i]], 1)
        logp = torch.log_softmax(model(inputs, None)[:, -1], -1)
        by_prefix -= logp.gather(-1, x[:, i : i + 1])[:, 0]
    assert torch.allclose(got, by_prefix / 7, atol=1e-5)


def test_ar_step_fills_one_position_and_needs_enough_steps():
    v = 4
    path = build("ar", v)
    state = torch.tensor([[2, 1, v, v, v], [0, v, v, v, v]])
    logits = torch.randn(2, 5, v)
    new = path.ancestral_step(state, logits, torch.tensor(0.2), torch.tensor(0.4))
    assert torch.equal(new[state != v], state[state != v])
    assert ((new != v).sum(-1) == (state != v).sum(-1) + 1).all()
    assert new[0, 2] != v and new[1, 1] != v
    model = tiny_model(path, v)
    with pytest.raises(ConfigError, match="one position per step.*steps >= length"):
        sd.samplers.sample(model, path, 2, 6, 5)
    out = sd.samplers.sample(model, path, 2, 6, 4, prompt=torch.tensor([1, 2]))
    assert (out.tokens[:, :2] == torch.tensor([1, 2])).all() and (out.tokens < v).all()
    # a non-uniform time grid: the step count, not the spacing of times, is what must suffice
    grid = torch.tensor([0.0, 0.01, 0.02, 0.5, 0.9, 1.0])
    out = sd.samplers.sample(model, path, 2, 5, 5, time_grid=grid)
    assert (out.tokens < v).all() and out.nfe == 5


def test_causal_model_is_causal_and_rebuilds():
    m = sd.models.build("causal", vocab_size=5, d_model=16, n_layers=2, n_heads=2, max_len=8,
                        tie_weights=False)  # fmt: skip
    assert m.causal and sd.models.MODELS.build(**m.config()).config() == m.config()
    out = m(torch.randint(0, 6, (2, 5)), None)
    assert torch.allclose(out, torch.zeros_like(out))  # zero-initialised head: uniform start
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ids = torch.randint(0, 6, (1, 6))
    changed = ids.clone()
    changed[0, 4] = (ids[0, 4] + 1) % 6
    a, b = m(ids, None), m(changed, None)
    assert torch.allclose(a[0, :4], b[0, :4]) and not torch.allclose(a[0, 4], b[0, 4])
    with pytest.raises(ConfigError, match="max_len"):
        m(torch.zeros(1, 9, dtype=torch.long), None)
