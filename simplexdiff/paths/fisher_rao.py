"""Fisher-Rao path: geodesics of the statistical manifold in the sphere chart ``x = sqrt(p)``.

Prior: uniform on the positive orthant (Fisher-Rao volume; ``p ~ Dirichlet(1/2)``). Path: the great
circle ``x_t = [sin((1-t)theta) x0 + sin(t theta) e_k] / sin(theta)``, ``theta = arccos(x0_k)``, with
velocity ``u_t = log_{x_t}(e_k) / (1 - t)``. Metric: Fisher-Rao, 4x the round metric. The denoiser
reads ``p_t = x_t**2``. References: Davis et al. 2024 (*Fisher Flow Matching*); Cheng et al. 2024
(*Categorical Flow Matching on Statistical Manifolds*).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simplexdiff.geometry import (
    expmap,
    fisher_rao_inner,
    geodesic,
    geodesic_velocity,
    log_to_vertices,
    project_to_orthant,
    to_simplex,
    transp,
    uniform_orthant,
)
from simplexdiff.paths.continuous import ContinuousPath


class FisherRao(ContinuousPath):
    """Fisher-Rao geodesic flow on the simplex (sphere chart)."""

    def prior(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        return uniform_orthant((batch, length, self.vocab_size), generator, device)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return geodesic(x0, x1, t), geodesic_velocity(x0, x1, t)

    def field(self, state: Tensor, probs: Tensor, t: Tensor) -> Tensor:
        return log_to_vertices(state, probs) / (1 - t[..., None])

    def move(self, state: Tensor, velocity: Tensor, h: Tensor | float) -> Tensor:
        return project_to_orthant(expmap(state, h * velocity))

    def transport(self, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
        return transp(x, y, u)

    def sq_norm(self, u: Tensor) -> Tensor:
        return fisher_rao_inner(u, u)

    def vertex(self, ids: Tensor) -> Tensor:
        return self._one_hot(ids)  # sqrt(e_k) = e_k

    def model_input(self, state: Tensor) -> Tensor:
        return to_simplex(state)
