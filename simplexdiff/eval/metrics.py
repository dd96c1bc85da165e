"""torchmetrics ``Metric`` classes for likelihoods: bits per token, bits per byte, perplexity.

Both keep two float64 sums, ``nats`` (negative log-likelihood or bound, in nats) and ``tokens``
(how many tokens it covers), reduced by ``sum`` across processes; so the value after a DDP sync is
exactly the one a single process fed every batch would give (total nats / total tokens), whatever
the split of batches or sequence lengths.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric


class _NatsPerToken(Metric):
    """Accumulates ``sum(nats)`` and ``sum(num_tokens)`` in float64."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    nats: Tensor
    tokens: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("nats", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("tokens", default=zero.clone(), dist_reduce_fx="sum")

    def update(self, nats: Tensor | float, num_tokens: Tensor | int | float) -> None:
        """Add ``nats`` (a total, or per-sequence totals ``[B]`` that are summed) covering
        ``num_tokens`` tokens (a count, or per-sequence counts that are summed)."""
        nats = torch.as_tensor(nats, device=self.nats.device).to(torch.float64)
        num_tokens = torch.as_tensor(num_tokens, device=self.tokens.device).to(torch.float64)
        self.nats += nats.sum()
        self.tokens += num_tokens.sum()

    def nats_per_token(self) -> Tensor:
        """``nats / tokens`` (float64; NaN before any token was seen)."""
        return self.nats / self.tokens


class BitsPerToken(_NatsPerToken):
    """Bits per token, ``sum(nats) / sum(tokens) / ln 2`` (bits per char for char tokenizers)."""

    def compute(self) -> Tensor:
        return self.nats_per_token() / math.log(2)


class BitsPerByte(BitsPerToken):
    """Bits per UTF-8 byte of the text, ``sum(nats) / sum(bytes) / ln 2``: ``update(nats,
    num_bytes)``, the count being bytes instead of tokens. Tokenizers differ in how many bytes a
    token covers; bytes do not, so rows with different tokenizers compare in this unit."""


class Perplexity(_NatsPerToken):
    """Per-token perplexity, ``exp(sum(nats) / sum(tokens))``."""

    def compute(self) -> Tensor:
        return torch.exp(self.nats_per_token())
