"""Shared machinery of the discrete diffusion paths (masked and uniform): ids as states, a schedule
``alpha(t)``, the continuous-time NELBO as the training loss, float64 categorical draws.

Time convention: ``t = 0`` noise, ``t = 1`` data (MDLM/UDLM/Duo write ``alpha`` decreasing in their
time ``s = 1 - t``; every formula here is converted). ``alpha(t)`` is the schedule (``schedules.py``):
the probability that a position still shows its clean token at ``t``.

The bound. Each path writes its negative ELBO as ``prior term + int_0^1 E_q[l(t, z_t)] dt`` with
``l >= 0`` the continuous-time integrand (nats per token); ``sequence_bound(x1, t)`` draws
``z_t ~ q(. | x1)`` and returns ``prior term + l(t, z_t)`` for each sequence, an unbiased estimate
of the NELBO when ``t ~ U[0, 1)``. The training loss is its batch mean, i.e. *is* the NELBO
estimate (with stratified times from ``DiffusionLM``); ``simplexdiff.eval.likelihood`` averages it
over a stratified grid of times.

Training times: ``training_times`` maps ``u in [0, 1)`` to ``t in [0, 1 - t_eps)`` (``t_eps = 1e-3``
by default, as MDLM's ``sampling_eps``). Near ``t = 1`` both integrands carry a weight that grows
like ``1 / (1 - t)`` (masked: ``alpha' / (1 - alpha)``; uniform: ``alpha' / (V alpha) * V alpha /
(1 - alpha)`` on corrupted positions), applied to positions that are masked / corrupted with
probability ``~ (1 - t)``: finite in expectation, but single draws spike. Training leaves out the
last ``t_eps`` of time (a slight under-estimate of the NELBO by the tail integral); the likelihood
(validation ``val/bpc`` and ``eval.likelihood``) covers all of ``[0, 1)``, with times drawn through
``bound_times`` (more of them near ``t = 1``, importance-weighted) because a single draw's
variance diverges there.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.paths.base import Condition, Denoiser, LossOutput, Path, batch_mean, free_mean
from simplexdiff.paths.schedules import SCHEDULES


class DiscretePath(Path):
    """Base of the masked and uniform paths: the state is a LongTensor of ids ``[B, L]``."""

    family = "discrete"
    bound = "nelbo"
    default_sampler = "ancestral"

    def __init__(self, vocab_size: int, schedule: str = "loglinear", t_eps: float = 1e-3) -> None:
        super().__init__(vocab_size)
        if not 0 <= t_eps < 1:
            raise ConfigError(f"t_eps must lie in [0, 1), got {t_eps}")
        self.schedule_name = schedule
        self.schedule = SCHEDULES.build(schedule)
        self.t_eps = float(t_eps)

    def _options(self) -> dict[str, Any]:
        return {**super()._options(), "schedule": self.schedule_name, "t_eps": self.t_eps}

    def alphas(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(alpha, 1 - alpha, alpha')`` at ``t``, in float64 (``1 - alpha`` without cancellation)."""
        t = torch.as_tensor(t).double()
        return self.schedule(t), self.schedule.complement(t), self.schedule.derivative(t)

    # --- the bound ---------------------------------------------------------------------------
    @abstractmethod
    def prior_term(self) -> float:
        """``KL(q(z_0 | x) || p(z_0))`` per token in nats (0 when ``alpha(0) = 0``)."""

    @abstractmethod
    def noise(self, x1: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw of ``z_t ~ q(. | x1)`` for times ``t [B]``."""

    @abstractmethod
    def integrand(self, logits: Tensor, z: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """Continuous-time NELBO integrand ``[B, L]`` (nats) of each position at ``z_t = z``."""

    def bound_times(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """``t = 1 - (1 - v)^2``, ``w = dt/dv = 2 (1 - v)``: more times near ``t = 1``.

        A single draw of the integrand near ``t = 1`` is ``~ 1 / (1 - t)`` with probability
        ``~ (1 - t)`` (a masked / corrupted position): finite mean, but a second moment
        ``int dt / (1 - t)`` that diverges (logarithmically), so with ``t`` uniform the Monte-Carlo
        standard error is unreliable (heavy tails). Under this change of variables the second
        moment is ``int 2 dt / sqrt(1 - t)``, finite. Measured with equal logits (V = 6, 16000
        sequences of 8 tokens, 8 times each): standard errors 1.4x (masked, loglinear) to 3x
        (uniform, linear) smaller, and stable across seeds."""
        v = v.double()
        return 1 - (1 - v).square(), 2 * (1 - v)

    def sequence_bound(
        self,
        denoiser: Denoiser,
        x1: Tensor,
        t: Tensor,
        generator: torch.Generator | None = None,
        cond: Condition | None = None,
    ) -> Tensor:
        """The NELBO estimate; with ``cond`` the forward process noises the free positions only
        (a prompt stays clean, as in LLaDA's SFT) and the integrand is averaged over them: the
        conditional NELBO of ``-log p(free | fixed)``, per free token."""
        z = self.conditioned(self.noise(x1, t, generator), x1, cond)
        logits = denoiser(self.model_input(self.denoiser_view(z, cond)), t)
        return free_mean(self.integrand(logits, z, x1, t), cond) + self.prior_term()

    # --- training ----------------------------------------------------------------------------
    def training_times(self, u: Tensor) -> Tensor:
        """``t = u (1 - t_eps)``: the NELBO integrand on ``[0, 1 - t_eps)`` (see the module doc)."""
        return u * (1 - self.t_eps)

    def training_loss(
        self,
        denoiser: Denoiser,
        x1: Tensor,
        t: Tensor,
        generator: torch.Generator | None = None,
        cond: Condition | None = None,
    ) -> LossOutput:
        loss = batch_mean(self.sequence_bound(denoiser, x1, t, generator, cond), cond)
        return LossOutput(loss, {"nelbo": loss.detach()})

    # --- sampling ----------------------------------------------------------------------------
    @abstractmethod
    def ancestral_step(
        self,
        state: Tensor,
        logits: Tensor,
        t: Tensor,
        t_next: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One step of the reverse chain from ``t`` to ``t_next > t`` (the ``ancestral`` sampler)."""

    def model_input(self, state: Tensor) -> Tensor:
        return state

    def clamp(self, state: Tensor, fixed: Tensor, ids: Tensor) -> Tensor:
        return torch.where(fixed, ids, state)

    def decode(self, state: Tensor) -> Tensor:
        return state


def per_row(x: Tensor, like: Tensor) -> Tensor:
    """A per-sequence value (``[B]``, or a scalar) shaped to broadcast against ``like [B, ...]``."""
    x = x.to(like.device)
    return x.reshape(-1, *[1] * (like.ndim - 1)) if x.ndim else x


def categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of (unnormalised, non-negative) ``probs [..., K]``, by inverse CDF in
    float64; a category of probability 0 is never drawn."""
    probs = probs.double()
    cdf = probs.cumsum(-1)
    shape = probs.shape[:-1] + (1,)
    u = torch.rand(shape, generator=generator, device=probs.device, dtype=torch.float64)
    u = u * cdf[..., -1:]
    # side="right": the first k with cdf_k > u, so cdf_{k-1} <= u < cdf_k and p_k > 0
    idx = torch.searchsorted(cdf, u, right=True)
    return idx.squeeze(-1).clamp_max(probs.shape[-1] - 1)
