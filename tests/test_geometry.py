"""Fisher-Rao geometry against geoopt and closed forms, at the edges (one-hot points, V = 2)."""

import math

import geoopt
import torch
from hypothesis import given
from hypothesis import strategies as st

from simplexdiff import geometry as G

torch.set_default_dtype(torch.float32)


@st.composite
def simplex_points(draw, vocab=None, allow_vertex=True):
    """A probability vector in float64: a random interior point or (sometimes) a vertex."""
    v = draw(st.integers(2, 12)) if vocab is None else vocab
    if allow_vertex and draw(st.booleans()) and draw(st.booleans()):
        k = draw(st.integers(0, v - 1))
        return torch.nn.functional.one_hot(torch.tensor(k), v).double()
    w = torch.tensor(
        draw(st.lists(st.floats(1e-3, 1.0), min_size=v, max_size=v)), dtype=torch.float64
    )
    return w / w.sum()


@given(st.data())
def test_distance_matches_closed_form_and_geoopt(data):
    p = data.draw(simplex_points())
    q = data.draw(simplex_points(vocab=len(p)))
    d = G.fisher_rao_distance(p, q)
    closed = 2 * torch.acos(torch.sqrt(p * q).sum().clamp(-1, 1))
    assert torch.allclose(d, closed, atol=1e-6)
    scaled = geoopt.Scaled(geoopt.Sphere(), scale=2.0)
    if d > 0.01:  # geoopt clamps <x, y> at 1 - 1e-7, which blurs distances below ~1e-3
        assert torch.allclose(d, scaled.dist(p.sqrt(), q.sqrt()), atol=1e-6)


def test_distance_between_vertices_is_pi_and_zero_on_diagonal():
    e = torch.eye(5, dtype=torch.float64)
    d = G.fisher_rao_distance(e[:, None], e[None])
    assert torch.allclose(d, math.pi * (1 - torch.eye(5, dtype=torch.float64)), atol=1e-12)


@given(st.data())
def test_exp_log_roundtrip(data):
    x = data.draw(simplex_points()).sqrt()
    y = data.draw(simplex_points(vocab=len(x))).sqrt()
    u = G.logmap(x, y)
    assert abs(float((u * x).sum())) < 1e-9  # tangent
    assert torch.allclose(u.norm(), G.angle(x, y), atol=1e-6)
    assert torch.allclose(G.expmap(x, u), y, atol=1e-6)


@given(st.data(), st.floats(0.0, 1.0))
def test_geodesic_is_geoopt_exp_of_scaled_log(data, t):
    x0 = data.draw(simplex_points()).sqrt()
    x1 = data.draw(simplex_points(vocab=len(x0))).sqrt()
    tt = torch.tensor(t, dtype=torch.float64)
    xt = G.geodesic(x0, x1, tt)
    assert torch.isfinite(xt).all()
    assert torch.allclose(xt.norm(), torch.tensor(1.0, dtype=torch.float64), atol=1e-9)
    ref = geoopt.Sphere().expmap(x0, t * geoopt.Sphere().logmap(x0, x1))
    assert torch.allclose(xt, ref, atol=1e-6)


@given(st.data())
def test_geodesic_endpoints_exact(data):
    x0 = data.draw(simplex_points()).sqrt()
    x1 = data.draw(simplex_points(vocab=len(x0))).sqrt()
    assert torch.allclose(
        G.geodesic(x0, x1, torch.tensor(0.0, dtype=torch.float64)), x0, atol=1e-12
    )
    assert torch.allclose(
        G.geodesic(x0, x1, torch.tensor(1.0, dtype=torch.float64)), x1, atol=1e-12
    )


@given(st.data(), st.floats(0.0, 1.0))
def test_velocity_is_time_derivative_and_scaled_log(data, t):
    x0 = data.draw(simplex_points()).sqrt()
    x1 = data.draw(simplex_points(vocab=len(x0))).sqrt()
    tt = torch.tensor(t, dtype=torch.float64)
    u = G.geodesic_velocity(x0, x1, tt)
    assert torch.isfinite(u).all()
    h = 1e-6
    lo, hi = max(t - h, 0.0), min(t + h, 1.0)
    fd = (
        G.geodesic(x0, x1, torch.tensor(hi, dtype=torch.float64))
        - G.geodesic(x0, x1, torch.tensor(lo, dtype=torch.float64))
    ) / (hi - lo)
    assert torch.allclose(u, fd, atol=1e-5)
    assert torch.allclose(u.norm(), G.angle(x0, x1), atol=1e-9)  # constant speed theta
    if t < 0.999:
        xt = G.geodesic(x0, x1, tt)
        assert torch.allclose(u, G.logmap(xt, x1) / (1 - t), atol=1e-5)


@given(st.data())
def test_log_to_vertices_matches_geoopt_sum(data):
    x = data.draw(simplex_points()).sqrt()
    v = len(x)
    w = data.draw(simplex_points(vocab=v))
    ref = sum(
        w[k] * geoopt.Sphere().logmap(x, torch.eye(v, dtype=torch.float64)[k]) for k in range(v)
    )
    assert torch.allclose(G.log_to_vertices(x, w), ref, atol=1e-6)


def test_uniform_orthant_is_dirichlet_half():
    x = G.uniform_orthant((200_000, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    assert (x >= 0).all() and torch.allclose(x.norm(dim=-1), torch.ones(len(x), dtype=x.dtype))
    p = G.to_simplex(x)
    # Dirichlet(1/2, 1/2, 1/2): E p_i = 1/3, Var p_i = a_i (a0 - a_i) / (a0^2 (a0 + 1)) = 4/45
    assert torch.allclose(p.mean(0), torch.full((3,), 1 / 3, dtype=p.dtype), atol=3e-3)
    assert torch.allclose(p.var(0), torch.full((3,), 4 / 45, dtype=p.dtype), atol=2e-3)


def test_dirichlet_ones_moments():
    p = G.dirichlet_ones((200_000, 4), torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(p.sum(-1), torch.ones(len(p), dtype=p.dtype))
    # Dirichlet(1,1,1,1): E p_i = 1/4, Var p_i = 3 / (16 * 5)
    assert torch.allclose(p.mean(0), torch.full((4,), 0.25, dtype=p.dtype), atol=3e-3)
    assert torch.allclose(p.var(0), torch.full((4,), 3 / 80, dtype=p.dtype), atol=2e-3)


def test_projections_remove_drift_and_are_idempotent():
    x = torch.tensor([[0.6, -1e-7, 0.8]])
    y = G.project_to_orthant(x)
    assert (y >= 0).all() and torch.allclose(G.project_to_orthant(y), y)
    p = torch.tensor([[0.5, -1e-7, 0.5]])
    q = G.project_to_simplex(p)
    assert (q >= 0).all() and torch.allclose(q.sum(-1), torch.ones(1))
