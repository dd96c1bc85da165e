"""Fisher-Rao path: geodesics of the statistical manifold in the sphere chart ``x = sqrt(p)``.

Prior: uniform on the positive orthant (Fisher-Rao volume; ``p ~ Dirichlet(1/2)``). Path: the great
circle ``x_t = [sin((1-t)theta) x0 + sin(t theta) e_k] / sin(theta)``, ``theta = arccos(x0_k)``, with
velocity ``u_t = log_{x_t}(e_k) / (1 - t)``; the x1-prediction field is
``sum_k p_theta(k) log_{x_t}(e_k) / (1 - t)`` (``p_theta`` through ``vanish_on_faces``).
Metric: Fisher-Rao, 4x the round metric. The denoiser reads ``p_t = x_t**2``. References: Davis et
al. 2024 (*Fisher Flow Matching*); Cheng et al. 2024 (*Categorical Flow Matching on Statistical
Manifolds*).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simplexdiff.geometry import (
    expmap,
    fisher_rao_inner,
    geodesic,
    geodesic_velocity,
    log_to_vertices,
    project_to_orthant,
    proju,
    sin_ratio,
    to_simplex,
    transp,
    uniform_orthant,
)
from simplexdiff.paths.continuous import ContinuousPath, vanish_on_faces


class FisherRao(ContinuousPath):
    """Fisher-Rao geodesic flow on the simplex (sphere chart)."""

    def prior(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        return uniform_orthant((batch, self.positions(length), self.dim), generator, device)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return geodesic(x0, x1, t), geodesic_velocity(x0, x1, t)

    def field(self, state: Tensor, probs: Tensor, t: Tensor) -> Tensor:
        return log_to_vertices(state, vanish_on_faces(probs, state)) / (1 - t[..., None])

    def move(self, state: Tensor, velocity: Tensor, h: Tensor | float) -> Tensor:
        return project_to_orthant(self.exp(state, velocity, h))

    def exp(self, state: Tensor, velocity: Tensor, h: Tensor | float) -> Tensor:
        return expmap(state, h * velocity)

    def tangent(self, state: Tensor, u: Tensor) -> Tensor:
        return proju(state, u)

    def prior_log_density(self, state: Tensor) -> Tensor:
        """Uniform on the positive orthant of ``S^{V-1}``: ``2^V / |S^{V-1}|`` with respect to the
        round sphere's area, ``|S^{V-1}| = 2 pi^{V/2} / Gamma(V/2)``."""
        return torch.full_like(state[..., 0], _log_orthant_density(self.dim))

    def log_conditional(self, state: Tensor, s: Tensor) -> Tensor:
        """``x_s = geodesic(x0, e_k, s)`` contracts the geodesic polar angle about ``e_k`` by
        ``1 - s`` (``theta_s = (1 - s) theta_0``, direction kept). In those coordinates the area is
        ``sin^{V-2}(theta) d theta d omega``, so for ``theta = arccos(x_k) <= (1 - s) pi / 2``::

            log p_s(x | e_k) = log p_0 + (V - 2) log[sin(theta / (1 - s)) / sin(theta)] - log(1 - s)

        and ``-inf`` beyond (``x0`` would leave the orthant)."""
        s = torch.as_tensor(s, dtype=state.dtype, device=state.device)[..., None]
        theta = torch.acos(state.clamp(-1, 1))
        inside = (theta <= (1 - s) * (torch.pi / 2)) & (state >= 0).all(-1, keepdim=True)
        a = 1 / (1 - s)
        ratio = sin_ratio(a, torch.where(inside, theta, torch.zeros_like(theta)))  # finite always
        log_p = _log_orthant_density(self.dim) + (self.dim - 2) * torch.log(ratio) + torch.log(a)
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))

    def transport(self, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
        return transp(x, y, u)

    def sq_norm(self, u: Tensor) -> Tensor:
        return fisher_rao_inner(u, u)

    def vertex(self, ids: Tensor) -> Tensor:
        return self._one_hot(ids)  # sqrt(e_k) = e_k

    def barycenter(self) -> float:
        return math.sqrt(1 / self.dim)

    def model_input(self, state: Tensor) -> Tensor:
        return to_simplex(state)


def _log_orthant_density(v: int) -> float:
    return v * math.log(2) - (math.log(2) + v / 2 * math.log(math.pi) - math.lgamma(v / 2))
