"""Learned time warping (Dieleman et al. 2022, *Continuous diffusion for categorical data*, CDCD).

Uniform training times waste steps on solved tasks: a continuous path's x1 cross-entropy
``H(tau) = E[-log p(x1 | x_tau)]`` falls from the unigram entropy at the prior to nearly 0 long
before data (text8, Fisher-Rao: 4.08 bits at ``t = 0``, 0.09 at 0.3, 0.00 from 0.5 on). CDCD fits
a monotone piecewise-linear function ``F`` to the loss as a function of time and draws training
times by inverting it, so that times are spread evenly in loss: the density of training times is
``|F'(tau)| / (F(0) - F(1))``, most where the loss changes fastest.

Here ``tau in [0, 1)`` is the uniform variable a path maps to its training times
(``Path.training_times``), so one warp serves every path. The fit is closed form, not a second
network: an exponential moving average of the loss in each of ``bins`` equal bins of ``tau``
(``decay`` per training step), made non-increasing by weighted isotonic regression
(``scipy.optimize.isotonic_regression``, weights the bins' moving counts); the loss drop across
bin ``i`` is read at its edges, the midpoints of the fitted means of neighbouring bins. Each bin
gets the share ``floor / bins`` plus ``(1 - floor)`` times its share of the drop, so every time
keeps being trained and observed; until every bin has been observed the draw is uniform.
Inside a bin the draw is uniform (the CDF is piecewise linear through the bin edges).

Unlike RDLM's window, the warp does not reweight: as in CDCD it changes which times the
objective weighs (the continuous paths' bounds are computed separately, so the weighting is free).
The loss fitted is the per-sequence x1 cross-entropy whatever the objective: the information
about ``x1`` still missing at ``tau``, non-increasing in time for the exact denoiser.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import isotonic_regression
from torch import Tensor

from simplexdiff.errors import ConfigError

WARP_DEFAULTS = {"bins": 64, "floor": 0.1, "decay": 0.99}


class TimeWarp:
    """CDCD's learned warp of training times on ``[0, 1)``; see the module docstring."""

    def __init__(self, bins: int = 64, floor: float = 0.1, decay: float = 0.99) -> None:
        if int(bins) < 2:
            raise ConfigError(f"the time warp needs at least 2 bins, got {bins}")
        if not 0 < floor <= 1:
            raise ConfigError(f"the time warp's floor must lie in (0, 1], got {floor}")
        if not 0 < decay <= 1:
            raise ConfigError(f"the time warp's decay must lie in (0, 1], got {decay}")
        self.bins, self.floor, self.decay = int(bins), float(floor), float(decay)
        self.sums = torch.zeros(self.bins, dtype=torch.float64)
        self.counts = torch.zeros(self.bins, dtype=torch.float64)
        self.cdf = torch.linspace(0, 1, self.bins + 1, dtype=torch.float64)
        """The warp's CDF at the bin edges (uniform until every bin has been observed)."""

    @classmethod
    def build(cls, options: dict[str, Any] | bool | None) -> TimeWarp | None:
        """From a recipe's ``warp`` option: ``None`` / ``False`` (no warp), ``True`` or ``{}``
        (the defaults), or a dict of ``bins``, ``floor``, ``decay``."""
        if options is None or options is False:
            return None
        options = {} if options is True else dict(options)
        unknown = set(options) - set(WARP_DEFAULTS)
        if unknown:
            raise ConfigError(
                f"unknown time warp option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(WARP_DEFAULTS)}"
            )
        return cls(**{**WARP_DEFAULTS, **options})

    def config(self) -> dict[str, Any]:
        return {"bins": self.bins, "floor": self.floor, "decay": self.decay}

    # --- the fit -------------------------------------------------------------------------------
    def observe(self, tau: Tensor, loss: Tensor) -> None:
        """One training step's feedback: per-sequence losses ``loss [N]`` at ``tau [N]``."""
        index = (tau.detach().double().cpu() * self.bins).long().clamp(0, self.bins - 1)
        loss = loss.detach().double().cpu()
        self.sums = self.decay * self.sums + torch.bincount(index, loss, self.bins)
        self.counts = self.decay * self.counts + torch.bincount(index, None, self.bins).double()
        self.cdf = self._fit()

    def fitted_loss(self) -> Tensor | None:
        """The non-increasing fit of the mean loss per bin (``None`` before every bin is seen)."""
        if not bool((self.counts > 0).all()):
            return None
        means = (self.sums / self.counts).numpy()
        fit = isotonic_regression(means, weights=self.counts.numpy(), increasing=False).x
        return torch.tensor(np.ascontiguousarray(fit), dtype=torch.float64)

    def _fit(self) -> Tensor:
        fit = self.fitted_loss()
        uniform = torch.full((self.bins,), 1 / self.bins, dtype=torch.float64)
        if fit is None:
            return torch.cat([torch.zeros(1, dtype=torch.float64), uniform.cumsum(0)])
        edges = torch.cat([fit[:1], (fit[1:] + fit[:-1]) / 2, fit[-1:]])
        drop = edges[:-1] - edges[1:]  # >= 0, sums to fit[0] - fit[-1]
        total = float(drop.sum())
        share = drop / total if total > 0 else uniform
        mass = self.floor * uniform + (1 - self.floor) * share
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), mass.cumsum(0)])
        return cdf / cdf[-1]

    # --- the draw ------------------------------------------------------------------------------
    def __call__(self, u: Tensor) -> Tensor:
        """``tau = CDF^-1(u)`` for uniforms ``u in [0, 1)`` (monotone: stratified ``u`` stay
        stratified), in ``u``'s dtype and device."""
        cdf = self.cdf.to(u.device)
        v = u.double().clamp(0, 1)
        i = (torch.searchsorted(cdf, v, right=True) - 1).clamp(0, self.bins - 1)
        lo, hi = cdf[i], cdf[i + 1]
        within = torch.where(hi > lo, (v - lo) / (hi - lo).clamp_min(1e-300), 0.5)
        tau = ((i + within.clamp(0, 1)) / self.bins).to(u.dtype)
        return tau.clamp(max=1 - torch.finfo(u.dtype).eps)  # [0, 1) in u's dtype

    def density(self, tau: Tensor) -> Tensor:
        """The density of the warped times at ``tau`` (1 everywhere for the uniform warp)."""
        i = (tau.double() * self.bins).long().clamp(0, self.bins - 1)
        mass = (self.cdf[1:] - self.cdf[:-1]).to(tau.device)
        return (mass[i] * self.bins).to(tau.dtype)

    # --- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, Tensor]:
        return {"sums": self.sums.clone(), "counts": self.counts.clone()}

    def load_state(self, state: dict[str, Any]) -> None:
        sums = torch.as_tensor(state["sums"], dtype=torch.float64)
        counts = torch.as_tensor(state["counts"], dtype=torch.float64)
        if sums.shape != (self.bins,) or counts.shape != (self.bins,):
            raise ConfigError(
                f"the stored time warp has {tuple(sums.shape)} bins, this path {self.bins}"
            )
        self.sums, self.counts = sums.clone(), counts.clone()
        self.cdf = self._fit()
