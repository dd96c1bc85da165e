"""Linear simplex path (the classic flat baseline, e.g. "linear FM" in Stark et al. 2024).

Prior ``x0 ~ Dirichlet(1)``; ``x_t = (1 - t) x0 + t e_k``; ``u_t = e_k - x0 = (e_k - x_t) / (1 - t)``;
Euclidean metric; the x1-prediction field is ``(p_theta - x_t) / (1 - t)`` and an Euler step is a
convex combination, so it never leaves the simplex.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simplexdiff.geometry import dirichlet_ones
from simplexdiff.paths.continuous import FlatSimplexPath


class LinearSimplex(FlatSimplexPath):
    """Straight lines on the flat simplex."""

    def prior(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        return dirichlet_ones((batch, length, self.vocab_size), generator, device)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = t[..., None]
        return (1 - t) * x0 + t * x1, x1 - x0

    def field(self, state: Tensor, probs: Tensor, t: Tensor) -> Tensor:
        return (probs - state) / (1 - t[..., None])
