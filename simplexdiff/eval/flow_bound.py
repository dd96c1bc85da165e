"""A variational bound on the NLL of token sequences under a continuous (simplex) path's model.

**The discrete model being bounded.** Draw ``z_0`` from the path's prior, follow the learned ODE
``dz/ds = v_theta(z, s)`` (the x1-prediction field, in path time ``s = kappa(t)``) up to the decode
time ``s* = kappa(t*)``, then decode every position independently with
``r(k | z) = p_{s*}(z | e_k) / sum_j p_{s*}(z | e_j)``: the Bayes posterior of the path's own
noising kernel under a uniform token prior (for Fisher-Rao and linear paths with ``s* >= 1/2`` the
supports of ``p_{s*}(. | e_k)`` are disjoint, so ``r`` is the indicator of the region ``z`` lies
in and the decode is deterministic; Dirichlet kernels ``Dir(1 + alpha e_k)`` overlap everywhere,
so its decode is a proper posterior). Its likelihood ``P(x) = int q_{s*}(z) r(x | z) dz`` obeys,
for the variational choice ``z ~ p_{s*}(. | x)`` (the forward noising, per position),

    -log P(x) <= E_z[ -log q_{s*}(z) + log p_{s*}(z | x) - log r(x | z) ]
               = E_z[ -log q_{s*}(z) + sum_i logsumexp_k log p_{s*}(z_i | e_k) ]

(Jensen; the dequantization argument of Uria et al. 2013 and Ho et al. 2019, with the path's kernel
as dequantizer).

**Decoders.** Jensen holds for any decoder ``r(x | z)``, so it is a choice of discrete model:
``decoder="kernel"`` is the kernel's posterior ``r`` above (it reads each position alone);
``decoder="model"`` decodes with the denoiser's own x1 prediction at ``(z, t*)``, which reads every
position, ``r(x | z) = prod_i p_theta(x_i | z, t*)`` (the model "run the flow to ``t*``, then draw
each token from the prediction"). Its bound is
``E_z[ -log q_{s*}(z) + sum_i log p_{s*}(z_i | e_{x_i}) - sum_i log p_theta(x_i | z, t*) ]``. For an
exact model and flow, the kernel decoder's bound is tight where the supports are disjoint; the
model decoder's wherever the tokens are independent given ``z`` (any ``t*`` when they are given
a prompt, as in a task whose answer tokens depend on the prompt alone), so an early ``t*`` asks the
flow to be right for a short time only, while the kernel decoder's bound there tends to ``log V``
per token.

The model's log-density comes from the instantaneous change of variables (Chen et
al. 2018, *Neural ODEs*; on manifolds Mathieu & Nickel 2020)::

    log q_{s*}(z) = log p_0(z_0) - int_0^{s*} div v_theta(z_s, s) ds,

integrated backwards from ``z`` with the explicit midpoint rule (``steps`` steps on the grid
``s = s* u^2``, ``u`` uniform: finest near ``s = 0``, where the field is stiffest); ``div`` is the
Riemannian divergence ``tr(P J P)`` (``J`` the ambient Jacobian of the field, ``P`` the projection
onto the tangent space: the sphere's, or the simplex's hyperplane), exact (one vector-Jacobian
product per coordinate) or by Hutchinson's estimator with tangent Rademacher probes (Grathwohl et
al. 2019, *FFJORD*). The prior's and kernel's densities use the same reference volume, so its
normalising constant cancels. The paths' field is tangent to the faces of the prior's support
(``vanish_on_faces``; Dirichlet's flow factor vanishes there by itself), so the model's flow
maps that support onto itself and the backward ODE stays inside it.

The change of variables needs a field without jumps. The Dirichlet kernels are smooth, and with
the exact posterior as denoiser the model decoder's bound is each sequence's NLL (test). The
Fisher-Rao and linear kernels end at the edge of their support with a density that does not
vanish there, so the exact field jumps where a support ends, the flow's log-density jumps by the
ratio of the normal velocities there, and the divergence integral misses it: with the exact
posterior of independent tokens the estimate converges (16 to 256 steps) to 1.0-1.9 nats per
sequence *below* the NLL (tests/test_flow_bound.py). A trained network's field has no jumps but is
steep where the exact one jumps, so its estimate rises as the steps are refined: refine until
it stops. What the bound does not cover: the ODE's discretisation error, and backward
trajectories that numerically end outside the prior's support: no finite bound holds for such a
sequence, so its log-density is ``-inf`` and its bound ``+inf`` (a likelihood or ``val/bpc`` over
it is ``inf``: unavailable, never a finite number); their share is reported as
``prior_support_violations`` and should be 0.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.paths.base import Condition, Denoiser
from simplexdiff.paths.continuous import FLOW_BOUND, FLOW_BOUND_DECODERS, ContinuousPath

DIVERGENCES = ("auto", "exact", "hutchinson")
EXACT_DIVERGENCE_MAX_DIM = 64
"""``divergence="auto"`` is exact when ``L * V`` is at most this, Hutchinson above."""
PROBE_CHUNK = 64
"""Probes per batched backward pass (memory grows with it: one gradient of the state each)."""


def flow_bound(
    denoiser: Denoiser,
    path: ContinuousPath,
    x1: Tensor,
    decode_time: float = 0.5,
    steps: int = 32,
    divergence: str = "auto",
    probes: int = 1,
    generator: torch.Generator | None = None,
    cond: Condition | None = None,
    decoder: str = "kernel",
) -> tuple[Tensor, dict[str, Any]]:
    """One-draw estimate of the bound above for each sequence of ``x1`` (LongTensor ``[B, L]``).

    Returns the per-sequence bound in nats (float64 ``[B]``, summed over positions) and
    diagnostics. ``decode_time`` is model time ``t*`` in ``(0, 1)``; the dequantizing draw and the
    probes come from ``generator``; ``decoder`` is ``"kernel"`` or ``"model"`` (above).

    With ``cond`` it bounds ``-log p(free | fixed)`` of the conditional model the sampler runs: the
    fixed positions sit at their vertex throughout (zero velocity), and the flow's density, the
    divergence and the dequantization cover the free positions only (summed over them).
    """
    if path.bound != FLOW_BOUND:
        raise ConfigError(f"the {path.registry_name!r} path has no density for a likelihood bound")
    if not 0 < decode_time < 1:
        raise ConfigError(f"decode_time must lie in (0, 1), got {decode_time}")
    if decoder not in FLOW_BOUND_DECODERS:
        known = ", ".join(FLOW_BOUND_DECODERS)
        raise ConfigError(f"unknown decoder {decoder!r}; known: {known}")
    batch, length = x1.shape
    s_star = float(path.schedule(torch.tensor(decode_time, dtype=torch.float64)))
    s = torch.full((batch, 1), s_star, dtype=torch.float64, device=x1.device)
    # z ~ p_{s*}(. | x1), and the dequantization and decoding terms log p_{s*}(z | x1) - log r(x1 | z)
    x0 = path.prior(batch, length, generator=generator, device=x1.device).double()
    z, _ = path.interpolate(x0, path.vertex(x1).double(), s)
    z = path.conditioned(z, x1, cond)
    free = None if cond is None else path.per_position(cond.free)
    log_kernel = path.log_conditional(z, s)  # [B, positions, dim]
    if decoder == "kernel":  # log p(z | x) - log r(x | z) = logsumexp_k log p(z | e_k)
        dequant = _sum_free(torch.logsumexp(log_kernel, -1), free)
    else:
        t_star = torch.full((batch,), decode_time, device=x1.device)
        log_r = torch.log_softmax(path.denoise(denoiser, z, t_star).double(), -1)
        ids = path.state_ids(x1)[..., None]
        dequant = _sum_free((log_kernel.gather(-1, ids) - log_r.gather(-1, ids))[..., 0], free)
    log_q, diagnostics = flow_log_density(
        denoiser, path, z, s_star, steps, divergence, probes, generator, free
    )
    # the numerical flow puts no mass where its backward map leaves the prior's support
    log_q = log_q.masked_fill(diagnostics.pop("outside_support"), -math.inf)
    return dequant - log_q, diagnostics


def flow_log_density(
    denoiser: Denoiser,
    path: ContinuousPath,
    z: Tensor,
    s_star: float,
    steps: int = 32,
    divergence: str = "auto",
    probes: int = 1,
    generator: torch.Generator | None = None,
    free: Tensor | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """``log q_{s*}(z)`` of the learned flow at path time ``s_star`` for states ``z [B, L, V]``
    (float64), summed over positions: backwards to ``s = 0`` with ``steps`` midpoint steps.
    ``free [B, L]``: only these positions move (the others are held, a prompt), and the density
    is theirs given the others."""
    if divergence not in DIVERGENCES:
        raise ConfigError(f"unknown divergence {divergence!r}; known: {', '.join(DIVERGENCES)}")
    if steps < 1 or probes < 1:
        raise ConfigError("need steps >= 1 and probes >= 1")
    batch, length, vocab = z.shape
    exact = divergence == "exact" or (
        divergence == "auto" and length * vocab <= EXACT_DIVERGENCE_MAX_DIM
    )
    as64 = {"dtype": torch.float64, "device": z.device}
    z = z.double()

    def field(state: Tensor, s: float) -> Tensor:
        t = torch.full((batch,), path.schedule.inverse(s), device=z.device)
        logits = path.denoise(denoiser, state, t)
        v = path.velocity(state, logits, torch.full((batch, 1), s, **as64))
        return v if free is None else v * free[..., None]

    def field_and_divergence(state: Tensor, s: float) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            state = state.detach().requires_grad_(True)
            v = field(state, s)
            div = torch.zeros(batch, **as64)
            todo = _probes(path, state.detach(), exact, probes, generator, free)
            # the probes' vector-Jacobian products, PROBE_CHUNK per batched backward pass
            while chunk := list(itertools.islice(todo, PROBE_CHUNK)):
                u = torch.stack(chunk)
                (vjp,) = torch.autograd.grad(v, state, u, retain_graph=True, is_grads_batched=True)
                div += (vjp * u).sum((0, -2, -1))
        return v.detach(), div if exact else div / probes

    # explicit midpoint for the state and for the divergence integral; the grid s = s* u^2 (u
    # uniform) is finest near s = 0, where the field is stiffest (posteriors still spread, states
    # near the faces)
    grid = (s_star * torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64) ** 2).tolist()
    integral = torch.zeros(batch, **as64)
    for s_hi, s_lo in zip(grid[:-1], grid[1:], strict=True):
        h = s_hi - s_lo
        z_mid = path.exp(z, field(z, s_hi), -h / 2)
        v_mid, div_mid = field_and_divergence(z_mid, (s_hi + s_lo) / 2)
        z = path.exp(z, path.transport(z_mid, z, v_mid), -h)
        integral += h * div_mid
    log_q = _sum_free(path.prior_log_density(z), free) - integral
    left = (z < -1e-4).any(-1)
    outside = (left if free is None else left & free).any(-1)  # it left the prior's support
    diagnostics = {
        "outside_support": outside,
        "prior_support_violations": float(outside.double().mean()),
        "divergence": "exact" if exact else f"hutchinson ({probes} probe{'s' * (probes > 1)})",
        "nfe": 2 * steps,
    }
    return log_q, diagnostics


def _probes(
    path: ContinuousPath,
    state: Tensor,
    exact: bool,
    probes: int,
    generator: torch.Generator | None,
    free: Tensor | None = None,
):
    """Tangent probes ``u`` with ``E[u u^T] = P`` (Hutchinson), or ``P e_i`` for every coordinate
    ``i`` (exact: ``sum_i e_i^T P J P e_i = tr(P J P)``), zero on held positions (``free``).
    The exact probes skip positions no row moves (their terms are 0: the field is 0 there)."""
    if exact:
        _, length, vocab = state.shape
        moving = torch.ones(length, dtype=torch.bool) if free is None else free.any(0).cpu()
        for i in range(length * vocab):
            if moving[i // vocab]:
                e = torch.zeros_like(state)
                e[:, i // vocab, i % vocab] = 1.0
                yield _held(path.tangent(state, e), free)
        return
    for _ in range(probes):
        signs = torch.randint(0, 2, state.shape, generator=generator, device=state.device)
        yield _held(path.tangent(state, 2.0 * signs.to(state.dtype) - 1.0), free)


def _held(u: Tensor, free: Tensor | None) -> Tensor:
    """``u`` with the held positions zeroed."""
    return u if free is None else u * free[..., None]


def _sum_free(values: Tensor, free: Tensor | None) -> Tensor:
    """``values [B, L]`` summed over the free positions (all without a mask)."""
    return (values if free is None else torch.where(free, values, 0)).sum(-1)
