"""RDLM's bridge diffusion on the sphere: its noise schedule, its exact radial reduction, and the
Riemannian normal approximation of its marginal that training samples from.

The process (Jo & Hwang 2025, *Continuous Diffusion Model for Language Modeling*, eqs. 8-10), on
the unit sphere ``S^d`` of ``R^{V+1}`` (``d = V``: ``V`` tokens and a mask coordinate), from a
prior point ``x0`` at ``t = 0`` to the vertex ``e`` of the clean token at ``t = 1``::

    dX = gamma_t log_X(e) dt + sigma_t dB_t,   sigma_t^2 = beta_t,   gamma_t = beta_t / B_t,

with ``B_t = int_t^1 beta_s ds`` (the remaining noise) and RDLM's geometric schedule ``beta_t =
beta_min^(1 - t) beta_max^t`` (defaults 1e-3 and 0.2, RDLM's ``configs/scheduler/geometric.yaml``;
RDLM's time also runs from prior to data).

**Radial reduction (exact).** The SDE commutes with every rotation that fixes ``e`` and ``x0``, and
``x0`` is fixed by them, so the law of ``X_t`` is invariant under them: ``X_t = y e + w f + r u``
with ``f`` the unit vector of ``x0 - <x0, e> e``, ``u`` uniform on the unit sphere of the
complement of ``span(e, f)``, independent of ``(y, w)``, and ``r = sqrt(1 - y^2 - w^2)``. A
geodesic random walk on ``S^d`` reduces to the same walk on ``(y, w, r)``: the noise orthogonal to
``e``, ``f`` and ``u`` enters only through its squared norm, a ``chi^2_{d-2}`` draw
(``radial_step``). So ``X_t`` of any vocabulary is simulated exactly at O(1) cost per position and
step (``simulate``), for the likelihood bound and for the moments below.

**Bridge steps.** A step from ``t`` to ``t'`` moves the fraction ``a = 1 - B_t'/B_t`` of the way to
the target and adds tangent noise of variance ``B_t' (B_t - B_t') / B_t`` per dimension: the exact
transition of the flat bridge ``dX = gamma_t (e - X) dt + sigma_t dW`` (``B_t'^2 int beta / B^2``),
so steps stay stable up to ``t' = 1``, where ``a = 1`` lands on the target with no noise.

**Riemannian normal approximation** (RDLM section 3.3, eq. 25): ``X_t | x1 ~ exp_mu(rho xi)``,
``xi ~ N(0, I_d)`` in the tangent space at ``mu_t``, a point of the great circle through ``x0`` and
``e``. Its mean is ``E[cos(rho chi_d)] mu``, so matching the simulated mean ``E[(y, w)]`` gives
``mu`` (the mean's direction, angle ``psi_t`` from ``e``) and ``rho`` (from the mean's norm,
``mean_cosine``). RDLM matches the same two projections; its ``solve_rho`` uses
``exp(-rho^2/2) 1F1(d/2; 1/2; -rho^2/2)`` where ``E[cos(rho chi_d)] = 1F1(d/2; 1/2; -rho^2/2)``
(the extra factor is not ours). ``MarginalTable`` holds ``(psi_t, rho_t)`` on a grid of times,
computed once and cached on disk under a key of everything it depends on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path as FsPath

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.geometry.sphere import arccos_ratio


@dataclass(frozen=True)
class GeometricNoise:
    """``beta_t = beta_min^(1 - t) beta_max^t`` and what the bridge derives from it."""

    beta_min: float = 1e-3
    beta_max: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.beta_min <= self.beta_max:
            raise ConfigError(
                f"beta must satisfy 0 < beta_min <= beta_max, got {self.beta_min}, {self.beta_max}"
            )

    @property
    def _log_ratio(self) -> float:
        return math.log(self.beta_max / self.beta_min)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min * torch.exp(self._log_ratio * t)

    def remaining(self, t: Tensor) -> Tensor:
        """``B_t = int_t^1 beta_s ds`` (0 at ``t = 1``)."""
        if self._log_ratio == 0:
            return self.beta_min * (1 - t)
        # beta_max (1 - exp(-L (1 - t))) / L: exactly 0 at t = 1, no cancellation near it
        return -self.beta_max * torch.expm1(-self._log_ratio * (1 - t)) / self._log_ratio

    def gamma(self, t: Tensor) -> Tensor:
        """The drift coefficient ``beta_t / B_t`` (infinite at ``t = 1``)."""
        return self.beta(t) / self.remaining(t)

    def step(self, t: Tensor, t_next: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, s)`` of a bridge step from ``t`` to ``t_next``: the fraction of the way to the
        target and the noise's standard deviation per dimension."""
        b, b_next = self.remaining(t), self.remaining(t_next)
        return 1 - b_next / b, (b_next * (b - b_next) / b).clamp_min(0).sqrt()


def chi2(k: int, shape: torch.Size, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Exact draws of ``chi^2_k = 2 Gamma(k / 2)``: ``z^2`` for ``k = 1``, ``-2 log U`` for
    ``k = 2``, Marsaglia & Tsang's (2000) squeeze-free rejection sampler above (acceptance > 95%;
    rejected entries are redrawn until none is left)."""
    opts = {"generator": generator, "dtype": like.dtype, "device": like.device}
    if k <= 0:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    if k == 1:
        return normal(tuple(shape), generator, like).square()
    if k == 2:
        return -2 * torch.log1p(-torch.rand(shape, **opts))
    d = k / 2 - 1 / 3
    c = 1 / math.sqrt(9 * d)
    out = torch.empty(shape, dtype=like.dtype, device=like.device).flatten()
    todo = torch.arange(out.numel(), device=like.device)
    while todo.numel():
        z = normal(tuple(todo.shape), generator, like)
        u = torch.rand(todo.shape, **opts)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (
            torch.log(u) < z.square() / 2 + d - d * v + d * torch.log(v.clamp_min(1e-300))
        )
        out[todo[ok]] = 2 * d * v[ok]
        todo = todo[~ok]
    return out.view(shape)


def normal(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normals drawn in float32 (several times faster than float64 on CPU), as
    ``like``'s dtype."""
    z = torch.randn(shape, generator=generator, device=like.device)
    return z.to(like.dtype)


def radial_step(
    yw: Tensor, r: Tensor, a: Tensor, s: Tensor, dim: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """One geodesic-random-walk bridge step ``X <- exp_X(a log_X(e) + s P_X z)`` in the reduced
    coordinates ``X = (y, w, r)`` (``yw [..., 2]``, ``r [...]``) of ``S^dim``; ``a``, ``s``
    broadcast against ``r``."""
    y, w = yw.unbind(-1)
    z1, z2, z3 = normal((3, *r.shape), generator, r).unbind(0)
    rest = s.square() * chi2(dim - 2, r.shape, generator, r)  # |noise outside span(e, f, u)|^2
    dot = y * z1 + w * z2 + r * z3
    pull = a * arccos_ratio(y)  # a log_X(e) = pull (1 - y^2, -y w, -y r)
    v1 = pull * (1 - y.square()) + s * (z1 - y * dot)
    v2 = -pull * y * w + s * (z2 - w * dot)
    v3 = -pull * y * r + s * (z3 - r * dot)
    norm = (v1.square() + v2.square() + v3.square() + rest).sqrt()
    cos, sinc = torch.cos(norm), torch.sinc(norm / torch.pi)  # sinc = sin|v| / |v|
    y, w = cos * y + sinc * v1, cos * w + sinc * v2
    r = ((cos * r + sinc * v3).square() + sinc.square() * rest).sqrt()
    length = (y.square() + w.square() + r.square()).sqrt()
    return torch.stack([y, w], -1) / length[..., None], r / length


def start(c: float, like: Tensor) -> tuple[Tensor, Tensor]:
    """The reduced coordinates of ``x0`` (``y = c``, ``w = sqrt(1 - c^2)``, ``r = 0``), shaped
    and typed like ``like``."""
    y = torch.full_like(like, c)
    return torch.stack([y, torch.full_like(like, math.sqrt(1 - c * c))], -1), torch.zeros_like(y)


def simulate(
    noise: GeometricNoise,
    c: float,
    dim: int,
    t: Tensor,
    steps: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(y, w)`` of ``X_t`` (float64, shaped like ``t``) started at ``x0`` with ``<x0, e> = c``:
    ``steps`` bridge steps on the uniform grid of ``[0, t]`` (one grid per entry of ``t``)."""
    t = t.double()
    yw, r = start(c, t)
    for i in range(steps):
        a, s = noise.step(t * (i / steps), t * ((i + 1) / steps))
        yw, r = radial_step(yw, r, a, s, dim, generator)
    return yw, r


def mean_cosine(rho: np.ndarray, dim: int) -> np.ndarray:
    """``E[cos(rho R)]``, ``R ~ chi_dim``: the mean's norm of a Riemannian normal of spread
    ``rho`` on ``S^dim`` (by quadrature over ``R``; ``= 1F1(dim/2; 1/2; -rho^2/2)``)."""
    law = stats.chi(dim)
    r = np.linspace(law.ppf(1e-12), law.ppf(1 - 1e-12), 4001)
    w = law.pdf(r)
    w /= w.sum()
    rho = np.atleast_1d(rho)
    # blocks of 1,000 values of rho: the same numbers, without a [len(rho), 4001] matrix at once
    return np.concatenate(
        [np.cos(np.outer(b, r)) @ w for b in np.array_split(rho, -(-len(rho) // 1000))]
    )


def spread_for(norm: np.ndarray, dim: int) -> np.ndarray:
    """``rho`` with ``mean_cosine(rho) = norm`` on its first decreasing branch (``norm`` below
    that branch's minimum gets the minimum's ``rho``)."""
    rho = np.linspace(0, 6 / math.sqrt(dim) + 2, 20001)
    m = mean_cosine(rho, dim)
    first = int(np.argmax(np.diff(m) >= 0)) if (np.diff(m) >= 0).any() else len(m) - 1
    rho, m = rho[: first + 1], m[: first + 1]
    return np.interp(-np.clip(norm, m[-1], 1), -m, rho)


@dataclass(frozen=True)
class MarginalTable:
    """``(psi_t, rho_t)`` of the Riemannian normal approximation on ``times`` (a uniform grid of
    ``[0, 1]``): ``mu_t = cos(psi_t) e + sin(psi_t) f``, ``X_t ~ exp_mu(rho_t xi)``."""

    times: Tensor
    psi: Tensor
    rho: Tensor

    def at(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(psi, rho)`` at times ``t`` (linear interpolation)."""
        grid = self.times.to(t.device, torch.float64)
        t = t.double().clamp(0, 1)
        i = (torch.searchsorted(grid, t, right=True) - 1).clamp(0, len(grid) - 2)
        frac = (t - grid[i]) / (grid[i + 1] - grid[i])
        psi, rho = self.psi.to(t.device), self.rho.to(t.device)
        return psi[i] + frac * (psi[i + 1] - psi[i]), rho[i] + frac * (rho[i + 1] - rho[i])

    def state(self) -> dict[str, list[float]]:
        return {k: v.tolist() for k, v in (("psi", self.psi), ("rho", self.rho))}

    @classmethod
    def from_state(cls, state: dict[str, list[float]]) -> MarginalTable:
        psi = torch.tensor(state["psi"], dtype=torch.float64)
        return cls(
            torch.linspace(0, 1, len(psi), dtype=torch.float64),
            psi,
            torch.tensor(state["rho"], dtype=torch.float64),
        )


@dataclass(frozen=True)
class TableSpec:
    """Everything a ``MarginalTable`` depends on (its cache key)."""

    beta_min: float
    beta_max: float
    c: float  # <x0, e>
    dim: int
    points: int = 513
    paths: int = 1 << 14
    substeps: int = 2
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def moments(spec: TableSpec) -> tuple[Tensor, Tensor]:
    """Simulated ``E[y_t]`` and ``E[w_t]`` on the table's grid (``spec.paths`` walks of
    ``substeps`` bridge steps between grid points, seeded)."""
    noise = GeometricNoise(spec.beta_min, spec.beta_max)
    gen = torch.Generator().manual_seed(spec.seed)
    n = spec.paths
    yw, r = start(spec.c, torch.zeros(n, dtype=torch.float64))
    grid = torch.linspace(0, 1, (spec.points - 1) * spec.substeps + 1, dtype=torch.float64)
    means = [yw.mean(0)]
    for i in range(len(grid) - 1):
        a, s = noise.step(grid[i], grid[i + 1])
        yw, r = radial_step(yw, r, a.expand(n), s.expand(n), spec.dim, gen)
        if (i + 1) % spec.substeps == 0:
            means.append(yw.mean(0))
    m = torch.stack(means)
    return m[:, 0], m[:, 1]


def build_table(spec: TableSpec) -> MarginalTable:
    """Moment-match the simulated means (see the module docstring)."""
    ey, ew = moments(spec)
    norm = torch.sqrt(ey.square() + ew.square()).clamp(max=1)
    psi = torch.atan2(ew, ey)
    rho = torch.from_numpy(spread_for(norm.numpy(), spec.dim))
    rho[-1] = 0.0  # t = 1: the vertex itself
    psi[-1] = 0.0
    return MarginalTable(torch.linspace(0, 1, spec.points, dtype=torch.float64), psi, rho)


def cache_dir() -> FsPath:
    """``$SIMPLEXDIFF_CACHE`` or ``~/.cache/simplexdiff``."""
    return FsPath(os.environ.get("SIMPLEXDIFF_CACHE") or FsPath.home() / ".cache" / "simplexdiff")


def marginal_table(spec: TableSpec) -> MarginalTable:
    """The table of ``spec``, read from ``cache_dir()/rdlm/<key>.json`` or computed and written
    there (a few seconds)."""
    file = cache_dir() / "rdlm" / f"{spec.key()}.json"
    if file.exists():
        return MarginalTable.from_state(json.loads(file.read_text()))
    table = build_table(spec)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"spec": asdict(spec), **table.state()}))
        tmp.replace(file)
    except OSError:
        pass  # an unwritable cache only costs the recomputation
    return table
