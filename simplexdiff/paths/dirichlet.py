"""Dirichlet path: ``x_s ~ Dir(1 + alpha(s) e_k)`` with its conditional flow (Stark et al. 2024,
*Dirichlet Flow Matching with Applications to DNA Sequence Design*).

Concentration schedule: ``1 + alpha(s) = (1 + alpha_max)**s``, so ``alpha(0) = 0`` (the prior
``Dir(1)``, uniform on the simplex) and ``alpha(1) = alpha_max``; ``alpha`` moves at a constant rate
in ``log(1 + alpha)``, the scale on which the evidence ``x_k**alpha`` for a token grows.
**The data end is not the vertex:** at ``s = 1`` the state is the peaked ``Dir(1 + alpha_max e_k)``
and ``decode`` takes the argmax (as Stark et al., who stop at a finite ``alpha_max``). With the
default ``alpha_max = 50`` and 27 symbols (text8) the argmax of a draw differs from ``k`` with
probability ``1.2e-14``, and a context-free Bayes posterior ``softmax(alpha_max log x)`` leaves
less than ``1e-15`` on other tokens: larger values only add time where nothing is left to learn
(30 would leave ``4e-11``, 20 ``6e-6``). Raise it for larger vocabularies.

Conditional field (their ``u_t(x | e_k) = C(x_k, t) (e_k - x)``; their time ``t`` is our ``alpha``)::

    u_s(x | e_k) = alpha'(s) C(x_k, alpha(s)) (e_k - x),
    C(y, a) = -dI_y(a+1, K-1)/da * B(a+1, K-1) / (y**a (1 - y)**(K-1)),

with ``I`` the regularized incomplete beta function: the marginal ``x_k ~ Beta(1 + a, K - 1)`` is
moved by its CDF-preserving 1-D flow and ``x_{-k} / (1 - x_k) ~ Dir(1)`` is kept. The formula is a
``0/0`` at both faces (``y**a``, ``(1-y)**(K-1)``), so ``C`` is computed as a ratio of integrals that
never forms it: with ``m = psi(a+1) - psi(a+K)`` and ``dI/da = (1/B) int_0^y z^a (1-z)^(K-2) (log z
- m) dz``, the integrand over ``[0, y]`` (or over ``[y, 1]``, which carries the opposite sign) is
divided by its value at ``y`` and integrated by tanh-sinh quadrature in float64 (``scipy.special``
for ``psi``, ``betaln``, ``xlogy``); the side is the one on which that ratio stays bounded. The
limits come out exactly: ``C(0, a > 0) = 0``, ``C(1, a) = (psi(a+K) - psi(a+1)) / (K-1)``. Relative
accuracy against mpmath: about ``1e-12`` for ``a <= 1000`` and any ``y`` in ``(0, 1)``.

``interpolate(x0, e_k, s)`` is that flow applied to a prior point (``scipy.special.betaincinv``:
``I_{y_s}(1 + alpha(s), K - 1) = I_{y_0}(1, K - 1)``, other coordinates scaled), so a ``Dir(1)``
draw from the seeded ``generator`` becomes an exact ``Dir(1 + alpha(s) e_k)`` draw and training
keeps the shared prior-then-interpolate structure. The x1-prediction field is
``v(x, s) = sum_k p_k u_s(x | e_k)``; an Euler step is ``x + h v`` projected onto the simplex.
The flow factor is a fixed target in training: no gradient flows through it (only through ``p``).
For the likelihood bound (``simplexdiff.eval.flow_bound``) the field is differentiated in the
state: ``dC/dy`` has a closed form in ``C`` itself (``flow_factor_dy``, from the continuity
equation of the ``Beta(1 + a, K - 1)`` marginal), and the kernel density is ``Dir(1 + alpha e_k)``
(``log_conditional``). It is
computed on the CPU in float64 (about 100 nodes per point). The sampler needs it at every
coordinate of every state (``N L K`` points per step), all at one concentration: there the field
tabulates ``C(., a)`` once per ``a`` on a uniform grid of ``logit y`` (``TABLE_NODES`` points over
``[-40, 37]``, the float64 range of ``y`` strictly inside ``(0, 1)``) and interpolates linearly,
in the state's dtype on its device. Measured interpolation error: below ``1e-6 C(1, a)``
everywhere (``K`` 2 to 512, ``a`` 0 to 500), and ``C(0, a) = 0`` stays exact. When a call holds
fewer than ``TABLE_NODES`` points per distinct concentration (training with ``objective=fm``, the
tests' single points) the quadrature is used directly.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from scipy import special
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.paths.continuous import FlatSimplexPath

DEFAULT_ALPHA_MAX = 50.0
TABLE_NODES = 8193
_LOGIT_LOW, _LOGIT_HIGH = -40.0, 37.0  # sigmoid(37) rounds to 1.0 in float64


def _tanh_sinh(h: float = 1 / 16, t_max: float = 3.2) -> tuple[np.ndarray, ...]:
    """Tanh-sinh nodes on ``(0, 1)``: ``v = 1 / (1 + exp(-pi sinh t))``. Returns ``v``, ``1 - v``,
    ``log v``, ``log(1 - v)`` (all from the same softplus, accurate at both ends, never 0 or 1 in
    the logs) and the weights. ``h = 1/16`` on ``|t| <= 3.2`` (103 nodes) reaches ``1e-12``."""
    t = np.arange(-t_max, t_max + h / 2, h)
    u = math.pi * np.sinh(t)
    log_v, log_1mv = -np.logaddexp(0, -u), -np.logaddexp(0, u)
    w = h * math.pi * np.cosh(t) * np.exp(log_v + log_1mv)
    return np.exp(log_v), np.exp(log_1mv), log_v, log_1mv, w


_NODES = _tanh_sinh()
_CHUNK = 4096


def flow_factor(y: np.ndarray, a: np.ndarray, n_other: int) -> np.ndarray:
    """``C(y, a)`` of Stark et al. for ``y = x_k`` in ``[0, 1]``, concentration ``a >= 0`` and
    ``n_other = K - 1``: the conditional field is ``alpha' C (e_k - x)``. float64, elementwise,
    finite on the closed interval (see the module docstring for the method)."""
    y, a = np.broadcast_arrays(np.asarray(y, np.float64), np.asarray(a, np.float64))
    if not ((a >= 0).all() and (y >= 0).all() and (y <= 1).all()):  # also refuses NaN
        raise ValueError("flow_factor needs a >= 0 and y in [0, 1]")
    shape, y, a = y.shape, y.ravel(), a.ravel()
    out = np.empty_like(y)
    for i in range(0, y.size, _CHUNK):
        out[i : i + _CHUNK] = _flow_factor_flat(y[i : i + _CHUNK], a[i : i + _CHUNK], n_other)
    return out.reshape(shape)


def _flow_factor_flat(y: np.ndarray, a: np.ndarray, q: int) -> np.ndarray:
    v, one_minus_v, log_v, log_1mv, w = _NODES
    m = special.digamma(a + 1) - special.digamma(a + 1 + q)  # E log y under Beta(a + 1, q)
    # Split at the mode of z^a (1 - z)^(q-1) (moved inside (0, 1) when a < 1 or q = 1): left of it the
    # integrand over [0, y] divided by its value at y is at most e; right of it, over [y, 1], at most
    # max(e, K) (see the module docstring); each side avoids the cancellation of the other near its end.
    big_a = np.maximum(a, 1.0)
    left = y < big_a / (big_a + max(q - 1, 1))
    out = np.empty_like(y)
    if left.any():
        yl, al, ml = y[left, None], a[left, None], m[left, None]
        # z = y v: ratio v^a ((1 - y v) / (1 - y))^(q - 1), dz = y dv
        ratio = np.exp(al * log_v + (q - 1) * (np.log1p(-yl * v) - np.log1p(-yl)))
        lower = yl[:, 0] * (ratio * (log_v - ml) * w).sum(-1)
        lower += special.xlogy(yl[:, 0], yl[:, 0]) * (ratio * w).sum(-1)  # y log y = 0 at y = 0
        out[left] = -lower / (1 - yl[:, 0])  # y < 1 on this side
    right = ~left
    if right.any():
        yr, ar, mr = y[right, None], a[right, None], m[right, None]
        # 1 - z = (1 - y) v: ratio (z / y)^a v^(q - 1); the (1 - y) of dz cancels C's 1 / (1 - y)
        high = yr > 0.5
        log_z = np.where(
            high,
            np.log1p(-np.where(high, 1 - yr, 0.5) * v),
            np.log(yr + (1 - yr) * one_minus_v),
        )
        ratio = np.exp(ar * log_z - special.xlogy(ar, yr) + (q - 1) * log_v)
        out[right] = (ratio * (log_z - mr) * w).sum(-1)
    return out


@functools.lru_cache(maxsize=256)
def _flow_factor_grid(a: float, n_other: int) -> np.ndarray:
    y = special.expit(np.linspace(_LOGIT_LOW, _LOGIT_HIGH, TABLE_NODES))
    return flow_factor(y, np.full_like(y, a), n_other)


def tabulated_flow_factor(y: Tensor, a: float, n_other: int) -> Tensor:
    """``C(y, a)`` for a tensor ``y`` in ``[0, 1]`` at one concentration ``a``: linear
    interpolation in ``logit y`` of ``flow_factor`` on ``TABLE_NODES`` grid points (cached per
    ``(a, n_other)``), computed in ``y``'s dtype on its device. Below the grid's first point
    ``y_min = sigmoid(-40)`` it is ``C(y_min) y / y_min``, so ``C(0, a) = 0`` exactly."""
    grid = torch.from_numpy(_flow_factor_grid(float(a), int(n_other))).to(y.device, y.dtype)
    scale = (TABLE_NODES - 1) / (_LOGIT_HIGH - _LOGIT_LOW)
    pos = ((torch.logit(y) - _LOGIT_LOW) * scale).clamp(0, TABLE_NODES - 1)
    i = pos.long().clamp_max(TABLE_NODES - 2)
    c = torch.lerp(grid[i], grid[i + 1], pos - i)
    y_min = math.exp(_LOGIT_LOW) / (1 + math.exp(_LOGIT_LOW))
    return torch.where(y < y_min, grid[0] * (y / y_min), c)


def flow_factor_dy(y: Tensor, a: Tensor, c: Tensor, n_other: int) -> Tensor:
    """``dC/dy`` from the 1-D continuity equation of ``x_k ~ Beta(1 + a, K - 1)`` moved by
    ``dy/da = C (1 - y)``: with ``m = psi(a + 1) - psi(a + K)`` and ``q = K - 1``,
    ``C' = [m - log y - C a (1 - y) / y + q C] / (1 - y)`` (``c = C(y, a)``). Taken at ``y``
    clamped into ``[1e-300, 1 - 1e-6]`` (``C`` recomputed there), where the ``0/0`` at ``y = 1``
    and the ``log y`` at ``y = 0`` stay finite; both ends are null sets of the flow."""
    yc = y.clamp(1e-300, 1 - 1e-6)
    moved = yc != y
    if moved.any():
        c = c.clone()
        c[moved] = torch.from_numpy(
            flow_factor(yc[moved].cpu().numpy(), a[moved].cpu().numpy(), n_other)
        ).to(c)
    m = torch.digamma(a + 1) - torch.digamma(a + 1 + n_other)
    return (m - torch.log(yc) - c * a * (1 - yc) / yc + n_other * c) / (1 - yc)


class _FlowFactor(torch.autograd.Function):
    """``C(y, a)`` by quadrature (float64) with ``flow_factor_dy`` as its derivative in ``y``; no
    gradient for ``a`` (the likelihood bound differentiates the field in the state only)."""

    @staticmethod
    def forward(ctx: Any, y: Tensor, a: Tensor, n_other: int) -> Tensor:
        c = torch.from_numpy(flow_factor(y.detach().cpu().numpy(), a.cpu().numpy(), n_other))
        c = c.to(y.device, y.dtype)
        ctx.save_for_backward(y, a, c)
        ctx.n_other = n_other
        return c

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        y, a, c = ctx.saved_tensors
        return grad * flow_factor_dy(y, a, c, ctx.n_other), None, None


def betainc_da(p: np.ndarray, q: np.ndarray | float, x: np.ndarray) -> np.ndarray:
    """``d I_x(p, q) / d p`` of the regularized incomplete beta function (``p >= 1``), from the
    flow factor: ``-x^(p-1) (1-x)^q / B(p, q) * C(x, p - 1)`` (integer ``q``)."""
    p, x = np.broadcast_arrays(np.asarray(p, np.float64), np.asarray(x, np.float64))
    q = int(q)
    log_scale = special.xlogy(p - 1, x) + special.xlog1py(q, -x) - special.betaln(p, q)
    return -np.exp(log_scale) * flow_factor(x, p - 1, q)


def transport(
    y0: np.ndarray, r0: np.ndarray, a: np.ndarray, n_other: int
) -> tuple[np.ndarray, np.ndarray]:
    """The conditional flow of ``x_k`` from ``s = 0`` to concentration ``a``: ``(y_s, 1 - y_s)`` with
    ``I_{y_s}(1 + a, K - 1) = I_{y_0}(1, K - 1) = 1 - r0^(K-1)`` for ``y0 = x0_k`` and
    ``r0 = 1 - y0`` (given separately so that neither loses digits). Each tail is inverted on
    its own side (``betaincinv`` below the median, the complement above)."""
    q = n_other
    y0, r0, a = np.broadcast_arrays(*(np.asarray(z, np.float64) for z in (y0, r0, a)))
    survival = r0**q  # P(Y0 > y0)
    low = survival >= 0.5
    y, r = np.empty_like(y0), np.empty_like(y0)
    cdf = -np.expm1(q * np.log1p(-y0[low]))  # y0 <= 1 - 2^(-1/q) < 1 here
    y[low] = special.betaincinv(a[low] + 1, q, cdf)
    r[low] = 1 - y[low]
    r[~low] = special.betaincinv(q, a[~low] + 1, survival[~low])
    y[~low] = 1 - r[~low]
    return y, r


class DirichletPath(FlatSimplexPath):
    """Dirichlet flow matching on the flat simplex; ``alpha_max``: concentration at ``s = 1``."""

    def __init__(
        self,
        vocab_size: int,
        objective: str = "ce",
        t_eps: float | None = None,
        schedule: str = "loglinear",
        alpha_max: float = DEFAULT_ALPHA_MAX,
        split: dict[str, Any] | None = None,
        warp: dict[str, Any] | bool | None = None,
    ) -> None:
        super().__init__(vocab_size, objective, t_eps, schedule, split, warp)
        if not 0 < alpha_max < math.inf:
            raise ConfigError(f"alpha_max must be positive and finite, got {alpha_max}")
        self.alpha_max = float(alpha_max)
        self._log_rate = math.log1p(self.alpha_max)

    def _options(self) -> dict[str, Any]:
        return {**super()._options(), "alpha_max": self.alpha_max}

    # --- the concentration schedule ----------------------------------------------------------
    def alpha(self, s: Tensor) -> Tensor:
        """``alpha(s) = (1 + alpha_max)**s - 1``."""
        return torch.expm1(self._log_rate * s)

    def alpha_rate(self, s: Tensor) -> Tensor:
        """``d alpha / ds = log(1 + alpha_max) (1 + alpha(s))``."""
        return self._log_rate * torch.exp(self._log_rate * s)

    def _alpha_np(self, s: Tensor, shape: torch.Size) -> np.ndarray:
        s = torch.as_tensor(s).detach().to("cpu", torch.float64)
        return np.broadcast_to(self.alpha(s).numpy(), shape)

    # --- geometry ----------------------------------------------------------------------------
    def log_conditional(self, state: Tensor, s: Tensor) -> Tensor:
        """``log Dir(x; 1 + alpha(s) e_k)`` for every ``k``: ``lgamma(V + a) - lgamma(1 + a) +
        a log x_k`` with respect to the reference of ``prior_log_density`` (``Dir(1)`` is
        ``lgamma(V)``); ``-inf`` off the simplex."""
        a = self.alpha(torch.as_tensor(s, dtype=state.dtype, device=state.device))[..., None]
        v = self.dim
        log_p = torch.lgamma(v + a) - torch.lgamma(1 + a) + torch.special.xlogy(a, state)
        inside = (state >= -16 * torch.finfo(state.dtype).eps).all(-1, keepdim=True)
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``x0 ~ Dir(1)`` carried by the conditional flow to ``Dir(1 + alpha(t) e_k)``."""
        x = x0.detach().to("cpu", torch.float64).numpy()
        k = x1.argmax(-1).cpu().numpy()[..., None]
        on_k = np.arange(self.dim) == k
        total = x.sum(-1)
        y0 = np.take_along_axis(x, k, -1)[..., 0] / total
        rest = np.where(on_k, 0.0, x)
        r0 = rest.sum(-1) / total
        a = self._alpha_np(t, y0.shape)
        y, r = transport(y0, r0, a, self.dim - 1)
        # other coordinates keep their proportions; r0 = 0 only at the vertex, where r = 0 too
        scale = np.divide(r, r0 * total, out=np.zeros_like(r), where=r0 > 0)
        xt = np.where(on_k, y[..., None], rest * scale[..., None])
        c = flow_factor(y, a, self.dim - 1)
        rate = self.alpha_rate(torch.as_tensor(t).to("cpu", torch.float64)).numpy()
        ut = (np.broadcast_to(rate, c.shape) * c)[..., None] * (on_k - xt)
        return self._back(xt, x0), self._back(ut, x0)

    def field(self, state: Tensor, probs: Tensor, t: Tensor) -> Tensor:
        """``alpha'(t) sum_j p_j C(x_j, alpha(t)) (e_j - x)``; ``C`` at every coordinate of ``x``."""
        # Rounding drift only: states are simplex points (prior, interpolate and move keep them so).
        c = self._flow_factor(state.clamp(0.0, 1.0), t, probs.dtype)
        rate = self.alpha_rate(torch.as_tensor(t, device=state.device, dtype=probs.dtype))
        pc = probs * c
        v = pc - pc.sum(-1, keepdim=True) * state.to(probs.dtype)
        return rate[..., None] * v

    def _flow_factor(self, y: Tensor, t: Tensor, dtype: torch.dtype) -> Tensor:
        """``C(y, alpha(t))`` at every coordinate, in ``dtype``: the quadrature (differentiable in
        ``y``) where the bound differentiates the field or where it is cheaper, else tabulated per
        distinct time (see the module docstring)."""
        t = torch.as_tensor(t, device=y.device).expand(y.shape[:-1])
        times = torch.unique(t)
        differentiate = y.requires_grad and torch.is_grad_enabled()  # the bound's divergence
        if differentiate or len(times) * TABLE_NODES >= y.numel():
            a = self.alpha(t.to(torch.float64))[..., None].expand(y.shape)
            return _FlowFactor.apply(y.to(torch.float64), a, self.dim - 1).to(dtype)
        y = y.detach().to(dtype)
        alphas = self.alpha(times.to("cpu", torch.float64)).tolist()
        if len(times) == 1:
            return tabulated_flow_factor(y, alphas[0], self.dim - 1)
        out = torch.empty_like(y)
        for time, a in zip(times, alphas, strict=True):
            rows = t == time
            out[rows] = tabulated_flow_factor(y[rows], a, self.dim - 1)
        return out

    @staticmethod
    def _back(a: np.ndarray, like: Tensor) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(like.device, like.dtype)
