"""The statistical manifold of categorical distributions in the sphere chart ``x = sqrt(p)``.

The map ``p -> sqrt(p)`` is an isometry (up to a factor 2) from the probability simplex with the
Fisher-Rao metric onto the positive orthant of the unit sphere with the round metric: the
Fisher-Rao metric is 4x the round metric, so ``d_FR(p, q) = 2 * arccos(sum_i sqrt(p_i q_i))``
(Amari & Nagaoka 2000; Davis et al. 2024, *Fisher Flow Matching*).

Tangent vectors here are ambient vectors of the unit sphere (``<x, u> = 0``); exp/log/transport are
geoopt's ``Sphere`` maps. What geoopt lacks is written here: a boundary-safe angle, the geodesic in
closed form with its velocity, and the log map from one point to every vertex at once.
"""

from __future__ import annotations

import geoopt
import torch
from torch import Tensor

_SPHERE = geoopt.Sphere()
FISHER_RAO_SCALE = 2.0  # d_FR = 2 * round distance; <u, v>_FR = 4 * <u, v>


def to_sphere(p: Tensor) -> Tensor:
    """Sphere chart of a probability vector: ``x = sqrt(p)``."""
    return p.clamp_min(0).sqrt()


def to_simplex(x: Tensor) -> Tensor:
    """Inverse chart: ``p = x**2`` (a probability vector when ``|x| = 1``)."""
    return x.square()


def angle(x: Tensor, y: Tensor) -> Tensor:
    """Round distance between unit vectors, ``arccos<x, y>``, computed as ``2 atan2(|x-y|, |x+y|)``.

    This form is accurate at both ends (equal points and orthogonal vertices), unlike ``arccos`` of a
    rounded inner product, and its gradient is finite away from ``x = y``.
    """
    return 2 * torch.atan2((x - y).norm(dim=-1), (x + y).norm(dim=-1))


def fisher_rao_distance(p: Tensor, q: Tensor) -> Tensor:
    """``d_FR(p, q) = 2 arccos(sum_i sqrt(p_i q_i))`` over the last axis."""
    return FISHER_RAO_SCALE * angle(to_sphere(p), to_sphere(q))


def fisher_rao_inner(u: Tensor, v: Tensor) -> Tensor:
    """Fisher-Rao inner product of two sphere-chart tangent vectors: ``4 <u, v>``."""
    return FISHER_RAO_SCALE**2 * (u * v).sum(-1)


def sin_ratio(a: Tensor | float, theta: Tensor) -> Tensor:
    """``sin(a * theta) / sin(theta)``, finite at ``theta = 0`` (limit ``a``); ``0 <= theta < pi``."""
    return a * torch.sinc(a * theta / torch.pi) / torch.sinc(theta / torch.pi)


def geodesic(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """Point at time ``t`` on the great circle from ``x0`` (t=0) to ``x1`` (t=1).

    ``x_t = [sin((1-t) theta) x0 + sin(t theta) x1] / sin(theta)``, ``theta = arccos<x0, x1>``;
    ``t`` broadcasts against ``x0[..., 0]``.
    """
    theta = angle(x0, x1).unsqueeze(-1)
    t = t.unsqueeze(-1)
    return sin_ratio(1 - t, theta) * x0 + sin_ratio(t, theta) * x1


def geodesic_velocity(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """``d/dt geodesic(x0, x1, t) = theta [cos(t theta) x1 - cos((1-t) theta) x0] / sin(theta)``.

    Equals ``log_{x_t}(x1) / (1 - t)`` for ``t < 1`` and stays finite at ``t = 1``.
    """
    theta = angle(x0, x1).unsqueeze(-1)
    t = t.unsqueeze(-1)
    scale = 1 / torch.sinc(theta / torch.pi)  # theta / sin(theta)
    return scale * (torch.cos(t * theta) * x1 - torch.cos((1 - t) * theta) * x0)


def expmap(x: Tensor, u: Tensor) -> Tensor:
    """Exponential map of the unit sphere at ``x`` (geoopt)."""
    return _SPHERE.expmap(x, u)


def logmap(x: Tensor, y: Tensor) -> Tensor:
    """Logarithm map of the unit sphere at ``x`` towards ``y`` (geoopt)."""
    return _SPHERE.logmap(x, y)


def proju(x: Tensor, u: Tensor) -> Tensor:
    """Projection of an ambient vector onto the tangent space at ``x`` (geoopt)."""
    return _SPHERE.proju(x, u)


def transp(x: Tensor, y: Tensor, v: Tensor) -> Tensor:
    """Vector transport of ``v`` from ``x`` to ``y`` (geoopt's projection transport)."""
    return _SPHERE.transp(x, y, v)


def project_to_orthant(x: Tensor) -> Tensor:
    """Nearest point of the closed positive orthant of the sphere (removes rounding drift)."""
    x = x.clamp_min(0)
    return x / x.norm(dim=-1, keepdim=True)


def arccos_ratio(x: Tensor) -> Tensor:
    """``theta / sin(theta)`` with ``theta = arccos(x)``, for ``x`` in ``[-1, 1]`` (the whole
    sphere; clamped a hair above -1, where it diverges): smooth with finite gradients up to
    ``x = 1`` (where ``arccos`` alone has an infinite derivative), through its expansion
    ``1 + (1 - x) / 3`` there."""
    x = x.clamp(-1 + 1e-7, 1)
    near = x > 1 - 1e-6
    safe = torch.where(near, torch.zeros_like(x), x)  # keeps NaN out of the unused branch's grad
    exact = torch.acos(safe) / torch.sqrt((1 - safe) * (1 + safe))
    return torch.where(near, 1 + (1 - x) / 3, exact)


def log_to_vertices(x: Tensor, weights: Tensor) -> Tensor:
    """``sum_k w_k log_x(e_k)`` in O(V): the weighted mean of log maps to every vertex (``weights``
    may cover only the first vertices: the others get weight 0).

    With ``theta_k = arccos(x_k)``, ``log_x(e_k) = theta_k / sin(theta_k) * (e_k - x_k x)``, so the
    sum is ``c - <c, x> x`` with ``c_k = w_k theta_k / sin(theta_k)``. Used by the x1-prediction
    field ``v(x) = sum_k p(k | x) log_x(e_k) / (1 - t)`` (Davis et al. 2024).
    """
    c = weights * arccos_ratio(x[..., : weights.shape[-1]])
    if c.shape[-1] < x.shape[-1]:  # no copy in the common case of one weight per vertex
        c = torch.nn.functional.pad(c, (0, x.shape[-1] - c.shape[-1]))
    return c - (c * x).sum(-1, keepdim=True) * x


def uniform_orthant(
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniform (Fisher-Rao volume) draw on the positive orthant: ``|z| / ||z||``, ``z ~ N(0, I)``.

    In the simplex chart this is ``Dirichlet(1/2, ..., 1/2)``, the Jeffreys prior.
    """
    z = torch.randn(shape, generator=generator, device=device, dtype=dtype).abs()
    return z / z.norm(dim=-1, keepdim=True)
