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

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""Any callable ``(inputs, t) -> logits [B, L, V]``; ``inputs`` are ids ``[B, L]`` or points
``[B, L, V]`` on the simplex, ``t`` has shape ``[B]``."""


@dataclass
class LossOutput:
    """A scalar training loss plus per-batch diagnostics (all float32 scalars)."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


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
        return {"vocab_size": self.vocab_size}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({opts})"

    # --- training ----------------------------------------------------------------------------
    def training_times(self, u: Tensor) -> Tensor:
        """Map stratified uniforms ``u in [0, 1)`` to the times this path trains on."""
        return u

    @abstractmethod
    def training_loss(
        self, denoiser: Denoiser, x1: Tensor, t: Tensor, generator: torch.Generator | None = None
    ) -> LossOutput:
        """Loss of ``denoiser`` on clean ids ``x1 [B, L]`` noised to times ``t [B]``."""

    def sequence_bound(
        self, denoiser: Denoiser, x1: Tensor, t: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Per-sequence estimate ``[B]`` (float32, nats per token) of the path's likelihood bound
        from one time ``t [B]`` per sequence: unbiased for the bound when ``t ~ U[0, 1)``. The
        training loss of a path with a bound and ``simplexdiff.eval.likelihood`` both use it."""
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

    def check_steps(self, free_positions: int, steps: int) -> None:
        """Refuse (``ConfigError``) a sampling run of ``steps`` steps that cannot fill
        ``free_positions`` positions per row; every step count suits most paths."""
        return None

    @abstractmethod
    def decode(self, state: Tensor) -> Tensor:
        """Token ids ``[B, L]`` read off a final state."""


def cross_entropy(logits: Tensor, x1: Tensor) -> Tensor:
    """Mean cross-entropy in nats over all positions, computed in float32."""
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, -2), x1.flatten())
