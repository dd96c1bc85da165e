"""The shared sampling loop: one interface for every path and any denoiser.

``sample(denoiser, path, num_samples, length, steps, sampler=...)`` runs the named step of
``SAMPLERS`` over a time grid from ``t = 0`` (the path's prior) to ``t = 1`` (data). The loop owns:

* the grid (uniform, or ``time_grid``: any increasing times from 0 to 1);
* conditioning: a ``prompt`` prefix and an ``infill`` pattern (ids where held fixed, ``-1`` where
  generated); the path clamps conditioned positions (continuous paths: to their vertex) after
  every step, so they never change;
* the x1 prediction handed to steps: classifier-free guidance (``cfg``), then ``temperature``,
  ``top_k``, ``top_p`` applied to the logits, denoiser calls counted (``nfe``) and, for a caching
  sampler, reused while the state is unchanged;
* the final decode: ``"argmax"`` of the final state, or ``"sample"``: a draw from the last
  prediction (continuous paths; discrete states are tokens already);
* seeding: every draw comes from ``generator``, so a seed gives bit-identical samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError, SamplingError
from simplexdiff.paths.base import Denoiser, Path
from simplexdiff.samplers.base import SAMPLERS, Sampler, StepContext
from simplexdiff.samplers.logits import check_shaping, shape_logits

DECODES = ("argmax", "sample")


@dataclass
class SampleOutput:
    tokens: Tensor  # LongTensor [num_samples, length]
    nfe: int  # number of denoiser calls
    trajectory: list[Tensor] | None = None  # the state before the first and after every step
    invalid_tokens: int = 0  # split continuous paths: decoded digit strings that spelled no token


class Predictor:
    """Calls the denoiser on a state, guides and shapes its logits, counts calls, optionally
    caches.

    Classifier-free guidance (Ho & Salimans 2022; for masked diffusion LLaDA, Nie et al. 2025,
    eq. 16): with scale ``cfg = w > 0`` and the conditioned positions ``hidden``, the logits are
    ``c + w (c - u)``, ``c`` the denoiser's logits of the state and ``u`` those of the state with
    the conditioned positions hidden (``Path.hide``: MASK for masked diffusion, as LLaDA; the
    barycenter for continuous paths, whose x1 prediction is so guided). Two denoiser calls per
    prediction; ``cfg = 0`` is the unguided model, one call."""

    def __init__(
        self,
        denoiser: Denoiser,
        path: Path,
        cache: bool,
        cfg: float = 0.0,
        hidden: Tensor | None = None,
        **shaping: Any,
    ) -> None:
        self.denoiser, self.path, self.cache, self.shaping = denoiser, path, cache, shaping
        self.cfg, self.hidden = float(cfg), hidden
        self.calls = 0
        self.last_state: Tensor | None = None
        self.last_logits: Tensor | None = None
        self.last_raw: Tensor | None = None  # the same call's logits before shaping

    def __call__(self, state: Tensor, t: Tensor) -> Tensor:
        if self.cache and self.last_state is not None and torch.equal(state, self.last_state):
            return self.last_logits  # type: ignore[return-value]
        times = torch.as_tensor(t, device=state.device, dtype=torch.float32).expand(state.shape[0])
        raw = self.path.denoise(self.denoiser, state, times)
        self.calls += 1
        if self.cfg:
            hidden = self.path.hide(state, self.hidden)  # type: ignore[arg-type]
            raw = raw + self.cfg * (raw - self.path.denoise(self.denoiser, hidden, times))
            self.calls += 1
        if not torch.isfinite(raw).all():
            raise SamplingError(
                f"the denoiser returned non-finite logits (NaN or inf) at t = {float(t):.4g}: "
                "the model has diverged"
            )
        logits = shape_logits(raw, **self.shaping)
        self.last_state, self.last_logits, self.last_raw = state, logits, raw
        return logits


def resolve(sampler: str | None, path: Path, denoiser: Denoiser) -> Sampler:
    """The sampler by name (``None``: the path's default), checked against the path and denoiser."""
    name = sampler or path.default_sampler
    chosen = SAMPLERS.build(name)
    if not chosen.fits(path):
        usable = [n for n in SAMPLERS.names() if SAMPLERS.build(n).fits(path)]
        raise ConfigError(
            f"sampler {name!r} does not apply to the {path.family} path {path.registry_name!r}; "
            f"use one of: {', '.join(usable)}"
        )
    if chosen.cache and getattr(denoiser, "time_conditioned", True):
        raise ConfigError(
            f"sampler {name!r} reuses predictions while the state is unchanged, which needs a "
            "denoiser that ignores time (e.g. DiT(time_conditioning=False)); use 'ancestral'"
        )
    return chosen


def time_grid_for(steps: int, time_grid: Tensor | None, device: Any) -> Tensor:
    if time_grid is None:
        return torch.linspace(0, 1, steps + 1, device=device)
    grid = torch.as_tensor(time_grid, dtype=torch.float32, device=device).flatten()
    if len(grid) != steps + 1 or grid[0] != 0 or grid[-1] != 1 or not (grid.diff() > 0).all():
        raise ConfigError(f"time_grid must increase from 0 to 1 in {steps + 1} points")
    return grid


def prompt_rows(prompt: Tensor | list[Tensor], n: int, device: Any = None) -> list[Tensor]:
    """One prompt per row for ``n`` rows: ``prompt`` is one prefix for every row (``[P]``), one
    per row (``[n, P]``), or a list of ``n`` prefixes of any lengths."""
    if isinstance(prompt, (list, tuple)):
        if len(prompt) != n:
            raise ConfigError(f"{len(prompt)} prompts for {n} rows: give one per row")
        return [torch.as_tensor(p, device=device).flatten() for p in prompt]
    p = torch.as_tensor(prompt, device=device)
    if p.ndim not in (1, 2) or (p.ndim == 2 and len(p) not in (1, n)):
        raise ConfigError(
            f"prompt must be [P], [n, P] or a list of n prompts, got {tuple(p.shape)}"
        )
    return list(p.expand(n, p.shape[-1]))


def conditioning(
    path: Path,
    num_samples: int,
    length: int,
    prompt: Tensor | list[Tensor] | None,
    infill: Tensor | None,
    device: Any,
) -> tuple[Tensor, Tensor]:
    """``(fixed [B, L] bool, ids [B, L])`` from a prompt prefix and an infill pattern. ``prompt``
    is one prefix for every row (``[P]`` or ``[B, P]``), or a list of ``B`` prefixes of any
    lengths, one per row."""
    ids = torch.full((num_samples, length), -1, dtype=torch.long, device=device)
    if infill is not None:
        infill = torch.as_tensor(infill, device=device).long()
        if infill.shape[-1] != length:
            raise ConfigError(f"infill has {infill.shape[-1]} positions, not length {length}")
        ids = infill.expand(num_samples, length).clone()
    rows = [] if prompt is None else [r.long() for r in prompt_rows(prompt, num_samples, device)]
    for i, row in enumerate(rows):
        if len(row) > length:
            raise ConfigError(f"prompt of {len(row)} tokens is longer than length {length}")
        ids[i, : len(row)] = row
    fixed = ids >= 0
    if (ids >= path.vocab_size).any() or (ids < -1).any():
        raise ConfigError(f"prompt / infill ids must lie in [0, {path.vocab_size}) (-1: free)")
    return fixed, ids.clamp_min(0)


@torch.no_grad()
def check_request(
    denoiser: Denoiser,
    path: Path,
    num_samples: int,
    length: int,
    steps: int,
    sampler: str | None = None,
    decode: str = "argmax",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    options: dict[str, Any] | None = None,
    free: int | None = None,
) -> Sampler:
    """The sampler ``sample`` would run, after every check that needs no drawing (a
    ``ConfigError`` naming the problem): name, fit to the path and denoiser, its options, counts,
    decode, shaping, and enough steps for ``free`` (default ``length``) generated positions."""
    chosen = resolve(sampler, path, denoiser)
    unknown = set(options or {}) - set(chosen.options)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {sorted(unknown)} for this sampler; "
            f"known: {sorted(chosen.options) or 'none'}"
        )
    if steps < 1 or num_samples < 1 or length < 1:
        raise ConfigError("steps, num_samples and length must be positive")
    if decode not in DECODES:
        raise ConfigError(f"unknown decode {decode!r}; known: {', '.join(DECODES)}")
    check_shaping(temperature, top_k, top_p)
    path.check_steps(length if free is None else free, steps)
    return chosen


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    path: Path,
    num_samples: int,
    length: int,
    steps: int,
    sampler: str | None = None,
    *,
    time_grid: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    prompt: Tensor | list[Tensor] | None = None,
    infill: Tensor | None = None,
    decode: str = "argmax",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    return_trajectory: bool = False,
    cfg: float = 0.0,
    **options: Any,
) -> SampleOutput:
    """Draw ``num_samples`` sequences of ``length`` tokens in ``steps`` steps of ``sampler``.

    ``denoiser`` is any callable ``(inputs, t) -> logits [B, L, V]``; ``sampler=None`` takes the
    path's ``default_sampler``; ``options`` are the sampler's own (e.g. ``block_length`` for
    ``semi_ar``, ``threshold`` for ``confidence``). ``device`` defaults to the denoiser's.
    ``cfg``: classifier-free guidance scale on the prompt / infill (``Predictor``; 0: none).
    Runs without gradients (no graph of the steps is kept, whatever the denoiser's parameters).
    """
    if device is None and isinstance(denoiser, torch.nn.Module):
        device = next(denoiser.parameters()).device
    fixed, fixed_ids = conditioning(path, num_samples, length, prompt, infill, device)
    if not cfg >= 0:
        raise ConfigError(f"cfg (the guidance scale) must be >= 0, got {cfg}")
    if cfg and not fixed.any():
        raise ConfigError("cfg guides on a prompt or infill: give one, or use cfg=0")
    free = int((~fixed).sum(-1).max()) if num_samples > 0 and length > 0 else 0
    chosen = check_request(
        denoiser, path, num_samples, length, steps, sampler, decode, temperature, top_k, top_p,
        options, free,
    )  # fmt: skip
    predict = Predictor(
        denoiser, path, chosen.cache, cfg, fixed, temperature=temperature, top_k=top_k, top_p=top_p
    )
    ctx = StepContext(
        path=path,
        predict=predict,
        grid=time_grid_for(steps, time_grid, device),
        index=0,
        free=~fixed,
        generator=generator,
        options={**chosen.options, **options},
        model_logits=lambda: predict.last_raw,
    )
    state = path.clamp(path.prior(num_samples, length, generator, device), fixed, fixed_ids)
    trajectory = [state] if return_trajectory else None
    for i in range(steps):
        ctx.index = i
        state = path.clamp(chosen.step(ctx, state), fixed, fixed_ids)
        if trajectory is not None:
            trajectory.append(state)
    invalid = torch.zeros_like(fixed)
    if path.family != "continuous":
        tokens = path.decode(state)
    elif decode == "sample" and predict.last_logits is not None:
        tokens, invalid = path.draw(predict.last_logits, generator)  # type: ignore[attr-defined]
    else:
        tokens, invalid = path.read(state)  # type: ignore[attr-defined]
    tokens = torch.where(fixed, fixed_ids, tokens)
    invalid = int((invalid & ~fixed).sum())
    return SampleOutput(tokens, predict.calls, trajectory, invalid_tokens=invalid)
