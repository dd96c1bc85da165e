"""Steps of the discrete families (masked, uniform, autoregressive) for the shared loop.

* ``ancestral``: one step of the path's reverse chain from ``t`` to ``t_next``
  (``path.ancestral_step``): masked, reveal each masked position with probability
  ``(alpha(t_next) - alpha(t)) / (1 - alpha(t))`` with a token from the prediction, revealed tokens
  carried over (MDLM); uniform, a draw from UDLM's posterior with the prediction plugged in;
  autoregressive, the next token at the first open position. Exact given an exact denoiser.
* ``cached``: ``ancestral``, but the denoiser is not called again while the state has not changed
  (MDLM's caching; valid only for a denoiser that ignores time, which the loop checks). Same
  samples as ``ancestral`` for the same seed, fewer denoiser calls when steps outnumber tokens.
* ``remask`` (masked path): LLaDA's low-confidence remasking (Nie et al. 2025, Alg. 5): draw a token
  for every masked position, keep the ``ceil(masked / steps_left)`` most confident (probability of
  the drawn token), re-mask the rest.
* ``semi_ar`` (masked path): LLaDA's semi-autoregressive decoding: blocks of ``block_length``
  positions left to right, each given an equal share of the steps and decoded by ``remask``.
* ``confidence`` (masked path): parallel decoding by a confidence threshold (Fast-dLLM, Wu et al.
  2025): reveal every masked position whose drawn token has probability above ``threshold``, at
  least the most confident one, and all of them at the last step.

The confidence-based steps are not exact samplers of the model (which positions are revealed
depends on the drawn tokens); they trade exactness for fewer steps. Every draw is float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.paths.discrete import categorical
from simplexdiff.samplers.base import StepContext, per_step_quota, register


@register("ancestral", applies_to=("discrete", "autoregressive"))
def ancestral(ctx: StepContext, state: Tensor) -> Tensor:
    """One ancestral step of the path's reverse chain."""
    logits = ctx.predict(state, ctx.t)
    return ctx.path.ancestral_step(state, logits, ctx.t, ctx.t_next, ctx.generator)  # type: ignore[attr-defined]


register("cached", applies_to=("discrete", "autoregressive"), cache=True)(ancestral)


def _draw_with_confidence(ctx: StepContext, state: Tensor) -> tuple[Tensor, Tensor]:
    """A token for every position from the prediction, and the probability of the drawn token."""
    probs = torch.softmax(ctx.predict(state, ctx.t).double(), -1)
    tokens = categorical(probs, ctx.generator)
    return tokens, probs.gather(-1, tokens[..., None]).squeeze(-1)


def _reveal_most_confident(
    state: Tensor, tokens: Tensor, conf: Tensor, open_: Tensor, quota: Tensor
) -> Tensor:
    """Reveal, in each row, the ``quota`` open positions of highest confidence."""
    conf = conf.masked_fill(~open_, -1.0)
    order = conf.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order)
    )
    return torch.where(open_ & (rank < quota[:, None]), tokens, state)


def _masked(ctx: StepContext, state: Tensor) -> Tensor:
    return (state == ctx.path.mask_id) & ctx.free  # type: ignore[attr-defined]


@register("remask", applies_to=("masked",))
def remask(ctx: StepContext, state: Tensor) -> Tensor:
    """Low-confidence remasking with an equal number of reveals per step."""
    open_ = _masked(ctx, state)
    if not open_.any():
        return state
    tokens, conf = _draw_with_confidence(ctx, state)
    return _reveal_most_confident(
        state, tokens, conf, open_, per_step_quota(open_.sum(-1), ctx.steps_left)
    )


@register("semi_ar", applies_to=("masked",), block_length=32)
def semi_ar(ctx: StepContext, state: Tensor) -> Tensor:
    """Blocks of ``block_length`` positions, left to right, each decoded by ``remask`` in an equal
    share of the steps (``steps`` must be a multiple of the number of blocks)."""
    length = state.shape[-1]
    block = int(ctx.options["block_length"])
    if block < 1:
        raise ConfigError(f"block_length must be positive, got {block}")
    blocks = -(-length // block)
    if ctx.steps % blocks:
        raise ConfigError(
            f"semi_ar needs steps divisible by the {blocks} blocks of {block} positions"
        )
    per_block = ctx.steps // blocks
    b = ctx.index // per_block
    in_block = torch.zeros_like(state, dtype=torch.bool)
    in_block[:, b * block : (b + 1) * block] = True
    open_ = _masked(ctx, state) & in_block
    if not open_.any():
        return state
    tokens, conf = _draw_with_confidence(ctx, state)
    steps_left = per_block - ctx.index % per_block
    return _reveal_most_confident(
        state, tokens, conf, open_, per_step_quota(open_.sum(-1), steps_left)
    )


@register("confidence", applies_to=("masked",), threshold=0.9)
def confidence(ctx: StepContext, state: Tensor) -> Tensor:
    """Reveal every masked position whose drawn token is at least ``threshold`` likely (at least
    one per row, all at the last step)."""
    open_ = _masked(ctx, state)
    if not open_.any():
        return state
    tokens, conf = _draw_with_confidence(ctx, state)
    if ctx.steps_left <= 1:
        return torch.where(open_, tokens, state)
    best = conf.masked_fill(~open_, -1.0).argmax(-1, keepdim=True)
    sure = open_ & (conf >= float(ctx.options["threshold"]))
    sure.scatter_(-1, best, open_.gather(-1, best))
    return torch.where(sure, tokens, state)
