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
  for every masked position, keep the ``ceil(masked / steps_left)`` most confident (the model's
  probability of the drawn token, before temperature: ``rank_by="model"``; or ``"shaped"``, or
  ``"random"`` for LLaDA's random remasking), re-mask the rest.
* ``semi_ar`` (masked path): LLaDA's semi-autoregressive decoding: blocks of ``block_length``
  positions from the first position after the prompt, left to right, each given an equal share of
  the steps and decoded by ``remask``.
* ``confidence`` (masked path): parallel decoding by a confidence threshold (Fast-dLLM, Wu et al.
  2025): reveal every masked position whose drawn token has probability above ``threshold``, at
  least the most confident one, and all of them at the last step.

The confidence-based steps are not exact samplers of the model (which positions are revealed
depends on the drawn tokens); they trade exactness for fewer steps. Every draw is float64.
Temperature 0 makes every step greedy (``simplexdiff.samplers.logits``).
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


RANKINGS = ("model", "shaped", "random")


def _draw_with_confidence(ctx: StepContext, state: Tensor) -> tuple[Tensor, Tensor]:
    """A token for every position from the (shaped) prediction, and the confidence that ranks
    the positions, by the step's ``rank_by`` option: ``"model"``, the denoiser's own probability
    of the drawn token, before temperature / top-k / top-p (LLaDA's ``low_confidence``, so
    temperature 0 still ranks by how sure the model is); ``"shaped"``, its probability under the
    shaped prediction; ``"random"``, a uniform draw (LLaDA's ``random`` remasking)."""
    rank_by = ctx.options.get("rank_by", "model")
    if rank_by not in RANKINGS:
        raise ConfigError(f"unknown rank_by {rank_by!r}; known: {', '.join(RANKINGS)}")
    probs = torch.softmax(ctx.predict(state, ctx.t).double(), -1)
    tokens = categorical(probs, ctx.generator)
    if rank_by == "random":
        u = torch.rand(tokens.shape, generator=ctx.generator, device=tokens.device)
        return tokens, u.double()
    if rank_by == "model" and ctx.model_logits is not None:
        probs = torch.softmax(ctx.model_logits().double(), -1)
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


@register("remask", applies_to=("masked",), rank_by="model")
def remask(ctx: StepContext, state: Tensor) -> Tensor:
    """Low-confidence remasking with an equal number of reveals per step."""
    open_ = _masked(ctx, state)
    if not open_.any():
        return state
    tokens, conf = _draw_with_confidence(ctx, state)
    return _reveal_most_confident(
        state, tokens, conf, open_, per_step_quota(open_.sum(-1), ctx.steps_left)
    )


@register("semi_ar", applies_to=("masked",), block_length=32, rank_by="model", eos_id=None)
def semi_ar(ctx: StepContext, state: Tensor) -> Tensor:
    """Blocks of ``block_length`` positions counted from each row's first generated position
    (right after its prompt, as LLaDA's ``generate``), left to right, each decoded by ``remask``
    in an equal share of the steps (``steps`` must be a multiple of the number of blocks of the
    longest generated span; a shorter row's last blocks are empty).

    With ``eos_id`` (the tokenizer's end-of-document id) generation stops at EOS: a row that
    generated an EOS in a finished block has the rest of its positions set to EOS, and once every
    row has stopped the denoiser is not called again (fewer denoiser calls than steps)."""
    length = state.shape[-1]
    block = int(ctx.options["block_length"])
    if block < 1:
        raise ConfigError(f"block_length must be positive, got {block}")
    free_rows = ctx.free.any(-1)
    if not free_rows.any():
        return state
    start = torch.where(free_rows, ctx.free.int().argmax(-1), length)  # first free position
    blocks = int(((length - start + block - 1) // block).max())
    if ctx.steps % blocks:
        raise ConfigError(
            f"semi_ar needs steps divisible by the {blocks} blocks of {block} positions after "
            "the prompt"
        )
    per_block = ctx.steps // blocks
    first = start[:, None] + (ctx.index // per_block) * block
    pos = torch.arange(length, device=state.device)
    eos = ctx.options.get("eos_id")
    if eos is not None:  # rows that ended in a finished block: EOS to the end
        done = ((state == int(eos)) & ctx.free & (pos < first)).any(-1, keepdim=True)
        state = torch.where(done & _masked(ctx, state), int(eos), state)
    open_ = _masked(ctx, state) & (pos >= first) & (pos < first + block)
    if not open_.any():
        return state
    tokens, conf = _draw_with_confidence(ctx, state)
    steps_left = per_block - ctx.index % per_block
    return _reveal_most_confident(
        state, tokens, conf, open_, per_step_quota(open_.sum(-1), steps_left)
    )


@register("confidence", applies_to=("masked",), threshold=0.9, rank_by="model")
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
