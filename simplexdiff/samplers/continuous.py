"""Steps of the continuous (simplex) paths: ODE solvers for the x1-prediction field of the flows,
and the geodesic random walk of the diffusion (RDLM).

Both move with the path's exponential map (``path.move``; the sphere's for Fisher-Rao, a straight
line on the flat simplex) and work in the path's schedule time ``s = kappa(t)``.

* ``euler``: ``x <- exp_x((s' - s) v(x, s))``, one denoiser call per step.
* ``midpoint``: the explicit midpoint rule on the manifold: ``x_m = exp_x(h/2 v(x, s))``, then
  ``x <- exp_x(h Gamma_{x_m -> x} v(x_m, s_m))`` with ``Gamma`` the path's vector transport; second
  order, two denoiser calls per step.
* ``grw`` (paths whose ``motion`` is ``"diffusion"``): one step of the model's SDE through the
  exponential map, ``path.walk_step`` (Euler-Maruyama with the bridge's exact coefficients, see
  ``paths/sphere_bridge.py``); one denoiser call per step, its noise from the loop's generator.
"""

from __future__ import annotations

from torch import Tensor

from simplexdiff.samplers.base import StepContext, register


def _field(ctx: StepContext, state: Tensor, t: Tensor) -> Tensor:
    path = ctx.path
    return path.velocity(state, ctx.predict(state, t), path.schedule(t))  # type: ignore[attr-defined]


@register("euler", applies_to=("flow",))
def euler(ctx: StepContext, state: Tensor) -> Tensor:
    """One Euler step of the x1-prediction field with the path's exponential map."""
    logits = ctx.predict(state, ctx.t)
    return ctx.path.euler_step(state, logits, ctx.t, ctx.t_next)  # type: ignore[attr-defined]


@register("midpoint", applies_to=("flow",))
def midpoint(ctx: StepContext, state: Tensor) -> Tensor:
    """Explicit midpoint step (second order); the midpoint is taken in ``t``."""
    path = ctx.path
    t, t_next = ctx.t, ctx.t_next
    t_mid = (t + t_next) / 2
    s, s_mid, s_next = (path.schedule(x) for x in (t, t_mid, t_next))  # type: ignore[attr-defined]
    x_mid = path.move(state, _field(ctx, state, t), s_mid - s)  # type: ignore[attr-defined]
    v_mid = path.transport(x_mid, state, _field(ctx, x_mid, t_mid))  # type: ignore[attr-defined]
    return path.move(state, v_mid, s_next - s)  # type: ignore[attr-defined]


@register("grw", applies_to=("diffusion",))
def geodesic_random_walk(ctx: StepContext, state: Tensor) -> Tensor:
    """One geodesic-random-walk step of the model's SDE (RDLM's ``grw`` predictor)."""
    logits = ctx.predict(state, ctx.t)
    return ctx.path.walk_step(state, logits, ctx.t, ctx.t_next, ctx.generator)  # type: ignore[attr-defined]
