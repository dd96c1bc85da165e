"""Time schedules ``kappa: [0, 1] -> [0, 1]``, increasing, ``kappa(0) = 0``, ``kappa(1) = 1``.

For the masked path ``kappa = alpha(t)`` is the probability that a token is revealed at ``t``
(DESIGN.md: log-linear ``alpha(t) = t``, cosine ``alpha(t) = 1 - cos(pi t / 2)``). For a continuous
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

    @abstractmethod
    def __call__(self, t: Tensor) -> Tensor:
        """``kappa(t)``."""

    @abstractmethod
    def derivative(self, t: Tensor) -> Tensor:
        """``d kappa / dt``."""


SCHEDULES: Registry[Schedule] = Registry("schedule")


@SCHEDULES.register("loglinear")
class LogLinear(Schedule):
    """``kappa(t) = t`` (MDLM's log-linear noise schedule, written in the t = 1-is-data convention)."""

    def __call__(self, t: Tensor) -> Tensor:
        return t

    def derivative(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


@SCHEDULES.register("cosine")
class Cosine(Schedule):
    """``kappa(t) = 1 - cos(pi t / 2)``: slow near the prior, fast near data."""

    def __call__(self, t: Tensor) -> Tensor:
        return 1 - torch.cos(math.pi / 2 * t)

    def derivative(self, t: Tensor) -> Tensor:
        return math.pi / 2 * torch.sin(math.pi / 2 * t)
