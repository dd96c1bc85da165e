"""Masked (absorbing-state) diffusion: MDLM (Sahoo et al. 2024), LLaDA (Nie et al. 2025).

State: ids with an extra MASK id ``V`` (the spare embedding row of the backbone). Forward process,
in our time (``t = 0`` noise, ``t = 1`` data): each position independently shows its clean token
with probability ``alpha(t)`` and MASK otherwise (``alpha = schedule(t)``: ``loglinear`` ``t``,
``cosine`` ``1 - cos(pi t / 2)``, ``linear`` MDLM's ``exp(-10 (1 - t))``).

Parameterisation (SUBS, MDLM section 3.2): the denoiser's head has ``V`` logits only, so MASK is
never predicted (its probability is exactly 0, not a large negative logit); revealed positions are
carried over unchanged by the reverse step, so they contribute nothing to the bound.

NELBO. MDLM (eq. 10) writes, in its time ``s`` with ``alpha`` decreasing,
``int_0^1 alpha'_s / (1 - alpha_s) E_q sum_l log <x_theta(z_s)_l, x_l> ds`` over masked positions.
With ``t = 1 - s`` (``alpha`` increasing, ``d alpha / dt > 0``) the integrand per token is

    l(t, z_t) = alpha'(t) / (1 - alpha(t)) * (1 / L) sum_{l : z_t^l = MASK} -log p_theta(x_l | z_t, t)

and the bound is ``alpha(0) log V + int_0^1 E_q l dt``. The prior term is 0 except for the
``linear`` schedule, whose ``alpha(0) = exp(-10)``: there the generative prior is ``p(z_0) = (1 -
alpha(0)) MASK + alpha(0) Uniform(V)`` per position (what ``prior`` draws), and
``KL(q(z_0 | x) || p(z_0)) = alpha(0) log V``. With equal logits ``l`` has expectation
``alpha'(t) log V`` and the bound is ``log V`` for every schedule.

Reverse step (``ancestral``): from ``t`` to ``t_next``, each masked position is revealed with
probability ``(alpha(t_next) - alpha(t)) / (1 - alpha(t))``, its token drawn from ``p_theta``
(float64); revealed positions never change. At ``t_next = 1`` every position is revealed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simplexdiff.paths.base import cross_entropy
from simplexdiff.paths.discrete import DiscretePath, categorical, per_row


class Masked(DiscretePath):
    """Absorbing-state diffusion with MASK id ``vocab_size``."""

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def input_vocab_size(self) -> int:
        return self.vocab_size + 1

    def prior_term(self) -> float:
        return self.schedule.at_zero * math.log(self.vocab_size)

    def prior(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """All MASK (with probability ``alpha(0)`` a position is a uniform token instead: only the
        ``linear`` schedule has ``alpha(0) > 0``)."""
        state = torch.full((batch, length), self.mask_id, dtype=torch.long, device=device)
        if self.schedule.at_zero == 0:
            return state
        u = torch.rand(batch, length, generator=generator, device=device, dtype=torch.float64)
        ids = torch.randint(0, self.vocab_size, (batch, length), generator=generator, device=device)
        return torch.where(u < self.schedule.at_zero, ids, state)

    def noise(self, x1: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _, masked_prob, _ = self.alphas(t)
        u = torch.rand(x1.shape, generator=generator, device=x1.device, dtype=torch.float64)
        return torch.where(u < per_row(masked_prob, x1), self.mask_id, x1)

    def integrand(self, logits: Tensor, z: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        alpha, masked_prob, dalpha = self.alphas(t)
        # alpha' / (1 - alpha); at alpha = 1 nothing is masked and the weight is never used
        weight = torch.where(masked_prob > 0, dalpha / masked_prob.clamp_min(1e-300), 0.0)
        ce = cross_entropy(logits, x1)
        return torch.where(z == self.mask_id, per_row(weight, ce).to(ce.dtype) * ce, 0.0)

    def ancestral_step(
        self,
        state: Tensor,
        logits: Tensor,
        t: Tensor,
        t_next: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        _, c, _ = self.alphas(t)
        _, c_next, _ = self.alphas(t_next)
        # (alpha_next - alpha) / (1 - alpha) = 1 - (1 - alpha_next) / (1 - alpha)
        reveal_prob = torch.where(c > 0, 1 - c_next / c.clamp_min(1e-300), 1.0)
        u = torch.rand(state.shape, generator=generator, device=state.device, dtype=torch.float64)
        reveal = (state == self.mask_id) & (u < per_row(reveal_prob, state))
        tokens = categorical(torch.softmax(logits.double(), -1), generator)
        return torch.where(reveal, tokens, state)
