"""The sampler registry and what a step sees.

A step is ``step(ctx, state) -> state``: it moves the state from ``ctx.t`` to ``ctx.t_next`` on the
loop's grid ``0 = t_0 < ... < t_N = 1`` (``t = 1`` is data) and calls ``ctx.predict(state, t)`` for
the denoiser's (shaped) logits as often as it needs (Euler once, midpoint twice, a finished masked
state not at all). Each path family contributes steps; the loop (``sample.py``) owns the grid,
conditioning, logit shaping, caching and the count of denoiser calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from simplexdiff.paths.base import Path
from simplexdiff.registry import Registry


@dataclass
class StepContext:
    """What the loop hands to a step."""

    path: Path
    predict: Callable[[Tensor, Tensor], Tensor]  # (state, scalar t) -> logits [B, L, V], float32
    grid: Tensor  # the time grid, [steps + 1]
    index: int  # this step moves from grid[index] to grid[index + 1]
    free: Tensor  # bool [B, L]: positions the sampler generates (not conditioned)
    generator: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    # the denoiser's own logits at the last ``predict`` call, before temperature / top-k / top-p
    model_logits: Callable[[], Tensor] | None = None

    @property
    def t(self) -> Tensor:
        return self.grid[self.index]

    @property
    def t_next(self) -> Tensor:
        return self.grid[self.index + 1]

    @property
    def steps(self) -> int:
        return len(self.grid) - 1

    @property
    def steps_left(self) -> int:
        """Steps left including this one."""
        return self.steps - self.index


Step = Callable[[StepContext, Tensor], Tensor]


@dataclass(frozen=True)
class Sampler:
    """A named step, what it applies to (path families or path names), its options with defaults,
    and whether the denoiser's answer may be reused while the state does not change (only valid
    for a denoiser that ignores time)."""

    step: Step
    applies_to: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    cache: bool = False

    def fits(self, path: Path) -> bool:
        """``applies_to`` names path families, path names, or a continuous path's ``motion``
        (``"flow"``: an ODE, ``"diffusion"``: an SDE)."""
        names = (path.family, path.registry_name, getattr(path, "motion", None))
        return any(name in self.applies_to for name in names)


SAMPLERS: Registry[Sampler] = Registry("sampler")


def register(
    name: str, applies_to: tuple[str, ...], cache: bool = False, **options: Any
) -> Callable[[Step], Step]:
    """Register ``step`` under ``name``; ``options`` are its keyword options and their defaults."""

    def add(step: Step) -> Step:
        sampler = Sampler(step, applies_to, options, cache)
        SAMPLERS.register(name)(lambda: sampler)
        return step

    return add


def per_step_quota(remaining: Tensor, steps_left: int) -> Tensor:
    """How many of ``remaining`` positions to fill now so that an equal share is filled in each of
    the ``steps_left`` steps and none is left after the last: ``ceil(remaining / steps_left)``."""
    return remaining if steps_left <= 1 else (remaining + steps_left - 1) // steps_left
