"""Shared machinery of the continuous (simplex) paths: x1-prediction, two objectives, Euler moves.

A continuous path draws ``x_t`` from ``x0 ~ prior`` and ``x1 = e_k`` in closed form together with the
conditional velocity ``u_t = d x_t / dt``. The denoiser predicts ``p(k | x_t)`` and induces the field
``v(x_t) = E_p[u_t | x_t, x1 = e_k]`` (x1-prediction parameterisation). Objectives:

* ``"ce"``: cross-entropy of ``p(. | x_t)`` against ``x1`` (Dirichlet FM, Stark et al. 2024; RDLM,
  Jo & Hwang 2025);
* ``"fm"``: flow-matching regression ``||v(x_t) - u_t||_g^2`` in the path's metric (Fisher-Flow,
  Davis et al. 2024; SFM, Cheng et al. 2024).

``warp`` (a dict of ``time_warp.TimeWarp``'s options, or ``true`` for its defaults) draws training
times through CDCD's learned time warp, fitted online to the x1 cross-entropy.

A ``schedule`` (see ``schedules.py``) reparametrises time: the state at ``t`` is the base path's at
``s = kappa(t)``; ``interpolate``, ``field`` and ``move`` work in ``s``, and an Euler step moves by
``kappa(t_next) - kappa(t)``. The FM loss is measured in ``s`` (``kappa'`` would only reweight it).

``split={"base": b}`` (dimension splitting, ``digits.py``) runs the same path on ``m`` base-``b``
digits per token: ``dim = b`` coordinates per state position, ``L m`` positions, the denoiser reading
each token's ``m b`` coordinates at one position (``denoise``).

Training times are drawn so that ``s`` lies in ``[0, 1 - t_eps]``. The x1-prediction field carries
``1 / (1 - s)``, so the FM loss weighs an error near data by ``1 / (1 - s)^2``; its default ``t_eps``
is therefore larger (0.05: with 1e-3 a tiny model needs several times more steps to fit a fixed
text) than CE's (1e-3).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.geometry import dirichlet_ones, one_hot, project_to_simplex
from simplexdiff.paths.base import (
    Condition,
    Denoiser,
    LossOutput,
    Path,
    batch_mean,
    cross_entropy,
    free_mean,
)
from simplexdiff.paths.digits import DigitCode
from simplexdiff.paths.discrete import categorical
from simplexdiff.paths.schedules import SCHEDULES
from simplexdiff.paths.time_warp import TimeWarp

OBJECTIVES = ("ce", "fm")
DEFAULT_T_EPS = {"ce": 1e-3, "fm": 5e-2}


class ContinuousPath(Path):
    family = "continuous"
    motion: ClassVar[str] = "flow"
    """An ODE from the prior to data (the samplers ``euler`` and ``midpoint`` apply)."""

    def __init__(
        self,
        vocab_size: int,
        objective: str = "ce",
        t_eps: float | None = None,
        schedule: str = "loglinear",
        split: dict[str, Any] | None = None,
        warp: dict[str, Any] | bool | None = None,
    ) -> None:
        super().__init__(vocab_size)
        if objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
        t_eps = DEFAULT_T_EPS[objective] if t_eps is None else t_eps
        if not 0 < t_eps < 1:
            raise ConfigError(f"t_eps must lie in (0, 1), got {t_eps}")
        self.objective = objective
        self.t_eps = float(t_eps)
        self.schedule_name = schedule
        self.schedule = SCHEDULES.build(schedule)
        self._t_max = self.schedule.inverse(1 - self.t_eps)
        self.digits: DigitCode | None = None
        if split is not None:
            split = dict(split)
            if set(split) != {"base"}:
                raise ConfigError(f"split takes one option, base (e.g. {{base: 16}}), got {split}")
            self.digits = DigitCode(self.vocab_size, split["base"])
        self.dim = self.digits.base if self.digits else self.vocab_size
        """The dimension of each position's simplex: ``V``, or the digit base when split."""
        self.warp = TimeWarp.build(warp)

    def _options(self) -> dict[str, Any]:
        return {
            **super()._options(),
            "objective": self.objective,
            "t_eps": self.t_eps,
            "schedule": self.schedule_name,
            **({"split": {"base": self.digits.base}} if self.digits else {}),
        }

    # --- dimension splitting (digits.py): a token is m positions of the state ------------------
    @property
    def model_vocab_size(self) -> int:  # type: ignore[override]
        """The denoiser's input and output width per token: ``V``, or ``m b`` when split."""
        return self.digits.m * self.digits.base if self.digits else self.vocab_size

    def positions(self, length: int) -> int:
        """State positions for ``length`` tokens (``m`` per token when split)."""
        return length * self.digits.m if self.digits else length

    def denoise(self, denoiser: Denoiser, state: Tensor, t: Tensor) -> Tensor:
        """Logits laid out like the state: split, the denoiser reads and predicts each token's
        ``m`` digits as ``m b`` coordinates of one position. The denoiser reads float32 (the
        likelihood bound's float64 states are cast after the chart map)."""
        inputs = self.model_input(state).float()
        if self.digits is None:
            return denoiser(inputs, t)
        width = self.model_vocab_size
        logits = denoiser(inputs.reshape(*inputs.shape[:-2], -1, width), t)
        return logits.reshape(*inputs.shape)

    def per_position(self, where: Tensor) -> Tensor:
        """A per-token mask ``[B, L]`` as a per-state-position one (``[B, L m]`` when split)."""
        return where.repeat_interleave(self.digits.m, -1) if self.digits else where

    def state_ids(self, ids: Tensor) -> Tensor:
        """What each state position holds for tokens ``ids [B, L]``: the ids, or their digits
        ``[B, L m]`` when split (the targets of the denoiser's per-position logits)."""
        return self.digits.to_digits(ids) if self.digits else ids

    def _one_hot(self, ids: Tensor) -> Tensor:
        """One-hot vertices of ``ids`` ``[B, L]``: ``[B, L, V]``, or of their digits, ``[B, L m, b]``."""
        return one_hot(self.state_ids(ids), self.dim)

    def tokens(self, log_probs: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids ``[B, L]`` from per-position log-probabilities ``[B, L', dim]`` and where the
        best digit string was not a token (``best_valid``; never, unsplit)."""
        if self.digits is None:
            ids = log_probs.argmax(-1)
            return ids, torch.zeros_like(ids, dtype=torch.bool)
        return self.digits.best_valid(log_probs)

    # --- geometry each path supplies ---------------------------------------------------------
    @abstractmethod
    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_t, u_t)`` for prior points ``x0``, vertices ``x1`` (one-hot, in the path's chart)
        and times ``t`` broadcasting against ``x0[..., 0]``."""

    @abstractmethod
    def field(self, state: Tensor, probs: Tensor, t: Tensor) -> Tensor:
        """x1-prediction field ``sum_k probs_k u_t(state | e_k)``; ``t`` broadcasts like above."""

    @abstractmethod
    def move(self, state: Tensor, velocity: Tensor, h: Tensor | float) -> Tensor:
        """Follow ``velocity`` for time ``h`` (the exponential map of the path's geometry)."""

    def transport(self, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
        """Carry a tangent vector at ``x`` to ``y`` (identity on the flat simplex)."""
        return u

    # --- densities, for the likelihood bound (simplexdiff.eval.flow_bound) ----------------------
    def exp(self, state: Tensor, velocity: Tensor, h: Tensor | float) -> Tensor:
        """The exponential map alone: ``move`` without its projection onto the chart's domain
        (the bound integrates the ODE backwards and must see where it leaves the prior's support).
        """
        raise NotImplementedError

    def tangent(self, state: Tensor, u: Tensor) -> Tensor:
        """Orthogonal projection of an ambient vector onto the tangent space at ``state``."""
        raise NotImplementedError

    def prior_log_density(self, state: Tensor) -> Tensor:
        """``log p_0(state)`` per position ``[...]`` (inside the prior's support), with respect to
        the reference volume that ``log_conditional`` uses."""
        raise NotImplementedError

    def log_conditional(self, state: Tensor, s: Tensor) -> Tensor:
        """``log p_s(state | x1 = e_k)`` for every ``k``: ``[..., V]``, ``-inf`` off the support;
        ``s`` (path time, after the schedule) broadcasts against ``state[..., 0]``."""
        raise NotImplementedError

    @property
    def has_density(self) -> bool:
        """Whether the path implements the densities the likelihood bound needs."""
        return type(self).log_conditional is not ContinuousPath.log_conditional

    @property
    def bound(self) -> str | None:  # type: ignore[override]
        """``"dequantized_flow_bound"`` (``simplexdiff.eval.flow_bound``) where the path has the
        densities it needs, else ``None``."""
        return FLOW_BOUND if self.has_density else None

    @abstractmethod
    def sq_norm(self, u: Tensor) -> Tensor:
        """Squared norm of a tangent vector in the path's metric, over the last axis."""

    @abstractmethod
    def vertex(self, ids: Tensor) -> Tensor:
        """The state of a clean token (a vertex in the path's chart)."""

    @abstractmethod
    def barycenter(self) -> float:
        """Each coordinate of the uniform distribution's point in the path's chart."""

    # --- training ----------------------------------------------------------------------------
    def training_times(self, u: Tensor) -> Tensor:
        """Times whose ``s = kappa(t)`` covers ``[0, 1 - t_eps)`` (``kappa`` is increasing)."""
        return u * self._t_max

    def training_loss(
        self,
        denoiser: Denoiser,
        x1: Tensor,
        t: Tensor,
        generator: torch.Generator | None = None,
        cond: Condition | None = None,
    ) -> LossOutput:
        """The objective's mean over positions (per digit when split); with ``cond`` the fixed
        positions sit at their vertex (the sampler's clamp) and only the free ones are scored."""
        x0 = self.prior(*x1.shape, generator=generator, device=x1.device)
        s = self.schedule(t)[:, None]
        xt, ut = self.interpolate(x0, self.vertex(x1), s)
        xt = self.conditioned(xt, x1, cond)
        logits = self.denoise(denoiser, self.denoiser_view(xt, cond), t)
        targets = self.state_ids(x1)
        at = None if cond is None else Condition(self.per_position(cond.fixed))
        rows = free_mean(cross_entropy(logits, targets), at)  # per digit, split
        ce = batch_mean(rows, at)
        x1_ce = ce.detach() * (self.digits.m if self.digits else 1)  # nats per token
        if self.objective == "ce":
            return LossOutput(ce, {"x1_ce": x1_ce}, rows.detach())
        v = self.velocity(xt, logits, s)
        fm = batch_mean(free_mean(self.sq_norm(v - ut), at), at)
        return LossOutput(fm, {"x1_ce": x1_ce, "fm_mse": fm.detach()}, rows.detach())

    # --- sampling ----------------------------------------------------------------------------
    def velocity(self, state: Tensor, logits: Tensor, s: Tensor) -> Tensor:
        """The x1-prediction field at path time ``s`` from the denoiser's ``logits``: ``field``
        of their softmax, taken in the state's floating dtype (at least float32)."""
        dtype = torch.promote_types(state.dtype, torch.float32)
        return self.field(state, torch.softmax(logits.to(dtype), -1), s)

    def euler_step(self, state: Tensor, logits: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        """One Euler step ``x <- exp_x(h v(x))`` of the x1-prediction field, taken in ``s``:
        ``h = kappa(t_next) - kappa(t)``."""
        s, s_next = self.schedule(t), self.schedule(t_next)
        return self.move(state, self.velocity(state, logits, s), s_next - s)

    def clamp(self, state: Tensor, fixed: Tensor, ids: Tensor) -> Tensor:
        return torch.where(
            self.per_position(fixed)[..., None], self.vertex(ids).to(state.dtype), state
        )

    def hide(self, state: Tensor, where: Tensor) -> Tensor:
        """The null state of a continuous path: the barycenter (the uniform distribution)."""
        return torch.where(self.per_position(where)[..., None], self.barycenter(), state)

    def decode(self, state: Tensor) -> Tensor:
        return self.read(state)[0]

    def read(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """The token nearest the final state, each position's largest coordinate (split: the most
        probable valid digit string, reading the state as digit probabilities), and where the
        best string was no token."""
        if self.digits is None:
            return self.tokens(state)
        return self.tokens(self.model_input(state).double().clamp_min(1e-300).log())

    def draw(
        self, logits: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Tokens drawn from the prediction ``softmax(logits)`` and where the draw was no token
        (split: a digit string ``>= V``, replaced by the most probable valid one)."""
        log_probs = torch.log_softmax(logits.double(), -1)
        drawn = categorical(log_probs.exp(), generator)
        if self.digits is None:
            return drawn, torch.zeros_like(drawn, dtype=torch.bool)
        ids = self.digits.to_ids(drawn)
        invalid = ids >= self.vocab_size
        return torch.where(invalid, self.tokens(log_probs)[0], ids), invalid


FLOW_BOUND = "dequantized_flow_bound"
FLOW_BOUND_DECODERS = ("kernel", "model")
"""How the flow bound's discrete model reads a token off ``z_{t*}`` (``simplexdiff.eval.flow_bound``)."""
FACE_WIDTH = 1e-2


def vanish_on_faces(probs: Tensor, state: Tensor, width: float = FACE_WIDTH) -> Tensor:
    """The x1 prediction reweighted by ``1 - exp(-y_k / width)`` (``y`` the state's coordinates)
    and renormalised, so that a token's weight vanishes on the face ``y_k = 0`` (and is unchanged,
    to within ``exp(-5)``, beyond ``5 width``).

    With it the x1-prediction field of the Fisher-Rao and linear paths is tangent to every face, so
    the model's flow maps the prior's support (orthant, simplex) onto itself, forwards *and*
    backwards: the likelihood bound's backward ODE never leaves the support where the prior has no
    density (a raw prediction pushes trajectories across the faces when run backwards). The exact
    posterior already vanishes there for ``s > 0`` (a state with ``y_k = 0`` cannot come from
    ``e_k``; Fisher-Rao: the posterior of ``k`` is 0 wherever ``y_k < sin(s pi / 2)``, linear:
    ``y_k < s``), so beyond ``s ~ 5 width`` only what a model puts on impossible tokens changes.
    """
    y = state.clamp_min(0)
    w = probs * -torch.expm1(-y / width)
    return w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


class FlatSimplexPath(ContinuousPath):
    """A continuous path on the flat simplex chart (Euclidean metric): the state is the probability
    vector itself, an Euler move is a straight step projected back onto the simplex. The prior is
    ``Dir(1)``, uniform on the simplex."""

    def prior(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        return dirichlet_ones((batch, self.positions(length), self.dim), generator, device)

    def prior_log_density(self, state: Tensor) -> Tensor:
        """``Dir(1)``: ``(V - 1)!`` with respect to Lebesgue measure on ``V - 1`` coordinates."""
        return torch.full_like(state[..., 0], math.lgamma(self.dim))

    def move(self, state: Tensor, velocity: Tensor, h: Tensor | float) -> Tensor:
        return project_to_simplex(self.exp(state, velocity, h))

    def exp(self, state: Tensor, velocity: Tensor, h: Tensor | float) -> Tensor:
        return state + h * velocity

    def tangent(self, state: Tensor, u: Tensor) -> Tensor:
        return u - u.mean(-1, keepdim=True)  # the simplex's hyperplane sum(x) = 1

    def sq_norm(self, u: Tensor) -> Tensor:
        return u.square().sum(-1)

    def vertex(self, ids: Tensor) -> Tensor:
        return self._one_hot(ids)

    def barycenter(self) -> float:
        return 1 / self.dim

    def model_input(self, state: Tensor) -> Tensor:
        return state
