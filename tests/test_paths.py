"""Continuous paths: closed forms, endpoints, velocity = d/dt of the path, losses by hand."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import simplexdiff as sd
from simplexdiff.errors import ConfigError

CONTINUOUS = ["fisher_rao", "linear"]


def build(name, v, **kw):
    return sd.paths.build(name, vocab_size=v, **kw)


def test_registry_and_errors():
    assert set(CONTINUOUS) <= set(sd.paths.available())
    with pytest.raises(ConfigError, match="unknown path 'fisher'") as e:
        sd.paths.build("fisher", vocab_size=27)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown option 'temperature'"):
        sd.paths.build("fisher_rao", vocab_size=27, temperature=2.0)
    with pytest.raises(ConfigError, match="unknown objective"):
        sd.paths.build("linear", vocab_size=27, objective="mse")
    with pytest.raises(ConfigError, match="vocab_size"):
        sd.paths.build("linear", vocab_size=1)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_config_rebuilds(name):
    path = build(name, 5, objective="fm")
    again = sd.paths.PATHS.build(**path.config())
    assert again.config() == path.config()


def _draw(name, v, t, seed, batch=3, length=2):
    path = build(name, v)
    gen = torch.Generator().manual_seed(seed)
    x0 = path.prior(batch, length, gen).double()
    ids = torch.randint(0, v, (batch, length), generator=gen)
    t = torch.full((batch, 1), t, dtype=torch.float64)
    return path, x0, ids, path.vertex(ids).double(), t


@pytest.mark.parametrize("name", CONTINUOUS)
@given(
    v=st.integers(2, 30),
    t=st.one_of(st.just(0.0), st.just(1.0), st.floats(0, 1)),
    seed=st.integers(0, 2**16),
)
def test_path_finite_endpoints_and_velocity_is_derivative(name, v, t, seed):
    path, x0, _, x1, tt = _draw(name, v, t, seed)
    xt, ut = path.interpolate(x0, x1, tt)
    assert torch.isfinite(xt).all() and torch.isfinite(ut).all()
    if t == 0.0:
        assert torch.allclose(xt, x0, atol=1e-12)
    if t == 1.0:
        assert torch.allclose(xt, x1, atol=1e-12)
    p = path.model_input(xt)
    assert (p >= -1e-12).all() and torch.allclose(p.sum(-1), torch.ones_like(p[..., 0]))
    h = 1e-6
    lo, hi = (tt - h).clamp(0, 1), (tt + h).clamp(0, 1)
    fd = (path.interpolate(x0, x1, hi)[0] - path.interpolate(x0, x1, lo)[0]) / (hi - lo)[..., None]
    assert torch.allclose(ut, fd, atol=1e-5)


@pytest.mark.parametrize("name", CONTINUOUS)
@given(v=st.integers(2, 30), t=st.floats(0, 0.99), seed=st.integers(0, 2**16))
def test_perfect_prediction_field_is_conditional_velocity(name, v, t, seed):
    """With p(. | x_t) = e_k the x1-prediction field equals u_t, and one Euler step of length
    1 - t lands on the vertex."""
    path, x0, _, x1, tt = _draw(name, v, t, seed)
    xt, ut = path.interpolate(x0, x1, tt)
    assert torch.allclose(path.field(xt, x1, tt), ut, atol=1e-6)
    end = path.move(xt, path.field(xt, x1, tt), 1 - tt[..., None])
    assert torch.allclose(end, x1, atol=1e-6)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_ce_loss_by_hand(name):
    v, logits = 4, torch.tensor([2.0, 0.0, -1.0, 0.5])
    path = build(name, v)
    x1 = torch.tensor([[0, 3, 1]])
    out = path.training_loss(
        lambda inp, t: logits.expand(*inp.shape[:2], v), x1, torch.tensor([0.3])
    )
    logp = logits - torch.logsumexp(logits, 0)
    assert torch.allclose(out.loss, -(logp[0] + logp[3] + logp[1]) / 3)


def test_linear_fm_loss_by_hand():
    """For the linear path (p - x_t)/(1 - t) - (e_k - x0) = (p - e_k)/(1 - t) whatever x0 is
    (``p``: the prediction after ``vanish_on_faces``, by hand here, at the state the model saw)."""
    v, t = 3, 0.25
    logits = torch.tensor([1.0, 0.0, -1.0])
    path = build("linear", v, objective="fm")
    x1 = torch.tensor([[0, 2]])
    seen = {}

    def denoiser(inp, tt):
        seen["x"] = inp
        return logits.expand(1, 2, v)

    out = path.training_loss(denoiser, x1, torch.tensor([t]))
    w = torch.softmax(logits, 0) * (1 - torch.exp(-seen["x"][0] / 0.01))
    q = w / w.sum(-1, keepdim=True)
    e = torch.eye(v)
    by_hand = (((q[0] - e[0]) ** 2).sum() + ((q[1] - e[2]) ** 2).sum()) / 2 / (1 - t) ** 2
    assert torch.allclose(out.loss, by_hand, rtol=1e-5)
    assert torch.allclose(
        out.metrics["x1_ce"], torch.nn.functional.cross_entropy(logits.expand(2, v), x1[0])
    )


def test_fisher_rao_fm_loss_by_hand():
    """Fisher-Rao FM: 4 |sum_j p_j log_x(e_j) - log_x(e_k)|^2 / (1 - t)^2 at the path's x_t."""
    v, t = 3, 0.4
    path = build("fisher_rao", v, objective="fm")
    logits = torch.tensor([0.3, -0.2, 1.0])
    q = torch.softmax(logits, 0).double()
    x1 = torch.tensor([[1]])
    seen = {}

    def denoiser(inp, tt):
        seen["p"] = inp
        return logits.expand(1, 1, v)

    out = path.training_loss(denoiser, x1, torch.tensor([t]), torch.Generator().manual_seed(0))
    x = seen["p"].double().sqrt()[0, 0]
    e = torch.eye(v, dtype=torch.float64)
    logs = [
        math.acos(float(x[j])) / math.sqrt(1 - float(x[j]) ** 2) * (e[j] - x[j] * x)
        for j in range(v)
    ]
    diff = sum(q[j] * logs[j] for j in range(v)) - logs[1]
    assert torch.allclose(out.loss.double(), 4 * diff.square().sum() / (1 - t) ** 2, rtol=1e-4)


@pytest.mark.parametrize("name", CONTINUOUS)
@pytest.mark.parametrize("objective", ["ce", "fm"])
def test_training_loss_finite_at_time_ends(name, objective):
    path = build(name, 2, objective=objective)
    ids = torch.tensor([[0, 1, 1]])
    model = sd.models.DiT(2, 16, 1, 2, 8)
    for u in (0.0, 1.0 - 1e-12):
        t = path.training_times(torch.tensor([u]))
        assert float(t) <= 1 - path.t_eps + 1e-7
        out = path.training_loss(model, ids, t)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_prior_lies_on_the_path_chart(name):
    path = build(name, 7)
    x = path.prior(4, 5, torch.Generator().manual_seed(1))
    p = path.model_input(x)
    assert p.shape == (4, 5, 7) and (p >= 0).all()
    assert torch.allclose(p.sum(-1), torch.ones(4, 5), atol=1e-5)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_clamp_holds_vertices(name):
    path = build(name, 5)
    x = path.prior(2, 3)
    fixed = torch.tensor([[True, False, False], [False, False, True]])
    ids = torch.tensor([[4, 0, 0], [0, 0, 2]])
    y = path.clamp(x, fixed, ids)
    assert (path.decode(y)[fixed] == ids[fixed]).all()
    assert torch.equal(y[~fixed], x[~fixed])


# kappa(0) where a schedule documents it is not exactly 0: MDLM's linear, exp(-10) = 4.54e-5
KAPPA_AT_ZERO = {"linear": math.exp(-10)}


@pytest.mark.parametrize("name", sd.paths.schedules.SCHEDULES.names())
@given(t=st.floats(0, 1))
def test_schedules_endpoints_monotone_and_derivative(name, t):
    k = sd.paths.schedules.SCHEDULES.build(name)
    zero, one = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    at_zero = KAPPA_AT_ZERO.get(name, 0.0)
    assert k.at_zero == at_zero and abs(float(k(zero)) - at_zero) <= 1e-15 * max(at_zero, 1e-300)
    assert abs(float(k(one)) - 1.0) < 1e-12
    tt = torch.tensor(t, dtype=torch.float64)
    assert abs(float(k.complement(tt) + k(tt)) - 1.0) < 1e-15
    h = 1e-7  # one-sided at the ends: error h kappa''/2, 5e-6 for linear's kappa''(1) = 100
    lo, hi = max(t - h, 0.0), min(t + h, 1.0)
    fd = (k(torch.tensor(hi, dtype=torch.float64)) - k(torch.tensor(lo, dtype=torch.float64))) / (
        hi - lo
    )
    assert abs(float(k.derivative(tt) - fd)) < 1e-5
    assert float(k.derivative(tt)) >= 0


@pytest.mark.parametrize("name", CONTINUOUS)
def test_cosine_schedule_training_range_and_exact_steps(name):
    path = build(name, 6, schedule="cosine")
    s_max = path.schedule(path.training_times(torch.tensor([1.0])))
    assert abs(float(s_max) - (1 - path.t_eps)) < 1e-6
    # with a perfect predictor, Euler steps on any grid end exactly at the vertex
    ids = torch.tensor([[3, 0, 5]])
    x = path.prior(1, 3, torch.Generator().manual_seed(0))
    logits = 50 * path.vertex(ids)
    grid = torch.linspace(0, 1, 5)
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        x = path.euler_step(x, logits, t, t_next)
    assert torch.allclose(x, path.vertex(ids), atol=1e-4)
