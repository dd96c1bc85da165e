"""Autoregressive baseline as a path: the same LightningModule, data and budget, exact NLL.

The denoiser is a causal model (``models.CausalTransformer``, registered as ``"causal"``) that reads
``[BOS, x_1, ..., x_{L-1}]`` with ``BOS = V`` (the spare embedding row every backbone has) and
predicts ``x_1, ..., x_L``; it ignores ``t``. The loss is the exact negative log-likelihood in
nats per token, so ``sequence_bound`` is the exact NLL whatever ``t`` is.

Sampling through the shared loop (``ancestral``): the state is the sequence with not-yet-generated
positions holding ``V``; each step fills the first open position from the model's next-token
distribution (float64 draw), so the loop still owns the grid and ``steps`` must be at least the
number of open positions (``length`` minus the prompt); steps left over once every position is
filled change nothing (each still costs a model call).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.paths.base import (
    Condition,
    Denoiser,
    LossOutput,
    Path,
    batch_mean,
    cross_entropy,
    free_mean,
)
from simplexdiff.paths.discrete import categorical


class Autoregressive(Path):
    """Left-to-right factorisation ``p(x) = prod_l p(x_l | x_<l)`` with a causal denoiser."""

    family = "autoregressive"
    bound = "exact_nll"
    default_sampler = "ancestral"

    @property
    def bos_id(self) -> int:
        return self.vocab_size

    @property
    def input_vocab_size(self) -> int:
        return self.vocab_size + 1

    @property
    def causal(self) -> bool:
        return True

    # --- training and the bound --------------------------------------------------------------
    def model_input(self, state: Tensor) -> Tensor:
        """``[BOS, s_1, ..., s_{L-1}]``: position ``l`` of the output predicts ``s_l``."""
        bos = torch.full_like(state[:, :1], self.bos_id)
        return torch.cat([bos, state[:, :-1]], 1)

    def sequence_bound(
        self,
        denoiser: Denoiser,
        x1: Tensor,
        t: Tensor,
        generator: torch.Generator | None = None,
        cond: Condition | None = None,
    ) -> Tensor:
        """Exact NLL per token ``[B]`` (``t`` only passes through to the denoiser, which ignores
        it); with ``cond``, over the free positions: ``-log p(response | prompt)`` per response
        token when the fixed positions are a prefix (the prompt)."""
        logits = denoiser(self.model_input(self.denoiser_view(x1, cond)), t)
        return free_mean(cross_entropy(logits, x1), cond)

    def training_loss(
        self,
        denoiser: Denoiser,
        x1: Tensor,
        t: Tensor,
        generator: torch.Generator | None = None,
        cond: Condition | None = None,
    ) -> LossOutput:
        loss = batch_mean(self.sequence_bound(denoiser, x1, t, generator, cond), cond)
        return LossOutput(loss, {"nll": loss.detach()})

    # --- sampling ----------------------------------------------------------------------------
    def prior(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Nothing generated yet: every position open (``V``)."""
        return torch.full((batch, length), self.bos_id, dtype=torch.long, device=device)

    def check_steps(self, free_positions: int, steps: int) -> None:
        if free_positions > steps:
            raise ConfigError(
                f"autoregressive sampling fills one position per step: {free_positions} open "
                f"positions but {steps} steps; use steps >= length - prompt length"
            )

    def ancestral_step(
        self,
        state: Tensor,
        logits: Tensor,
        t: Tensor,
        t_next: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Fill the first open position of each row from ``softmax(logits)`` there."""
        open_ = state == self.bos_id
        rows = torch.arange(state.shape[0], device=state.device)
        first = open_.long().argmax(-1)  # 0 when the row is full; then nothing changes below
        tokens = categorical(torch.softmax(logits[rows, first].double(), -1), generator)
        filled = state.clone()
        filled[rows, first] = torch.where(open_[rows, first], tokens, state[rows, first])
        return filled

    def clamp(self, state: Tensor, fixed: Tensor, ids: Tensor) -> Tensor:
        return torch.where(fixed, ids, state)

    def decode(self, state: Tensor) -> Tensor:
        return state
