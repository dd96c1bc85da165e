"""A small MLP denoiser for toy targets (the Dirichlet-FM toy of Stark et al. 2024, reused by Fisher
Flow Matching, Davis et al. 2024, and Gumbel-Softmax FM, Tang et al. 2025).

``MLP(vocab_size, max_len)(inputs, t) -> logits [B, L, V]``. ``inputs`` are ids ``[B, L]`` in
``[0, V]`` (id ``V`` is MASK), read as one-hot vectors over the ``V + 1`` input symbols, or float
features ``[B, L, F]`` with ``F <= V + 1`` (a simplex point, zero-padded to ``V + 1``). The logit
of symbol ``k`` at position ``l`` is a sum of two parts, the shape of Bayes' rule
``log p(k | x_t) = log p(k | context) + log q_t(x_t | k) + const``:

* a trunk that flattens the sequence, ``h = W_in vec(x)``, runs residual blocks
  ``h <- h + W_2 silu(W_1 LN(h))`` and reads out all ``L V`` logits through a zero-initialised head:
  the context between positions and the per-position prior (for independent positions, the
  log-marginal ``log pi_l``). By default it reads no time (``trunk_time=False``): a time-dependent
  bias is learned from the training times near each ``t`` only, a time-free one from all of them
  (on the toy targets this halved the error of the prediction at ``t = 0`` for the same steps);
* a per-coordinate term ``g_t(x_{l,k})``: one function of a single coordinate shared by all of
  them, piecewise linear in ``u = logit(x)`` (clamped to ``[-16, 16]``) with ``point_knots``
  knots whose values are a linear function of the time embedding ``tau(t)`` (``TimeEmbedding``).
  For independent positions the exact posterior of every path here is ``log pi_k + G_t(x_k)``
  (Dirichlet: ``alpha(t) log x_k``; uniform: a jump at ``z = k``; linear and Fisher-Rao: a density
  ratio with a support edge in ``x_k``). A trunk of width ``d < L V`` cannot pass ``L V``
  coordinates through to their own logits; ``g`` does, at a gather and a lerp per coordinate.
  For ids only the end knots are read (``x`` is 0 or 1).

Sequences shorter than ``max_len`` are zero-padded (padding reads as "no symbol"); longer ones are
refused. ``time_conditioned = True``: samplers never reuse a prediction across times.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simplexdiff.errors import ConfigError
from simplexdiff.models.blocks import TimeEmbedding

_U_MAX = 16.0
_EPS = 1 / (1 + math.exp(_U_MAX))  # logit(_EPS) = -_U_MAX


class MLP(nn.Module):
    """Flattened-sequence MLP plus a shared per-coordinate term, conditioned on time."""

    time_conditioned = True

    def __init__(
        self,
        vocab_size: int,
        max_len: int = 4,
        d_model: int = 256,
        n_layers: int = 2,
        point_knots: int = 128,
        mlp_ratio: int = 2,
        trunk_time: bool = False,
    ) -> None:
        super().__init__()
        self.options = dict(
            vocab_size=vocab_size,
            max_len=max_len,
            d_model=d_model,
            n_layers=n_layers,
            point_knots=point_knots,
            mlp_ratio=mlp_ratio,
            trunk_time=trunk_time,
        )
        self.trunk_time = trunk_time
        self.vocab_size, self.max_len = vocab_size, max_len
        self.in_dim = vocab_size + 1  # V symbols + MASK
        self.time = TimeEmbedding(d_model)
        self.input = nn.Linear(max_len * self.in_dim, d_model)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(d_model),
                nn.Linear(d_model, mlp_ratio * d_model),
                nn.SiLU(),
                nn.Linear(mlp_ratio * d_model, d_model),
            )
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, max_len * vocab_size)
        self.knots = nn.Linear(d_model, point_knots)  # knot values of g_t
        for layer in (self.head, self.knots):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def config(self) -> dict[str, Any]:
        return {"name": "mlp", **self.options}

    def features(self, inputs: Tensor) -> Tensor:
        """``[B, max_len, V + 1]`` float features: one-hot ids or zero-padded float points."""
        length = inputs.shape[1]
        if length > self.max_len:
            raise ConfigError(
                f"sequence length {length} exceeds the model's max_len {self.max_len}"
            )
        dtype = self.input.weight.dtype
        if inputs.is_floating_point():
            if inputs.shape[-1] > self.in_dim:
                raise ConfigError(
                    f"{inputs.shape[-1]} input features exceed the model's {self.in_dim}"
                )
            x = F.pad(inputs.to(dtype), (0, self.in_dim - inputs.shape[-1]))
        else:
            x = F.one_hot(inputs, self.in_dim).to(dtype)
        return F.pad(x, (0, 0, 0, self.max_len - length))

    def forward(self, inputs: Tensor, t: Tensor) -> Tensor:
        length = inputs.shape[1]
        x = self.features(inputs)
        cond = self.time(t)
        h = self.input(x.flatten(1))
        if self.trunk_time:
            h = h + cond
        for block in self.blocks:
            h = h + block(h)
        logits = self.head(self.norm(h)).view(-1, self.max_len, self.vocab_size)
        return (logits + self.point(x[..., : self.vocab_size], cond, inputs))[:, :length]

    def point(self, x: Tensor, cond: Tensor, inputs: Tensor) -> Tensor:
        """``g_t(x)`` for every coordinate ``x [B, max_len, V]`` (see the module docstring)."""
        table = self.knots(F.silu(cond))  # [B, J]
        if not inputs.is_floating_point():  # one-hot: the end knots (u = -16 and u = 16) only
            return table[:, :1, None] + x * (table[:, -1:, None] - table[:, :1, None])
        j = table.shape[1]
        u = torch.logit(x.flatten(1), eps=_EPS)
        pos = (u + _U_MAX) * ((j - 1) / (2 * _U_MAX))
        i0 = pos.floor().clamp(0, j - 2)
        w = pos - i0
        i0 = i0.long()
        lo, hi = table.gather(1, i0), table.gather(1, i0 + 1)
        return torch.lerp(lo, hi, w).view_as(x)
