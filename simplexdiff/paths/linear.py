"""Linear simplex path (the classic flat baseline, e.g. "linear FM" in Stark et al. 2024).

Prior ``x0 ~ Dirichlet(1)``; ``x_t = (1 - t) x0 + t e_k``; ``u_t = e_k - x0 = (e_k - x_t) / (1 - t)``;
Euclidean metric; the x1-prediction field is ``(p_theta - x_t) / (1 - t)`` (``p_theta`` through
``vanish_on_faces``) and an Euler step is a convex combination, so it never leaves the simplex.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simplexdiff.paths.continuous import FlatSimplexPath, vanish_on_faces


class LinearSimplex(FlatSimplexPath):
    """Straight lines on the flat simplex."""

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = t[..., None]
        return (1 - t) * x0 + t * x1, x1 - x0

    def field(self, state: Tensor, probs: Tensor, t: Tensor) -> Tensor:
        return (vanish_on_faces(probs, state) - state) / (1 - t[..., None])

    def log_conditional(self, state: Tensor, s: Tensor) -> Tensor:
        """``x_s = (1 - s) x0 + s e_k`` is the prior shrunk by ``1 - s`` towards ``e_k``: uniform,
        density ``(V - 1)! / (1 - s)^{V-1}``, on the sub-simplex ``{x : x_k >= s}``."""
        s = torch.as_tensor(s, dtype=state.dtype, device=state.device)[..., None]
        tol = 16 * torch.finfo(state.dtype).eps  # x_k = (1 - s) x0_k + s rounds just below s
        inside = (state >= s - tol) & (state >= -tol).all(-1, keepdim=True)
        log_p = math.lgamma(self.dim) - (self.dim - 1) * torch.log1p(-s)
        log_p = log_p.expand_as(state)
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))
