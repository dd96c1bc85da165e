"""Time schedules ``kappa: [0, 1] -> [0, 1]``, increasing, ``kappa(0) = 0``, ``kappa(1) = 1``
(MDLM's ``linear`` has ``kappa(0) = exp(-10)``, documented in its class as ``at_zero``).

For the masked path ``kappa = alpha(t)`` is the probability that a token is revealed at ``t``
(DESIGN.md: log-linear ``alpha(t) = t``, cosine ``alpha(t) = 1 - cos(pi t / 2)``; MDLM's linear
``alpha(t) = exp(-10 (1 - t))``). For a continuous
path it reparametrises time: the state at ``t`` is the base path's state at ``s = kappa(t)``; the
schedule changes which times training and sampling spend their effort on, not the path's endpoints.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from simplexdiff.registry import Registry


class Schedule(ABC):
    registry_name: str
    at_zero: float = 0.0
    """``kappa(0)``: exactly 0 except where a schedule documents otherwise (MDLM's ``linear``)."""

    @abstractmethod
    def __call__(self, t: Tensor) -> Tensor:
        """``kappa(t)``."""

    @abstractmethod
    def derivative(self, t: Tensor) -> Tensor:
        """``d kappa / dt``."""

    def complement(self, t: Tensor) -> Tensor:
        """``1 - kappa(t)`` (the masking probability), without cancellation where it matters."""
        return 1 - self(t)

    def inverse(self, s: float, iters: int = 60) -> float:
        """``t`` with ``kappa(t) = s``, by bisection (``kappa`` increases on ``[0, 1]``); ``0`` for
        ``s <= kappa(0)``."""
        lo, hi = 0.0, 1.0
        for _ in range(iters):
            mid = (lo + hi) / 2
            if float(self(torch.tensor(mid, dtype=torch.float64))) < s:
                lo = mid
            else:
                hi = mid
        return lo


SCHEDULES: Registry[Schedule] = Registry("schedule")


@SCHEDULES.register("loglinear")
class LogLinear(Schedule):
    """``kappa(t) = t`` (MDLM's log-linear noise schedule, written in the t = 1-is-data convention)."""

    def __call__(self, t: Tensor) -> Tensor:
        return t

    def derivative(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def inverse(self, s: float, iters: int = 60) -> float:
        return min(max(float(s), 0.0), 1.0)


@SCHEDULES.register("cosine")
class Cosine(Schedule):
    """``kappa(t) = 1 - cos(pi t / 2)``: slow near the prior, fast near data."""

    def __call__(self, t: Tensor) -> Tensor:
        return 1 - torch.cos(math.pi / 2 * t)

    def derivative(self, t: Tensor) -> Tensor:
        return math.pi / 2 * torch.sin(math.pi / 2 * t)

    def complement(self, t: Tensor) -> Tensor:
        return torch.cos(math.pi / 2 * t)


@SCHEDULES.register("linear")
class Linear(Schedule):
    """MDLM's *linear* noise schedule, ``kappa(t) = exp(-sigma_max (1 - t))``, ``sigma_max = 10``.

    MDLM (Sahoo et al. 2024; ``noise_schedule.py`` of kuleshov-group/mdlm, class ``Linear``) runs
    time the other way (``s = 0`` data, ``s = 1`` noise) with total noise ``sigma(s) = sigma_min +
    s (sigma_max - sigma_min)``, linear in ``s``, and keeps a token with probability
    ``alpha = exp(-sigma(s))``. Here ``s = 1 - t``, with the class defaults ``sigma_min = 0``,
    ``sigma_max = 10`` (the repository's ``configs/noise/linear.yaml`` uses ``sigma_min = 1e-3``,
    which would leave ``kappa(1) = exp(-1e-3)`` short of 1 by 1e-3; we keep ``sigma_min = 0``).

    Endpoints: ``kappa(1) = 1`` exactly; ``kappa(0) = exp(-10) = 4.54e-5`` (``at_zero``), not 0.
    Paths whose bound depends on it account for it (the masked and uniform paths add the prior
    term at ``t = 0``); for a continuous path it starts the reparametrised time at ``s = 4.5e-5``.
    """

    sigma_max = 10.0
    at_zero = math.exp(-sigma_max)

    def __call__(self, t: Tensor) -> Tensor:
        return torch.exp(-self.sigma_max * (1 - t))

    def derivative(self, t: Tensor) -> Tensor:
        return self.sigma_max * torch.exp(-self.sigma_max * (1 - t))

    def complement(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.sigma_max * (1 - t))
