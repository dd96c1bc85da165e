"""RDLM: Riemannian diffusion on the sphere (Jo & Hwang 2025, *Continuous Diffusion Model for
Language Modeling*).

Each position is a point of the unit sphere in ``R^{V+1}`` (the sphere chart ``sqrt(p)`` of the
simplex of ``V`` tokens and a mask coordinate, extended to the whole sphere). From a prior point
``x0`` at ``t = 0`` the bridge SDE of ``sphere_bridge.py`` carries it to the clean token's vertex
``e_k`` at ``t = 1``. Priors: ``"mask"`` (the mask vertex ``e_M``: a continuous masked diffusion),
``"uniform"`` (the barycenter of the token vertices: a continuous uniform diffusion), and
``"mixture"``: per sequence the barycenter with probability ``mix``, else the mask vertex (RDLM
mixes the two with a weight that depends on ``t``, which defines marginals but no single SDE and
so no Girsanov bound; a constant weight keeps both).

The denoiser reads the sphere coordinates themselves (signs carry information off the positive
orthant) and predicts ``p(k | X_t)``; the model's drift is ``gamma_t sum_k p_k log_X(e_k)``.

* **Training** is simulation-free: ``X_t`` from the Riemannian normal approximation
  (``sphere_bridge.MarginalTable``, computed once per hyper-parameters and cached on disk, stored
  in checkpoints by ``state``). Objectives: ``"ce"``, the cross-entropy of ``p(. | X_t)`` against
  ``x1`` (RDLM's default), and ``"drift"``, the bound's integrand below (RDLM's ``elbo`` loss).
  ``window = [left, right, floor]`` draws training times with RDLM's step density (``1`` inside
  ``(left, right)``, ``floor`` outside; RDLM's ``configs/scheduler/geometric.yaml``: ``[0.3, 0.75,
  1e-4]``; ``floor`` defaults to 0.2) and reweights each sequence by the inverse density, so the
  objective's expectation is unchanged while most steps train where the information is. RDLM's
  floor starves the late times on short runs: on the pairs task of ``tests/test_context.py``
  (400 steps, bound in log V) ``[0.3, 0.75]`` gave 8520 with floor 1e-4, 0.769 with 0.05, 0.725
  with 0.2, and no window 0.736 (+- 0.011 each). ``warp`` instead draws the training times
  through CDCD's learned time warp (``time_warp.py``; it does not reweight).
* **Bound** (``"nelbo"``): for one sequence ``x1`` and the model run to ``T = 1 - t_eps`` then
  decoded by its own prediction ``p(. | X_T)``,

      -log p(x1) <= int_0^T E 1/2 (gamma_t^2 / beta_t) |sum_k p_k log_X(e_k) - log_X(e_x1)|^2 dt
                    + E[-log p(x1 | X_T)],

  the KL between the bridge to ``x1`` and the model's process (Girsanov; both start at the prior)
  plus the decoder's term. ``X_t`` is **simulated** from the exact SDE (its radial reduction,
  ``sim_steps`` bridge steps), not the approximation. ``bound_times`` spends the share ``1/32``
  of the time points on the decoder term and draws the others half uniformly, half towards
  ``T``. What remains is the Monte-Carlo error and the discretisation of the simulated ``X_t``
  (a first-order geodesic random walk).
* **Sampling**: the ``grw`` step (``samplers/continuous.py``), a geodesic random walk whose
  steps are ``sphere_bridge``'s bridge steps with the model's drift; at ``t = 1`` it lands on
  ``exp_X(sum_k p_k log_X(e_k))``, read off by its largest token coordinate.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.geometry import expmap, log_to_vertices, one_hot, proju
from simplexdiff.paths.base import (
    Condition,
    Denoiser,
    LossOutput,
    Path,
    batch_mean,
    cross_entropy,
    free_mean,
)
from simplexdiff.paths.discrete import categorical
from simplexdiff.paths.sphere_bridge import (
    GeometricNoise,
    MarginalTable,
    TableSpec,
    marginal_table,
    simulate,
)
from simplexdiff.paths.time_warp import TimeWarp

PRIORS = ("mask", "uniform", "mixture")
OBJECTIVES = ("ce", "drift")
DECODER_SHARE = 1 / 32
WINDOW_FLOOR = 0.2


class RDLM(Path):
    family = "continuous"
    motion: ClassVar[str] = "diffusion"
    bound = "nelbo"
    default_sampler = "grw"

    def __init__(
        self,
        vocab_size: int,
        objective: str = "ce",
        prior: str = "mask",
        mix: float = 0.5,
        beta_min: float = 1e-3,
        beta_max: float = 0.2,
        t_eps: float = 1e-4,
        sim_steps: int = 64,
        window: list[float] | None = None,
        warp: dict[str, Any] | bool | None = None,
    ) -> None:
        super().__init__(vocab_size)
        if objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
        if prior not in PRIORS:
            raise ConfigError(f"unknown prior {prior!r}; known: {', '.join(PRIORS)}")
        if not 0 <= mix <= 1:
            raise ConfigError(f"mix must lie in [0, 1], got {mix}")
        if not 0 < t_eps < 1 or sim_steps < 1:
            raise ConfigError(f"need 0 < t_eps < 1 and sim_steps >= 1, got {t_eps}, {sim_steps}")
        if window is not None:
            window = [float(w) for w in window]
            if len(window) == 2:
                window.append(WINDOW_FLOOR)
            if len(window) != 3 or not 0 <= window[0] < window[1] <= 1 - t_eps:
                raise ConfigError(
                    f"window must be [left, right(, floor)] in [0, 1 - t_eps], got {window}"
                )
            if not 0 < window[2] <= 1:
                raise ConfigError(f"the window's floor must lie in (0, 1], got {window[2]}")
        self.warp = TimeWarp.build(warp)
        if window is not None and self.warp is not None:
            raise ConfigError("window and warp both choose the training times: give one of them")
        self.objective, self.prior_kind, self.mix = objective, prior, float(mix)
        self.noise = GeometricNoise(float(beta_min), float(beta_max))
        self.t_eps, self.sim_steps, self.window = float(t_eps), int(sim_steps), window
        self.dim = self.vocab_size + 1  # V tokens and the mask coordinate
        self._tables: dict[str, MarginalTable] = {}

    def _options(self) -> dict[str, Any]:
        return {
            **super()._options(),
            "objective": self.objective,
            "prior": self.prior_kind,
            "mix": self.mix,
            "beta_min": self.noise.beta_min,
            "beta_max": self.noise.beta_max,
            "t_eps": self.t_eps,
            "sim_steps": self.sim_steps,
            "window": self.window,
        }

    @property
    def input_vocab_size(self) -> int:
        return self.vocab_size + 1

    # --- the marginal approximation's tables (one per prior point) ---------------------------
    def _kinds(self) -> tuple[str, ...]:
        return ("mask", "uniform") if self.prior_kind == "mixture" else (self.prior_kind,)

    def _cosine(self, kind: str) -> float:
        """``<x0, e_k>`` for the prior point ``kind``."""
        return 0.0 if kind == "mask" else 1 / math.sqrt(self.vocab_size)

    def table(self, kind: str) -> MarginalTable:
        if kind not in self._tables:
            spec = TableSpec(
                self.noise.beta_min, self.noise.beta_max, self._cosine(kind), self.vocab_size
            )
            self._tables[kind] = marginal_table(spec)
        return self._tables[kind]

    def state(self) -> dict[str, Any]:
        """The marginal tables (checkpoints carry them: a model is read with the approximation
        it was trained with) and the learned time warp's state."""
        tables = {kind: self.table(kind).state() for kind in self._kinds()}
        return {**(super().state() or {}), **tables}

    def load_state(self, state: dict[str, Any] | None) -> None:
        super().load_state(state)
        for kind, table in (state or {}).items():
            if kind in PRIORS:
                self._tables[kind] = MarginalTable.from_state(table)

    # --- states ------------------------------------------------------------------------------
    def _prior_point(self, kind: str, device: Any, dtype: torch.dtype) -> Tensor:
        x = torch.zeros(self.dim, device=device, dtype=dtype)
        if kind == "mask":
            x[self.vocab_size] = 1
        else:
            x[: self.vocab_size] = 1 / math.sqrt(self.vocab_size)
        return x

    def _groups(self, uniform: Tensor) -> list[tuple[str, Tensor]]:
        """``(prior kind, its rows)`` for each prior point that some sequence starts from."""
        pairs = (("mask", ~uniform), ("uniform", uniform))
        return [(kind, rows) for kind, rows in pairs if rows.any()]

    def _prior_kinds(self, batch: int, generator: torch.Generator | None, device: Any) -> Tensor:
        """Per sequence: True where the prior point is the barycenter."""
        if self.prior_kind != "mixture":
            return torch.full((batch,), self.prior_kind == "uniform", device=device)
        return torch.rand(batch, generator=generator, device=device) < self.mix

    def _points(self, uniform: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """The prior point of each sequence ``[B, 1, V + 1]``."""
        mask = self._prior_point("mask", uniform.device, dtype)
        bary = self._prior_point("uniform", uniform.device, dtype)
        return torch.where(uniform[:, None, None], bary, mask)

    def prior(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        uniform = self._prior_kinds(batch, generator, device)
        return self._points(uniform).expand(batch, length, self.dim).clone()

    def vertex(self, ids: Tensor) -> Tensor:
        return one_hot(ids, self.dim)

    def model_input(self, state: Tensor) -> Tensor:
        return state

    def denoise(self, denoiser: Denoiser, state: Tensor, t: Tensor) -> Tensor:
        return denoiser(state.float(), t)

    def clamp(self, state: Tensor, fixed: Tensor, ids: Tensor) -> Tensor:
        return torch.where(fixed[..., None], self.vertex(ids).to(state.dtype), state)

    def hide(self, state: Tensor, where: Tensor) -> Tensor:
        """The null state: the mask vertex (as LLaDA masks a hidden prompt)."""
        mask = self._prior_point("mask", state.device, state.dtype)
        return torch.where(where[..., None], mask, state)

    def decode(self, state: Tensor) -> Tensor:
        return self.read(state)[0]

    def read(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Each position's largest token coordinate (the mask coordinate is no token)."""
        ids = state[..., : self.vocab_size].argmax(-1)
        return ids, torch.zeros_like(ids, dtype=torch.bool)

    def draw(
        self, logits: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        ids = categorical(torch.softmax(logits.double(), -1), generator)
        return ids, torch.zeros_like(ids, dtype=torch.bool)

    # --- noisy states given clean ids --------------------------------------------------------
    def _frame(self, x1: Tensor, uniform: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(e, f)``: each position's target vertex and the unit vector of ``x0 - <x0, e> e``."""
        e = self.vertex(x1).to(dtype)
        x0 = self._points(uniform, dtype)
        c = (x0 * e).sum(-1, keepdim=True)
        return e, (x0 - c * e) / (1 - c.square()).sqrt()

    def approximate(
        self, x1: Tensor, t: Tensor, uniform: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """A draw of ``X_t | x1`` from the Riemannian normal approximation (training)."""
        e, f = self._frame(x1, uniform, torch.float32)
        psi = torch.empty_like(t, dtype=torch.float64)
        rho = torch.empty_like(psi)
        for kind, rows in self._groups(uniform):
            psi[rows], rho[rows] = self.table(kind).at(t[rows])
        psi, rho = psi.float()[:, None, None], rho.float()[:, None, None]
        mu = torch.cos(psi) * e + torch.sin(psi) * f
        xi = torch.randn(mu.shape, generator=generator, device=mu.device)
        return expmap(mu, rho * proju(mu, xi))

    def simulated(
        self, x1: Tensor, t: Tensor, uniform: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """A draw of ``X_t | x1`` from the SDE itself (its exact radial reduction, ``sim_steps``
        bridge steps; float64)."""
        e, f = self._frame(x1, uniform, torch.float64)
        times = t.double()[:, None].expand(x1.shape)
        yw = torch.empty((*x1.shape, 2), dtype=torch.float64, device=x1.device)
        r = torch.empty(x1.shape, dtype=torch.float64, device=x1.device)
        for kind, rows in self._groups(uniform):
            yw[rows], r[rows] = simulate(
                self.noise, self._cosine(kind), self.vocab_size, times[rows], self.sim_steps,
                generator,
            )  # fmt: skip
        z = torch.randn(e.shape, generator=generator, dtype=e.dtype, device=e.device)
        u = z - (z * e).sum(-1, keepdim=True) * e - (z * f).sum(-1, keepdim=True) * f
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        return yw[..., :1] * e + yw[..., 1:] * f + r[..., None] * u

    # --- training and the bound --------------------------------------------------------------
    def drift_error(self, state: Tensor, logits: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """``1/2 (gamma_t^2 / beta_t) |sum_k p_k log_X(e_k) - log_X(e_x1)|^2`` per position."""
        dtype = torch.promote_types(state.dtype, torch.float32)
        p = torch.softmax(logits.to(dtype), -1)
        diff = log_to_vertices(state.to(dtype), p - one_hot(x1, self.vocab_size).to(dtype))
        t = t.to(dtype)
        scale = self.noise.gamma(t).square() / self.noise.beta(t) / 2
        return scale[:, None] * diff.square().sum(-1)

    def _window_masses(self) -> tuple[float, float, float, list[float]]:
        """``(left, right, end, masses)``: the window's step density has ``masses`` (before,
        inside, after) on ``[0, left)``, ``[left, right)``, ``[right, end)``."""
        left, right, floor = self.window  # type: ignore[misc]
        end = 1 - self.t_eps
        return left, right, end, [left * floor, right - left, (end - right) * floor]

    def training_times(self, u: Tensor) -> Tensor:
        """``[0, 1 - t_eps)`` uniformly, or by the window's step density."""
        end = 1 - self.t_eps
        if self.window is None:
            return u * end
        left, right, end, mass = self._window_masses()
        a, b = mass[0] / sum(mass), (mass[0] + mass[1]) / sum(mass)  # the density's CDF there
        v = u.double()
        inside = left + (v - a) / (b - a) * (right - left)
        before = v / a * left if a > 0 else v
        after = right + (v - b) / (1 - b) * (end - right)
        return torch.where(v < a, before, torch.where(v < b, inside, after)).to(u.dtype)

    def time_weight(self, t: Tensor) -> Tensor:
        """``1 / (end * density(t))``: reweights window-drawn times to uniform ones."""
        if self.window is None:
            return torch.ones_like(t)
        left, right, end, mass = self._window_masses()
        inside = (t >= left) & (t < right)
        return sum(mass) / end / torch.where(inside, 1.0, self.window[2])

    def training_loss(
        self,
        denoiser: Denoiser,
        x1: Tensor,
        t: Tensor,
        generator: torch.Generator | None = None,
        cond: Condition | None = None,
    ) -> LossOutput:
        """The objective at ``X_t`` from the approximation; with ``cond`` the fixed positions sit
        at their vertex and only the free ones are scored."""
        uniform = self._prior_kinds(x1.shape[0], generator, x1.device)
        xt = self.conditioned(self.approximate(x1, t, uniform, generator), x1, cond)
        logits = self.denoise(denoiser, self.denoiser_view(xt, cond), t)
        weight = self.time_weight(t).to(torch.float32)
        ce = free_mean(cross_entropy(logits, x1), cond)
        x1_ce = batch_mean(ce, cond).detach()
        if self.objective == "ce":
            return LossOutput(batch_mean(weight * ce, cond), {"x1_ce": x1_ce}, ce.detach())
        drift = free_mean(self.drift_error(xt, logits, x1, t), cond)
        return LossOutput(batch_mean(weight * drift, cond), {"x1_ce": x1_ce}, ce.detach())

    def bound_times(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """The share ``1/32`` of ``v`` (the top) goes to the decoder term (``t = 1``, weight 32);
        the rest to the integral over ``[0, T)`` by a defensive mixture: half uniform in ``t``,
        half uniform in ``log(1 - t)`` (the integrand of a poor model grows like ``(1 - t)^-2``
        towards ``T``), weighted by the inverse of the mixture's density."""
        end, keep = 1 - self.t_eps, 1 - DECODER_SHARE
        log_span = math.log(1 / self.t_eps)
        u = (v / keep).double()
        t = torch.where(u < 0.5, 2 * u * end, -torch.expm1((2 * u - 1) * -log_span))
        density = 0.5 / end + 0.5 / ((1 - t) * log_span)
        integral = v < keep
        t = torch.where(integral, t, torch.ones_like(t))
        w = torch.where(integral, 1 / (keep * density), torch.full_like(t, 1 / DECODER_SHARE))
        return t.to(v.dtype), w.to(v.dtype)

    def sequence_bound(
        self,
        denoiser: Denoiser,
        x1: Tensor,
        t: Tensor,
        generator: torch.Generator | None = None,
        cond: Condition | None = None,
    ) -> Tensor:
        """Per sequence: the Girsanov integrand at ``t < 1``; at ``t = 1`` the decoder term
        ``-log p(x1 | X_T)`` (``bound_times`` weighs them); per free token, float32."""
        decoder = t >= 1
        t = torch.where(decoder, 1 - self.t_eps, t.double())
        uniform = self._prior_kinds(x1.shape[0], generator, x1.device)
        xt = self.conditioned(self.simulated(x1, t, uniform, generator), x1, cond)
        logits = self.denoise(denoiser, self.denoiser_view(xt, cond), t.float())
        nats = torch.where(
            decoder[:, None],
            cross_entropy(logits.double(), x1),
            self.drift_error(xt, logits, x1, t),
        )
        return free_mean(nats, cond).float()

    # --- sampling ----------------------------------------------------------------------------
    def walk_step(
        self,
        state: Tensor,
        logits: Tensor,
        t: Tensor,
        t_next: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One bridge step of the model's SDE from ``t`` to ``t_next`` (``sphere_bridge``):
        ``X <- exp_X(a sum_k p_k log_X(e_k) + s P_X z)``, in the state's dtype (float32 while
        sampling)."""
        a, s = (float(c) for c in self.noise.step(t.double(), t_next.double()))
        drift = log_to_vertices(state, torch.softmax(logits.to(state.dtype), -1))
        z = torch.randn(state.shape, generator=generator, dtype=state.dtype, device=state.device)
        x = expmap(state, a * drift + s * proju(state, z))
        return x / x.norm(dim=-1, keepdim=True)
