"""Dirichlet path: the conditional and marginal fields transport their densities (continuity
equation by finite differences), the flow factor against mpmath, finiteness at both time ends and
at the faces, the prior and x_t distributions, losses, config and sampling."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import special, stats

import simplexdiff as sd
from simplexdiff.errors import ConfigError
from simplexdiff.paths.dirichlet import (
    TABLE_NODES,
    DirichletPath,
    betainc_da,
    flow_factor,
    flow_factor_dy,
    tabulated_flow_factor,
)

mp = pytest.importorskip("mpmath")
F64 = torch.float64


def build(v, **kw):
    return sd.paths.build("dirichlet", vocab_size=v, **kw)


def s_(value):
    return torch.tensor(value, dtype=F64)


# --- registry, config, schedule --------------------------------------------------------------
def test_registry_config_and_errors():
    assert "dirichlet" in sd.paths.available()
    path = build(5, objective="fm", alpha_max=20.0, schedule="cosine")
    assert isinstance(path, DirichletPath) and path.family == "continuous"
    again = sd.paths.PATHS.build(**path.config())
    assert again.config() == path.config() and again.alpha_max == 20.0
    assert build(27).alpha_max == 50.0
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ConfigError, match="alpha_max"):
            build(5, alpha_max=bad)


def test_alpha_schedule_endpoints_monotone_and_rate():
    path = build(27)
    s = torch.linspace(0, 1, 101, dtype=F64)
    a = path.alpha(s)
    assert float(a[0]) == 0.0 and abs(float(a[-1]) - 50.0) < 1e-12
    assert (a.diff() > 0).all()
    h = 1e-6
    fd = (path.alpha(s + h) - path.alpha(s - h)) / (2 * h)
    assert torch.allclose(path.alpha_rate(s), fd, rtol=1e-8)


# --- the flow factor -------------------------------------------------------------------------
def _mp_dI_dp(p, q, x):
    """d I_x(p, q) / dp by mpmath (40 digits, numerical differentiation of ``betainc``), taken on
    the side of the median where the regularized value is small."""
    mp.mp.dps = 40
    p, x = mp.mpf(p), mp.mpf(x)
    if mp.betainc(p, q, 0, x, regularized=True) < 0.5:
        return mp.diff(lambda pp: mp.betainc(pp, q, 0, x, regularized=True), p)
    return -mp.diff(lambda pp: mp.betainc(q, pp, 0, 1 - x, regularized=True), p)


def test_flow_factor_and_incomplete_beta_derivative_match_mpmath():
    worst_c = worst_d = 0.0
    for q in (1, 2, 26):
        for a in (0.0, 0.5, 3.0, 50.0, 200.0):
            mode = max(a, 1) / (max(a, 1) + max(q - 1, 1))  # where flow_factor switches sides
            for x in (1e-9, 0.01, 0.3, mode * (1 - 1e-9), mode, 0.9, 1 - 1e-9):
                d_ref = _mp_dI_dp(a + 1, q, x)
                c_ref = -d_ref * mp.beta(a + 1, q) / (mp.mpf(x) ** a * (1 - mp.mpf(x)) ** q)
                c = float(flow_factor(np.array(x), np.array(a), q))
                d = float(betainc_da(np.array(a + 1), q, np.array(x)))
                worst_c = max(worst_c, abs(c - float(c_ref)) / float(c_ref))
                if abs(d_ref) > 1e-280:
                    worst_d = max(worst_d, float(abs(d - d_ref) / abs(d_ref)))
                else:  # below float64 range (e.g. a = 200 at x = 1e-9): underflows to 0
                    assert abs(d) < 1e-270
    assert worst_c < 1e-10, worst_c  # measured 6e-13
    assert worst_d < 1e-10, worst_d


def test_flow_factor_finite_with_exact_limits_at_the_faces():
    K = 27
    for a in (0.0, 1e-6, 1.0, 50.0, 1000.0):
        ys = np.array([0.0, 1e-300, 1e-16, 1e-8, 0.5, 1 - 1e-8, 1 - 1e-16, 1.0])
        c = flow_factor(ys, np.full_like(ys, a), K - 1)
        assert np.isfinite(c).all() and (c >= -1e-15).all()
        at_one = (special.digamma(a + K) - special.digamma(a + 1)) / (K - 1)
        assert abs(c[-1] - at_one) < 1e-12 * at_one
        assert abs(c[-2] - at_one) < 1e-10 * at_one
        assert abs(c[0]) < 1e-15 and abs(c[1]) < 1e-15
    for bad in ((np.array(-0.1), 1.0), (np.array(0.5), -1.0), (np.array(1.5), 1.0), (np.nan, 1.0)):
        with pytest.raises(ValueError):
            flow_factor(bad[0], np.array(bad[1]), 3)


@pytest.mark.parametrize("K", [2, 5, 27, 512])
def test_flow_factor_derivative_matches_finite_differences(K):
    """``dC/dy`` (closed form, the likelihood bound's divergence) against central differences of
    the quadrature: measured 1e-9 relative inside (1e-12, 0.999); finite at y = 0 and 1."""
    y = torch.tensor([1e-12, 1e-6, 1e-3, 0.05, 0.3, 0.6, 0.9, 0.999], dtype=F64)
    for a in (0.0, 0.7, 6.0, 50.0):
        aa = torch.full_like(y, a)
        c = torch.from_numpy(flow_factor(y.numpy(), aa.numpy(), K - 1))
        got = flow_factor_dy(y, aa, c, K - 1).numpy()
        h = np.minimum(1e-6 * y.numpy(), 1e-7)
        up = flow_factor(y.numpy() + h, aa.numpy(), K - 1)
        down = flow_factor(y.numpy() - h, aa.numpy(), K - 1)
        fd = (up - down) / (2 * h)
        assert np.abs(got / fd - 1).max() < 1e-6, (a, got, fd)
        ends = torch.tensor([0.0, 1.0], dtype=F64)
        c_ends = torch.from_numpy(flow_factor(ends.numpy(), np.full(2, a), K - 1))
        assert torch.isfinite(flow_factor_dy(ends, torch.full_like(ends, a), c_ends, K - 1)).all()


@pytest.mark.parametrize("K", [2, 27, 512])
def test_tabulated_flow_factor_matches_the_quadrature(K):
    """The sampler's table (linear in logit y) against the quadrature at random and edge points:
    within 2e-6 C(1, a) in float64 (measured up to 8.6e-7) and 1e-5 in float32; C(0, a) = 0."""
    gen = np.random.default_rng(K)
    y = np.concatenate(
        [
            gen.random(4000),
            10 ** gen.uniform(-30, 0, 4000),
            1 - 10 ** gen.uniform(-16, 0, 4000),
            [0.0, 1e-300, 1e-18, 0.5, 1 - 1e-16, 1.0],
        ]
    ).clip(0, 1)
    for a in (0.0, 0.5, 5.0, 50.0, 500.0):
        exact = flow_factor(y, np.full_like(y, a), K - 1)
        scale = exact[-1]  # C(1, a), the largest value
        for dtype, tol in ((F64, 2e-6), (torch.float32, 1e-5)):
            got = tabulated_flow_factor(torch.tensor(y, dtype=dtype), a, K - 1)
            assert got.dtype == dtype and torch.isfinite(got).all()
            err = np.abs(got.double().numpy() - exact).max() / scale
            assert err < tol, (a, dtype, err)
            assert got[-6] == 0  # y = 0


def test_field_uses_the_table_only_for_large_calls_and_agrees_with_the_quadrature():
    """A sampler-sized call (one time, many points; and several times) gives the quadrature's
    field to 1e-5 relative; a small call is the quadrature itself."""
    K = 20
    path = build(K)
    gen = torch.Generator().manual_seed(0)
    x = path.prior(128, 8, gen).double()
    assert x.numel() > 2 * TABLE_NODES
    p = torch.softmax(3 * torch.randn(128, 8, K, generator=gen, dtype=F64), -1)

    def by_quadrature(state, probs, t):
        a = path.alpha(t).expand(state.shape[:-1])[..., None].numpy()
        c = torch.from_numpy(flow_factor(state.numpy(), a, K - 1))
        pc = probs * c
        return path.alpha_rate(t)[..., None] * (pc - pc.sum(-1, keepdim=True) * state)

    for t in (s_(0.0), s_(0.3), s_(1.0), torch.tensor([[0.2], [0.7]], dtype=F64).repeat(64, 1)):
        got, want = path.field(x, p, t), by_quadrature(x, p, t)
        assert (got - want).abs().max() < 1e-5 * want.abs().max()
    small = x[:1, :1]
    assert torch.equal(
        path.field(small, p[:1, :1], s_(0.3)), by_quadrature(small, p[:1, :1], s_(0.3))
    )


# --- continuity equation: the fields transport their densities --------------------------------
def _log_dir(x, conc):
    return (
        special.gammaln(conc.sum(-1))
        - special.gammaln(conc).sum(-1)
        + ((conc - 1) * np.log(x)).sum(-1)
    )


def _mixture(path, x, s, weights):
    """Marginal density (in the chart of the first K - 1 coordinates) of ``sum_k w_k
    Dir(1 + alpha(s) e_k)`` and the posterior over k."""
    K = path.vocab_size
    a = float(path.alpha(s_(s)))
    logs = np.array([_log_dir(x, 1 + a * np.eye(K)[k]) for k in range(K)]) + np.log(weights)
    total = special.logsumexp(logs)
    return math.exp(total), np.exp(logs - total)


def _continuity_residual(path, x, s, weights, scale_field=1.0, d=1e-6):
    """``(d_s p + div(p v), size of the terms)`` at ``x`` by central differences in s and x."""
    K = path.vocab_size

    def flux(y):
        p, post = _mixture(path, y, s, weights)
        v = path.field(torch.tensor(y)[None, None], torch.tensor(post)[None, None], s_(s))
        return p * scale_field * v[0, 0].numpy()

    dp_ds = (_mixture(path, x, s + d, weights)[0] - _mixture(path, x, s - d, weights)[0]) / (2 * d)
    terms = [dp_ds]
    for i in range(K - 1):  # chart coordinates x_1..x_{K-1}; x_K = 1 - sum
        step = np.zeros(K)
        step[i], step[-1] = d, -d
        terms.append((flux(x + step)[i] - flux(x - step)[i]) / (2 * d))
    return sum(terms), max(abs(t) for t in terms)


POINTS = {
    2: [[0.05, 0.95], [0.3, 0.7], [0.5, 0.5], [0.8, 0.2], [0.97, 0.03]],
    3: [[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33]],
}
TIMES = [0.0, 0.25, 0.5, 0.8, 1.0]


@pytest.mark.parametrize("K", [2, 3])
def test_conditional_field_transports_the_conditional_density(K):
    """d_s Dir(x; 1 + alpha(s) e_k) + div(Dir u_s(x | e_k)) = 0, with u from ``field(x, e_k, s)``."""
    path = build(K, alpha_max=20.0)
    worst = worst_wrong = 0.0
    for k in range(K):
        weights = np.where(np.arange(K) == k, 1.0, 1e-300)  # posterior e_k, density Dir(1 + a e_k)
        for x in POINTS[K]:
            for s in TIMES:
                res, size = _continuity_residual(path, np.array(x), s, weights)
                worst = max(worst, abs(res) / size)
                wrong, size = _continuity_residual(path, np.array(x), s, weights, 1.01)
                worst_wrong = max(worst_wrong, abs(wrong) / size)
    assert worst < 1e-6, worst  # measured 6e-8: the O(d^2) truncation (6e-6 at d = 1e-5)
    assert worst_wrong > 1e-3  # a field 1% off is seen


def test_marginal_field_transports_the_marginal_density():
    """For data ``x1 ~ w`` the x1-prediction field with the exact posterior is the marginal field:
    d_s p_s + div(p_s v_s) = 0 for p_s = sum_k w_k Dir(1 + alpha(s) e_k)."""
    path = build(3, alpha_max=20.0)
    weights = np.array([0.5, 0.3, 0.2])
    worst = 0.0
    for x in POINTS[3]:
        for s in TIMES:
            res, size = _continuity_residual(path, np.array(x), s, weights)
            worst = max(worst, abs(res) / size)
    assert worst < 1e-6, worst


# --- finiteness at both time ends, vertices and faces ------------------------------------------
def test_field_finite_at_both_ends_vertices_and_faces():
    K = 5
    path = build(K)
    eye = torch.eye(K, dtype=F64)
    states = torch.stack(
        [
            *eye,
            torch.tensor([0.5, 0.5, 0, 0, 0], dtype=F64),
            torch.tensor([1 - 4e-300, 1e-300, 1e-300, 1e-300, 1e-300], dtype=F64),
            torch.tensor([1 - 1e-12, 1e-12, 0, 0, 0], dtype=F64),
            torch.full((K,), 1 / K, dtype=F64),
        ]
    )
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(len(states), K, generator=gen, dtype=F64), -1)
    for s in (0.0, 1.0):
        for p in (probs, eye[torch.arange(len(states)) % K]):
            v = path.field(states[None], p[None], s_(s))
            assert torch.isfinite(v).all()
            assert torch.allclose(v.sum(-1), torch.zeros(1, len(states), dtype=F64), atol=1e-12)
            step = path.move(states[None], v, 0.05)
            assert torch.isfinite(step).all() and (step >= 0).all()
        # at the vertex e_k, the field towards e_k vanishes
        assert torch.allclose(
            path.field(eye[None], eye[None], s_(s)), torch.zeros(1, K, K, dtype=F64)
        )


def test_interpolate_finite_at_both_ends_from_vertices_and_faces():
    K = 4
    path = build(K)
    x0 = torch.tensor(
        [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0.5, 0.5, 0, 0], [1e-300, 1 - 1e-300, 0, 0]], dtype=F64
    )
    x1 = path.vertex(torch.tensor([0, 0, 1, 0])).double()
    for s in (0.0, 1e-9, 0.5, 1.0):
        xt, ut = path.interpolate(x0[None], x1[None], s_(s))
        assert torch.isfinite(xt).all() and torch.isfinite(ut).all()
        assert (xt >= 0).all() and torch.allclose(xt.sum(-1), torch.ones(1, 4, dtype=F64))
    # a prior point at the target vertex stays there, one just off the face x_k = 0 leaves it (on
    # the face itself, a null set, C(0, a) = 0 holds it: x_k = 0 is a fixed point of the flow)
    xt, _ = path.interpolate(x0[None], x1[None], s_(1.0))
    assert torch.equal(xt[0, 0], x1[0]) and xt[0, 3, 0] > 1e-7 and torch.equal(xt[0, 1], x0[1])


# --- the path as a flow: x_t, its velocity, the prior -----------------------------------------
def _draw(v, t, seed, batch=3, length=2):
    path = build(v)
    gen = torch.Generator().manual_seed(seed)
    x0 = path.prior(batch, length, gen).double()
    x0 = x0 / x0.sum(-1, keepdim=True)
    ids = torch.randint(0, v, (batch, length), generator=gen)
    return path, x0, path.vertex(ids).double(), torch.full((batch, 1), t, dtype=F64)


@given(
    v=st.integers(2, 30),
    t=st.one_of(st.just(0.0), st.just(1.0), st.floats(0, 1)),
    seed=st.integers(0, 2**16),
)
def test_velocity_is_derivative_and_perfect_prediction_field_is_velocity(v, t, seed):
    path, x0, x1, tt = _draw(v, t, seed)
    xt, ut = path.interpolate(x0, x1, tt)
    assert torch.isfinite(xt).all() and torch.isfinite(ut).all()
    assert (xt >= 0).all() and torch.allclose(xt.sum(-1), torch.ones_like(xt[..., 0]))
    if t == 0.0:
        assert torch.allclose(xt, x0, atol=1e-12)
    h = 1e-6
    lo, hi = (tt - h).clamp(0, 1), (tt + h).clamp(0, 1)
    fd = (path.interpolate(x0, x1, hi)[0] - path.interpolate(x0, x1, lo)[0]) / (hi - lo)[..., None]
    assert torch.allclose(ut, fd, atol=1e-5)
    assert torch.allclose(path.field(xt, x1, tt), ut, atol=1e-12)


def test_prior_is_dirichlet_one():
    K, n = 5, 40000
    path = build(K)
    x = path.prior(n, 1, torch.Generator().manual_seed(0)).double()[:, 0]
    assert x.shape == (n, K) and (x >= 0).all()
    assert torch.allclose(x.sum(-1), torch.ones(n, dtype=F64), atol=1e-6)
    var = (K - 1) / (K**2 * (K + 1))
    cov = -1 / (K**2 * (K + 1))
    se = math.sqrt(var / n)
    assert (x.mean(0) - 1 / K).abs().max() < 5 * se
    c = torch.cov(x.T)
    assert (c.diagonal() - var).abs().max() < 0.05 * var
    assert (
        c - torch.diag(c.diagonal()) - cov * (1 - torch.eye(K, dtype=F64))
    ).abs().max() < 0.1 * -cov
    assert stats.kstest(x[:, 0].numpy(), stats.beta(1, K - 1).cdf).pvalue > 1e-3


@pytest.mark.parametrize("s", [0.3, 0.7, 1.0])
def test_xt_is_distributed_as_dirichlet_one_plus_alpha_e_k(s):
    K, n, k = 6, 20000, 2
    path = build(K)
    gen = torch.Generator().manual_seed(1)
    x0 = path.prior(n, 1, gen).double()
    x1 = path.vertex(torch.full((n, 1), k)).double()
    xt, _ = path.interpolate(x0, x1, s_(s))
    xt = xt[:, 0]
    a = float(path.alpha(s_(s)))
    conc = 1 + a * np.eye(K)[k]
    assert stats.kstest(xt[:, k].numpy(), stats.beta(1 + a, K - 1).cdf).pvalue > 1e-3
    other = 0 if k else 1
    assert stats.kstest(xt[:, other].numpy(), stats.beta(1, K + a - 1).cdf).pvalue > 1e-3
    mean = conc / conc.sum()
    sd_ = np.sqrt(mean * (1 - mean) / (conc.sum() + 1))
    assert (np.abs(xt.mean(0).numpy() - mean) < 5 * sd_ / math.sqrt(n)).all()
    # the proportions of the other coordinates stay Dir(1), independent of x_k
    rest = np.delete(xt.numpy(), k, 1)
    ratio = rest[:, 0] / rest.sum(1)
    assert stats.kstest(ratio, stats.beta(1, K - 2).cdf).pvalue > 1e-3
    assert abs(np.corrcoef(ratio, xt[:, k].numpy())[0, 1]) < 5 / math.sqrt(n)


# --- losses ------------------------------------------------------------------------------------
def test_training_draw_is_seeded_by_the_generator():
    path = build(7)
    ids = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(0))
    seen = []

    def denoiser(inp, t):
        seen.append(inp)
        return torch.zeros(*inp.shape)

    for seed in (3, 3, 4):
        path.training_loss(
            denoiser, ids, torch.tensor([0.2, 0.9]), torch.Generator().manual_seed(seed)
        )
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[0], seen[2])


def test_ce_and_fm_losses_by_hand():
    v, t = 4, 0.4
    logits = torch.tensor([2.0, 0.0, -1.0, 0.5])
    q = torch.softmax(logits, 0).double()
    x1 = torch.tensor([[0, 3, 1]])
    seen = {}

    def denoiser(inp, tt):
        seen["x"] = inp
        return logits.expand(*inp.shape[:2], v)

    ce = build(v).training_loss(denoiser, x1, torch.tensor([t]))
    logp = logits - torch.logsumexp(logits, 0)
    assert torch.allclose(ce.loss, -(logp[0] + logp[3] + logp[1]) / 3)

    path = build(v, objective="fm")
    out = path.training_loss(denoiser, x1, torch.tensor([t]), torch.Generator().manual_seed(0))
    x = seen["x"].double()[0]
    rate = float(path.alpha_rate(s_(t)))
    c = flow_factor(x.numpy(), np.full(x.shape, float(path.alpha(s_(t)))), v - 1)
    e = torch.eye(v, dtype=F64)
    total = 0.0
    for i, k in enumerate(x1[0].tolist()):
        u_cond = rate * c[i, k] * (e[k] - x[i])
        field = rate * sum(q[j] * c[i, j] * (e[j] - x[i]) for j in range(v))
        total += float((field - u_cond).square().sum())
    assert torch.allclose(out.loss.double(), torch.tensor(total / 3, dtype=F64), rtol=1e-4)
    assert torch.allclose(out.metrics["x1_ce"], ce.loss)


@pytest.mark.parametrize("objective", ["ce", "fm"])
def test_training_loss_finite_at_time_ends(objective):
    path = build(3, objective=objective)
    ids = torch.tensor([[0, 1, 2, 2]])
    model = sd.models.DiT(3, 16, 1, 2, 8)
    for u in (0.0, 1.0 - 1e-12):
        t = path.training_times(torch.tensor([u]))
        out = path.training_loss(model, ids, t)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # and at the very ends s = 0 and s = 1, beyond the training range
    for tt in (0.0, 1.0):
        out = path.training_loss(model, ids, torch.tensor([tt]))
        assert torch.isfinite(out.loss)


# --- sampling ----------------------------------------------------------------------------------
def test_perfect_predictor_follows_the_conditional_flow():
    """Euler steps of the field with p = e_k track the flow x0 -> x_1 ~ Dir(1 + alpha_max e_k) and
    decode to k; the final state is the peaked Dirichlet, not the vertex."""
    path = build(27)
    ids = torch.tensor([[3, 0, 26, 5, 5]])
    x0 = path.prior(1, 5, torch.Generator().manual_seed(0)).double()
    x = x0
    grid = torch.linspace(0, 1, 201, dtype=F64)
    logits = 50 * path.vertex(ids).double()
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        x = path.euler_step(x, logits, t, t_next)
        assert (x >= 0).all() and torch.allclose(x.sum(-1), torch.ones(1, 5, dtype=F64))
    exact, _ = path.interpolate(x0, path.vertex(ids).double(), s_(1.0))
    assert (x - exact).abs().max() < 1e-2
    assert torch.equal(path.decode(x), ids)
    assert (x.max(-1).values < 1).all()


def test_clamp_holds_vertices_and_sampler_runs():
    path = build(5)
    x = path.prior(2, 3)
    fixed = torch.tensor([[True, False, False], [False, False, True]])
    ids = torch.tensor([[4, 0, 0], [0, 0, 2]])
    y = path.clamp(x, fixed, ids)
    assert (path.decode(y)[fixed] == ids[fixed]).all() and torch.equal(y[~fixed], x[~fixed])
    out = sd.samplers.sample(
        lambda inp, t: torch.zeros(*inp.shape[:2], 5),
        path,
        2,
        6,
        8,
        prompt=torch.tensor([1, 2]),
        generator=torch.Generator().manual_seed(0),
    )
    assert out.tokens.shape == (2, 6) and (out.tokens[:, :2] == torch.tensor([1, 2])).all()
