"""Shaping the x1 prediction before a step: temperature, top-k and top-p (nucleus) filtering.

Removed tokens get ``-inf`` so their probability is exactly 0 (the model never outputs this:
DESIGN's finite large negative applies to the model's MASK logit, not to user-side filtering).
Temperature 0 is greedy: only the most likely token keeps its logit, so every draw from the
prediction is its argmax (LLaDA's default decoding), for every sampler.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError


def check_shaping(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature >= 0:
        raise ConfigError(f"temperature must be 0 (greedy) or positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p must lie in (0, 1], got {top_p}")


def shape_logits(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """``logits / temperature`` (temperature 0: the largest logit alone), then keep the ``top_k``
    largest, then the smallest set of tokens whose probability reaches ``top_p`` (the most likely
    token always stays). Float32 out."""
    logits = logits.float()
    if temperature == 0:
        return logits.masked_fill(logits < logits.amax(-1, keepdim=True), float("-inf"))
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = torch.softmax(sorted_logits.double(), -1)
        before = probs.cumsum(-1) - probs  # mass strictly before each token
        drop_sorted = before >= top_p  # the first token has 0 before it: never dropped
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits
