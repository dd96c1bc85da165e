"""What every path offers the trainer and the sampler.

Time convention (all families): ``t = 0`` is the prior / noise, ``t = 1`` is data. A path owns the
noisy state: how to draw it in closed form given clean ids (training is simulation-free), what the
denoiser reads, its training loss, and how a sampler moves it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.paths.time_warp import TimeWarp

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""Any callable ``(inputs, t) -> logits [B, L, V]``; ``inputs`` are ids ``[B, L]`` or points
``[B, L, V]`` on the simplex, ``t`` has shape ``[B]``."""


@dataclass
class Condition:
    """What a conditional batch holds fixed: ``fixed [B, L]`` (bool) marks prompt positions, held
    at their clean tokens (never noised, never scored: the path's loss and bound are those of
    ``-log p(free positions | fixed ones)``, per free token); ``hidden [B]`` (bool, optional) marks
    rows whose fixed positions the denoiser sees as the path's null state instead (``Path.hide``:
    prompt dropout, which trains the unconditional model of classifier-free guidance)."""

    fixed: Tensor
    hidden: Tensor | None = None

    @classmethod
    def prefix(cls, prompt_len: Tensor, length: int, hidden: Tensor | None = None) -> Condition:
        """Prompts as the first ``prompt_len [B]`` positions of rows of ``length``."""
        positions = torch.arange(length, device=prompt_len.device)
        return cls(positions < prompt_len[:, None], hidden)

    @property
    def free(self) -> Tensor:
        return ~self.fixed

    def hidden_positions(self) -> Tensor | None:
        """``[B, L]``: fixed positions of hidden rows (``None`` without ``hidden``; no check of
        whether any row is hidden, which would cost a device sync every training step)."""
        if self.hidden is None:
            return None
        return self.fixed & self.hidden[:, None].to(self.fixed.device)


def free_mean(values: Tensor, cond: Condition | None) -> Tensor:
    """Per-row mean of ``values [B, L]`` over the free positions (all of them without a
    condition; 0 for a row without one)."""
    if cond is None:
        return values.mean(-1)
    free = cond.free
    return torch.where(free, values, 0).sum(-1) / free.sum(-1).clamp_min(1)


def batch_mean(per_row: Tensor, cond: Condition | None) -> Tensor:
    """Batch mean of per-row means over free positions, weighting each row by its free count:
    the loss per free token of the batch (the plain mean without a condition)."""
    if cond is None:
        return per_row.mean()
    count = cond.free.sum(-1).to(per_row.dtype)
    return (per_row * count).sum() / count.sum().clamp_min(1)


@dataclass
class LossOutput:
    """A scalar training loss plus per-batch diagnostics (all float32 scalars)."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    sequence_ce: Tensor | None = None
    """Per-sequence x1 cross-entropy ``[B]`` (detached), where the path supplies it: the feedback
    of a learned time warp (``Path.observe``)."""


class Path(ABC):
    """Base class. Subclasses register through ``simplexdiff.paths.PATHS``."""

    family: ClassVar[str]  # "continuous", "discrete" or "autoregressive"
    registry_name: ClassVar[str]
    bound: ClassVar[str | None] = None
    """Name of the path's likelihood bound: ``"nelbo"`` / ``"exact_nll"`` (a time integral of
    ``sequence_bound``), ``"dequantized_flow_bound"`` (continuous paths, ``simplexdiff.eval.
    flow_bound``), or ``None`` where the path has none yet."""
    default_sampler: ClassVar[str] = "euler"
    """The sampler ``generate`` and ``simplexdiff sample`` use when none is named."""

    warp: TimeWarp | None = None
    """CDCD's learned time warp (``time_warp.py``), where the path takes a ``warp`` option."""

    def __init__(self, vocab_size: int) -> None:
        if int(vocab_size) < 2:
            raise ConfigError(f"vocab_size must be at least 2, got {vocab_size}")
        self.vocab_size = int(vocab_size)

    # --- description -------------------------------------------------------------------------
    @property
    def input_vocab_size(self) -> int:
        """Number of embedding rows the denoiser needs (``V``, or ``V + 1`` with a MASK id)."""
        return self.vocab_size

    @property
    def model_vocab_size(self) -> int:
        """The ``vocab_size`` of the denoiser this path trains (its per-position width)."""
        return self.vocab_size

    @property
    def causal(self) -> bool:
        """Whether the denoiser must be causal (the autoregressive baseline)."""
        return False

    def config(self) -> dict[str, Any]:
        """Plain-data description: ``PATHS.build(**config)`` rebuilds the path."""
        return {"name": self.registry_name, **self._options()}

    def _options(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            **({"warp": self.warp.config()} if self.warp else {}),
        }

    def state(self) -> dict[str, Any] | None:
        """Data the path computed or learned that a checkpoint must carry (``None``: nothing; a
        learned time warp: its moving sums; RDLM: its marginal tables); ``load_state`` puts it
        back."""
        return {"time_warp": self.warp.state()} if self.warp else None

    def load_state(self, state: dict[str, Any] | None) -> None:
        if self.warp is not None and state and "time_warp" in state:
            self.warp.load_state(state["time_warp"])

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({opts})"

    # --- training ----------------------------------------------------------------------------
    def training_times(self, u: Tensor) -> Tensor:
        """Map stratified uniforms ``u in [0, 1)`` to the times this path trains on."""
        return u

    def warp_times(self, u: Tensor) -> Tensor:
        """Training uniforms through the learned time warp (the identity without one); the
        trainer calls ``training_times(warp_times(u))``, validation ``training_times(u)``."""
        return u if self.warp is None else self.warp(u)

    def observe(self, tau: Tensor, sequence_ce: Tensor) -> None:
        """Training feedback for the learned time warp: the warped uniforms ``tau [N]`` of a
        step (of every process) and their sequences' x1 cross-entropy."""
        if self.warp is not None:
            self.warp.observe(tau, sequence_ce)

    @abstractmethod
    def training_loss(
        self,
        denoiser: Denoiser,
        x1: Tensor,
        t: Tensor,
        generator: torch.Generator | None = None,
        cond: Condition | None = None,
    ) -> LossOutput:
        """Loss of ``denoiser`` on clean ids ``x1 [B, L]`` noised to times ``t [B]``; with
        ``cond``, of the free positions given the fixed ones, per free token."""

    def sequence_bound(
        self,
        denoiser: Denoiser,
        x1: Tensor,
        t: Tensor,
        generator: torch.Generator | None = None,
        cond: Condition | None = None,
    ) -> Tensor:
        """Per-sequence estimate ``[B]`` (float32, nats per token) of the path's likelihood bound
        from one time ``t [B]`` per sequence: unbiased for the bound when ``t ~ U[0, 1)``; with
        ``cond``, of ``-log p(free | fixed)`` per free token. The training loss of a path with a
        bound and ``simplexdiff.eval.likelihood`` both use it."""
        raise ConfigError(f"no likelihood bound for {self.family} path {self.registry_name!r} yet")

    def bound_times(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Times ``t`` and importance weights ``w`` for stratified uniforms ``v in [0, 1)`` such
        that ``E_v[w * sequence_bound(t)]`` is the bound (a change of variables ``t = t(v)``,
        ``w = dt/dv``). Here the identity; a path whose integrand is heavy-tailed in ``t``
        overrides it."""
        return v, torch.ones_like(v)

    # --- sampling ----------------------------------------------------------------------------
    @abstractmethod
    def prior(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """A draw of the state at ``t = 0``."""

    @abstractmethod
    def model_input(self, state: Tensor) -> Tensor:
        """What the denoiser reads for ``state``: ids ``[B, L]`` or simplex points ``[B, L, V]``."""

    def denoise(self, denoiser: Denoiser, state: Tensor, t: Tensor) -> Tensor:
        """The denoiser's logits for ``state`` at times ``t [B]``, laid out like the state."""
        return denoiser(self.model_input(state), t)

    @abstractmethod
    def clamp(self, state: Tensor, fixed: Tensor, ids: Tensor) -> Tensor:
        """Hold the positions where ``fixed`` is true at the clean tokens ``ids``."""

    def hide(self, state: Tensor, where: Tensor) -> Tensor:
        """The state with the positions ``where [B, L]`` set to the path's null state, "nothing
        known": id ``V`` for id states (MASK of the masked path, BOS of the autoregressive one,
        the backbone's spare embedding row for the uniform path). Classifier-free guidance's
        unconditional prediction reads the prompt hidden so (LLaDA masks it)."""
        return torch.where(where, self.vocab_size, state)

    def conditioned(self, state: Tensor, x1: Tensor, cond: Condition | None) -> Tensor:
        """A noisy ``state`` of clean ``x1`` with the fixed positions of ``cond`` at their clean
        tokens (nothing changes without a condition)."""
        return state if cond is None else self.clamp(state, cond.fixed, x1)

    def denoiser_view(self, state: Tensor, cond: Condition | None) -> Tensor:
        """The state the denoiser reads: hidden rows' prompts at the null state (``hide``)."""
        where = None if cond is None else cond.hidden_positions()
        return state if where is None else self.hide(state, where)

    def check_steps(self, free_positions: int, steps: int) -> None:
        """Refuse (``ConfigError``) a sampling run of ``steps`` steps that cannot fill
        ``free_positions`` positions per row; every step count suits most paths."""
        return None

    @abstractmethod
    def decode(self, state: Tensor) -> Tensor:
        """Token ids ``[B, L]`` read off a final state."""


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-position cross-entropy ``[B, L]`` in nats of ``logits [B, L, V]`` against ids
    ``targets [B, L]``, computed in float32 (float64 for float64 logits)."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    ce = torch.nn.functional.cross_entropy(
        logits.to(dtype).flatten(0, -2), targets.flatten(), reduction="none"
    )
    return ce.view(targets.shape)
