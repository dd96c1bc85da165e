"""The shared sampling loop: the loop owns the time grid, conditioning and bookkeeping; each path
family contributes only its step, looked up by name in ``SAMPLERS``.

A step is ``step(path, state, logits, t, t_next, generator) -> state`` for a grid ``0 = t_0 < ... <
t_N = 1`` (``t = 1`` is data). Conditioned positions (``prompt``) are clamped by the path after
every step, so they never change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.paths.base import Denoiser, Path
from simplexdiff.registry import Registry

Step = Callable[..., Tensor]


@dataclass(frozen=True)
class Sampler:
    """A named step and the path families it applies to."""

    step: Step
    families: tuple[str, ...]


SAMPLERS: Registry[Sampler] = Registry("sampler")


def register(name: str, families: tuple[str, ...]) -> Callable[[Step], Step]:
    def add(step: Step) -> Step:
        sampler = Sampler(step, families)
        SAMPLERS.register(name)(lambda: sampler)
        return step

    return add


@register("euler", families=("continuous",))
def euler(
    path: Path,
    state: Tensor,
    logits: Tensor,
    t: Tensor,
    t_next: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Euler step of the x1-prediction field with the path's exponential map."""
    return path.euler_step(state, logits, t, t_next)  # type: ignore[attr-defined]


@dataclass
class SampleOutput:
    tokens: Tensor  # LongTensor [num_samples, length]
    nfe: int  # number of denoiser calls
    trajectory: list[Tensor] | None = None  # states after each step, when asked


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    path: Path,
    num_samples: int,
    length: int,
    steps: int,
    sampler: str | None = None,
    prompt: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    return_trajectory: bool = False,
) -> SampleOutput:
    """Draw ``num_samples`` sequences of ``length`` tokens in ``steps`` denoiser calls.

    ``prompt`` is a LongTensor ``[P]`` or ``[num_samples, P]`` of ids held fixed at the start of
    every sequence. ``device`` defaults to the denoiser's parameters' device when it has any.
    ``sampler=None`` takes the path's ``default_sampler``.
    """
    sampler = sampler or path.default_sampler
    chosen = SAMPLERS.build(sampler)
    if path.family not in chosen.families:
        usable = [n for n in SAMPLERS.names() if path.family in SAMPLERS.build(n).families]
        raise ConfigError(
            f"sampler {sampler!r} does not apply to the {path.family} path "
            f"{path.registry_name!r}; use one of: {', '.join(usable)}"
        )
    if steps < 1 or num_samples < 1 or length < 1:
        raise ConfigError("steps, num_samples and length must be positive")
    if device is None and isinstance(denoiser, torch.nn.Module):
        device = next(denoiser.parameters()).device
    fixed = torch.zeros(num_samples, length, dtype=torch.bool, device=device)
    fixed_ids = torch.zeros(num_samples, length, dtype=torch.long, device=device)
    if prompt is not None:
        prompt = torch.as_tensor(prompt, device=device).long().expand(num_samples, -1)
        if prompt.shape[1] > length:
            raise ConfigError(f"prompt of {prompt.shape[1]} tokens is longer than length {length}")
        if prompt.numel() and (prompt.min() < 0 or prompt.max() >= path.vocab_size):
            raise ConfigError(f"prompt ids must lie in [0, {path.vocab_size})")
        fixed[:, : prompt.shape[1]] = True
        fixed_ids[:, : prompt.shape[1]] = prompt
    state = path.clamp(path.prior(num_samples, length, generator, device), fixed, fixed_ids)
    grid = torch.linspace(0, 1, steps + 1, device=device)
    trajectory = [state] if return_trajectory else None
    for i in range(steps):
        t = grid[i].expand(num_samples)
        logits = denoiser(path.model_input(state), t)
        state = chosen.step(path, state, logits, grid[i], grid[i + 1], generator)
        state = path.clamp(state, fixed, fixed_ids)
        if trajectory is not None:
            trajectory.append(state)
    return SampleOutput(tokens=path.decode(state), nfe=steps, trajectory=trajectory)
