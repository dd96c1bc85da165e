"""Steps of the discrete families for the shared loop.

``ancestral``: one step of the path's reverse chain from ``t`` to ``t_next`` (``path.ancestral_step``):
masked, reveal each masked position with probability ``(alpha(t_next) - alpha(t)) / (1 - alpha(t))``
with a token from the prediction, revealed tokens carried over; uniform, a draw from UDLM's posterior
with the prediction plugged in; autoregressive, the next token at the first open position. Every
categorical draw is made in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simplexdiff.paths.base import Path
from simplexdiff.samplers.sample import register


@register("ancestral", families=("discrete", "autoregressive"))
def ancestral(
    path: Path,
    state: Tensor,
    logits: Tensor,
    t: Tensor,
    t_next: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One ancestral step of the path's reverse chain."""
    return path.ancestral_step(state, logits, t, t_next, generator)  # type: ignore[attr-defined]
