"""Dimension splitting: a token of a ``V``-symbol vocabulary written as ``m`` base-``b`` digits.

A continuous path's state is a point on a simplex per position: ``B * L * V`` numbers, which at
subword vocabularies (``V`` = 50,257) costs more than the whole backbone. RDLM (Jo & Hwang 2025,
"dimension splitting") writes each token as ``m = ceil(log_b V)`` digits, each a point on its own
``b``-simplex, so the state has ``B * L * m * b`` numbers (``m b = 64`` for ``V = 50,257, b =
16``). The digits of one token are consecutive positions of the path's state (``L m`` positions
of ``b`` symbols); the denoiser reads each token position as the ``m b`` coordinates of its digits
and predicts ``m`` distributions over ``b`` digits, i.e. a factorised distribution over digit
strings. Strings that spell an id ``>= V`` are not tokens: decoding takes the most probable
*valid* string (``best_valid``, exact, ``O(m b)`` per token), and a likelihood bound on the digit
strings of real tokens is a bound on the tokens (renormalising over valid strings only raises
their probability).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError


def digit_count(vocab_size: int, base: int) -> int:
    """``m = ceil(log_base V)``, in integers: the fewest base-``base`` digits for ``V`` ids."""
    m, reach = 1, base
    while reach < vocab_size:
        m, reach = m + 1, reach * base
    return m


class DigitCode:
    """Ids ``0 .. V - 1`` <-> big-endian base-``b`` digit strings of length ``m``."""

    def __init__(self, vocab_size: int, base: int) -> None:
        if not isinstance(base, int) or isinstance(base, bool) or base < 2:
            raise ConfigError(f"split base must be an integer of at least 2, got {base!r}")
        if base >= vocab_size:
            raise ConfigError(
                f"split base {base} is not below the vocabulary size {vocab_size}: nothing to split"
            )
        self.vocab_size, self.base = vocab_size, base
        self.m = digit_count(vocab_size, base)
        self._powers = base ** torch.arange(self.m - 1, -1, -1)  # [m], most significant first
        self._last = self.to_digits(torch.tensor([vocab_size - 1]))  # digits of V - 1, [m]

    def to_digits(self, ids: Tensor) -> Tensor:
        """``[..., L]`` ids -> ``[..., L m]`` digits."""
        powers = self._powers.to(ids.device)
        return (ids[..., None] // powers % self.base).flatten(-2)

    def to_ids(self, digits: Tensor) -> Tensor:
        """``[..., L m]`` digits -> ``[..., L]`` ids (``>= V`` for an invalid string)."""
        return self._value(digits.unflatten(-1, (-1, self.m)))

    def _value(self, grouped: Tensor) -> Tensor:
        """``[..., m]`` digit groups -> ``[...]`` ids."""
        return (grouped * self._powers.to(grouped.device)).sum(-1)

    def best_valid(self, log_probs: Tensor) -> tuple[Tensor, Tensor]:
        """The most probable valid id under independent digit distributions ``log_probs``
        ``[..., L m, b]``, and whether the unconstrained best string was invalid (``[..., L]``).

        A string is valid iff it is lexicographically ``<= c``, the digits of ``V - 1``: it is
        ``c`` itself, or it equals ``c`` up to some position ``j``, has a digit below ``c_j`` there
        and anything after. The best string of each such form is the tight prefix, the best
        digit below ``c_j``, then each later digit's own argmax; the answer is the best of these
        ``m + 1`` candidates."""
        lp = log_probs.unflatten(-2, (-1, self.m)).double()  # [..., L, m, b]
        last = self._last.to(lp.device)
        tight = lp.gather(-1, last.expand(*lp.shape[:-1])[..., None])[..., 0]  # [..., L, m]
        prefix = torch.cat([torch.zeros_like(tight[..., :1]), tight.cumsum(-1)], -1)  # [.., m+1]
        free_best, free_arg = lp.max(-1)  # [..., L, m]
        suffix = free_best.flip(-1).cumsum(-1).flip(-1)
        suffix = torch.cat([suffix, torch.zeros_like(suffix[..., :1])], -1)  # [..., L, m + 1]
        below = torch.arange(self.base, device=lp.device) < last[:, None]  # [m, b]
        lower_best, lower_arg = lp.masked_fill(~below, -torch.inf).max(-1)  # [..., L, m]
        scores = torch.cat([prefix[..., :-1] + lower_best + suffix[..., 1:], prefix[..., -1:]], -1)
        choice = scores.argmax(-1, keepdim=True)  # [..., L, 1]: j, or m for c itself
        j = torch.arange(self.m, device=lp.device)
        digits = torch.where(j < choice, last, torch.where(j == choice, lower_arg, free_arg))
        return self._value(digits), self._value(free_arg) >= self.vocab_size
