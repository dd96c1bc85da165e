"""Uniform-state diffusion: UDLM (Schiff et al. 2024, *Simple Guidance Mechanisms for Discrete
Diffusion Models*) and Duo (Sahoo et al. 2025, *The Diffusion Duality*).

State: ids, no extra symbol. Forward process in our time (``t = 0`` noise, ``t = 1`` data): per
position ``q(z_t | x) = alpha(t) e_x + (1 - alpha(t)) / V``; the prior ``z_0`` is uniform.
Both papers write ``alpha`` decreasing in their time ``s = 1 - t``; everything below is converted.

Reverse chain (UDLM): for a noisier time ``n`` and a cleaner one ``c`` (``alpha_n < alpha_c``) the
posterior ``q(z_c | z_n = k, x)`` is Bayes' rule on the forward kernel
``q(z_n | z_c) = (alpha_n / alpha_c) e_{z_c} + (1 - alpha_n / alpha_c) / V``; it is linear in
``x`` in numerator and denominator, and the model's step ``p_theta(z_c | z_n)`` is the same
formula with ``x`` replaced by the prediction ``x_theta = softmax(logits)``.

Continuous-time NELBO (UDLM's continuous-time ELBO; Duo eq. for ``L^infty``). As ``c -> n`` the
posterior leaves ``k`` for ``j != k`` at rate ``R_x(k -> j) = alpha' / (V alpha) * xbar_j / xbar_k``
with ``xbar = V alpha x + (1 - alpha)``, and the model at rate ``R_theta`` with
``xbar_theta = V alpha x_theta + (1 - alpha)``. The KL of one step is ``dt sum_{j != k} [R_theta
- R_x + R_x log(R_x / R_theta)] + O(dt^2)``, so per position at ``z_t = k``

    l = alpha' / (V alpha) * ( V / xbar_theta_k - V / xbar_k + sum_{j != k} r_j log(r_j / rho_j) )

with ``r_j = xbar_j / xbar_k``, ``rho_j = xbar_theta_j / xbar_theta_k`` (``sum_j xbar_theta_j = V``).
With ``K = V alpha / (1 - alpha)``, ``rho0 = 1 / (1 + K)`` and ``ls_j = log xbar_theta_j``:

* ``k = x``:  ``r_j = rho0`` for every ``j != k``, the sum is
  ``(V - 1) rho0 log rho0 + rho0 (V ls_k - sum_j ls_j)``;
* ``k != x``: ``r_j = 1`` except ``r_x = 1 + K``, the sum is
  ``(1 + K) log(1 + K) + V ls_k - sum_j ls_j + K (ls_k - ls_x)``,

which is Duo's ``nll_per_token`` of ``DUO_BASE`` (s-sahoo/duo ``algo.py``), written for increasing
``alpha``. ``l >= 0``, and ``l = 0`` when ``x_theta = e_x``. The bound is
``KL(q(z_0 | x) || Uniform) + int_0^1 E_q l dt``; the prior term is 0 unless ``alpha(0) > 0``
(MDLM's ``linear`` schedule). With the uniform prediction the reverse chain is the exact reversal
of the forward one for uniformly distributed data, so the bound is exactly ``log V``.

Numerics: ``log xbar_theta`` is ``logaddexp(log(1 - alpha), log(V alpha) + log x_theta)`` in
float32 (float64 if the logits are), accurate to rounding at both ends, so the ``O(alpha^2)``
cancellation near ``t = 0`` costs ``~1e-7 alpha'`` absolute, not ``1e-7 / alpha``; the
per-position combination (``[B, L]``, cheap) is done in float64, since near ``t = 1`` its terms
grow like ``K log K`` and cancel; at ``alpha = 0`` the integrand is its limit 0, and at ``alpha = 1`` (where
``z_t = x`` surely) it is ``alpha' / V (1 / x_theta_x - 1)``. The enumeration test in
``tests/test_discrete.py`` checks ``l`` against the exact discrete-time chain.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simplexdiff.paths.discrete import DiscretePath, categorical, per_row


def uniform_integrand(
    logits: Tensor, z: Tensor, x1: Tensor, alpha: Tensor, one_minus_alpha: Tensor, dalpha: Tensor
) -> Tensor:
    """The continuous-time NELBO integrand ``l [B, L]`` (nats; see the module doc) of positions in
    state ``z`` with clean ids ``x1``, for ``alpha, 1 - alpha, alpha'`` of shape ``[B]``.

    ``z != x1`` must be possible under ``q``, i.e. ``alpha < 1`` there."""
    v = logits.shape[-1]
    dtype = torch.promote_types(logits.dtype, torch.float32)
    a, c, da = (per_row(x.double(), z) for x in (alpha, one_minus_alpha, dalpha))
    # per-time coefficients in float64, with their limits at alpha = 0 and alpha = 1
    coef = torch.where(a > 0, da / (v * a).clamp_min(1e-300), 0.0)  # alpha' / (V alpha)
    k = torch.where(c > 0, v * a / c.clamp_min(1e-300), 0.0)  # K (unused at alpha = 1)
    log1p_k = torch.log1p(k)
    rho0 = c / (c + v * a)
    same_const = -(v - 1) * rho0 * log1p_k  # (V - 1) rho0 log rho0, 0 at alpha = 1
    diff_const = (1 + k) * log1p_k
    log_c, log_va = torch.log(c), torch.log(v * a)  # -inf at alpha = 1 and alpha = 0

    # log xbar_theta = log(1 - alpha + V alpha x_theta), [B, L, V] in float32 (float64 for float64
    # logits): logaddexp is exact to rounding at both ends (log1p inside), so the O(alpha^2)
    # cancellation near t = 0 costs ~1e-7 alpha' absolute, not 1e-7 / alpha
    logp = torch.log_softmax(logits.to(dtype), -1)
    ls = torch.logaddexp(log_c.to(dtype)[..., None], log_va.to(dtype)[..., None] + logp)
    # the per-position combination in float64: near t = 1 its terms grow like K log K and cancel
    ls_sum = ls.sum(-1).double()
    lp_z = logp.gather(-1, z[..., None]).squeeze(-1).double()
    lp_x = logp.gather(-1, x1[..., None]).squeeze(-1).double()
    ls_z = torch.logaddexp(log_c, log_va + lp_z)
    ls_x = torch.logaddexp(log_c, log_va + lp_x)
    same = z == x1
    # V / xbar_theta_z - V / xbar_z = V alpha (w_z - u_z) / (xbar_theta_z xbar_z), with u = V x_theta - 1
    # and w_z = V [z = x] - 1, so w_z - u_z = V (1 - x_theta_z) (z = x) or -V x_theta_z (z != x)
    gap = torch.where(same, -v * torch.expm1(lp_z), -v * torch.exp(lp_z))
    xbar_z = torch.where(same, 1 + (v - 1) * a, torch.where(c > 0, c, 1.0))  # c = 0: z = x surely
    rate_gap = v * a * gap / (torch.exp(ls_z) * xbar_z)
    kl_same = same_const + rho0 * (v * ls_z - ls_sum)
    kl_diff = diff_const + v * ls_z - ls_sum + k * (ls_z - ls_x)
    return (coef * (rate_gap + torch.where(same, kl_same, kl_diff))).to(dtype)


def uniform_posterior(
    probs: Tensor, z: Tensor, alpha: Tensor, alpha_next: Tensor, one_minus_alpha_next: Tensor
) -> Tensor:
    """UDLM's reverse step ``q(z_c | z_n = z, x = probs)`` (unnormalised, ``[B, L, V]``) from
    ``alpha = alpha_n`` to ``alpha_next = alpha_c > alpha_n``: ``alpha_c`` times Bayes' numerator
    ``V alpha_n x_j [j = z] + (alpha_n / alpha_c - alpha_n) [j = z] + (alpha_c - alpha_n) x_j +
    (1 - alpha_n / alpha_c) (1 - alpha_c) / V`` (so ``alpha_c = 0`` needs no division)."""
    v = probs.shape[-1]
    a_n, a_c, c_c = (per_row(x.double(), probs) for x in (alpha, alpha_next, one_minus_alpha_next))
    x = probs.double()
    at_z = torch.nn.functional.one_hot(z, v).double()
    return (
        v * a_n * a_c * x * at_z + a_n * c_c * at_z + a_c * (a_c - a_n) * x + (a_c - a_n) * c_c / v
    )


class Uniform(DiscretePath):
    """Uniform-state discrete diffusion (UDLM / Duo), continuous-time NELBO."""

    def prior_term(self) -> float:
        """``KL(alpha0 e_x + (1 - alpha0) / V || Uniform)``, 0 when ``alpha(0) = 0``."""
        a0, v = self.schedule.at_zero, self.vocab_size
        if a0 == 0:
            return 0.0
        return (a0 + (1 - a0) / v) * math.log1p((v - 1) * a0) + (v - 1) * (1 - a0) / v * math.log1p(
            -a0
        )

    def prior(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        return torch.randint(
            0, self.vocab_size, (batch, length), generator=generator, device=device
        )

    def noise(self, x1: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        alpha, _, _ = self.alphas(t)
        u = torch.rand(x1.shape, generator=generator, device=x1.device, dtype=torch.float64)
        ids = torch.randint(0, self.vocab_size, x1.shape, generator=generator, device=x1.device)
        return torch.where(u < per_row(alpha, x1), x1, ids)

    def integrand(self, logits: Tensor, z: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return uniform_integrand(logits, z, x1, *self.alphas(t))

    def ancestral_step(
        self,
        state: Tensor,
        logits: Tensor,
        t: Tensor,
        t_next: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        alpha, _, _ = self.alphas(t)
        alpha_next, c_next, _ = self.alphas(t_next)
        probs = torch.softmax(logits.double(), -1)
        return categorical(uniform_posterior(probs, state, alpha, alpha_next, c_next), generator)
