"""Transformer pieces shared by the bidirectional DiT and the causal baseline.

A pre-norm block whose layer norms are modulated by a conditioning vector (adaLN-Zero, Peebles & Xie
2023, *Scalable Diffusion Models with Transformers*): ``x + g * f(LN(x) * (1 + s) + b)`` with
``(b, s, g)`` a linear function of the condition, initialised to zero so each block starts as the
identity. Without a condition (``cond_dim=None``) it is a plain pre-norm block.
Attention is ``torch.nn.functional.scaled_dot_product_attention`` (flash/memory-efficient kernels
where the device has them; no hard dependency on flash-attn). Positions enter as rotary embeddings of
queries and keys (``Rotary``: ``"rotary"``, the default, or ``"rotary_halves"``) or as learned
absolute vectors added to the input (``"learned"``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simplexdiff.errors import ConfigError


class TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t in [0, 1]`` and an MLP: angles ``scale * t * f`` for ``n_freq / 2``
    frequencies ``f`` spaced geometrically from 1 down to 1/1000. ``scale=1000`` (default) is
    DiT's (``t`` in 1000 steps); SEDD and MDLM embed the noise level ``sigma`` (about 0 to 9),
    which ``scale=10`` resembles."""

    def __init__(self, dim: int, n_freq: int = 128, scale: float = 1000.0) -> None:
        super().__init__()
        self.n_freq, self.scale = n_freq, scale
        self.mlp = nn.Sequential(nn.Linear(n_freq, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.n_freq // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
        angles = self.scale * t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], -1))


POSITIONS = ("rotary", "rotary_halves", "learned")


class Rope(NamedTuple):
    """The rotary angles of one sequence length, float32 ``[L, head_dim / 2]``, and how channels
    pair up: with ``turn`` (``cos + j sin``, complex, made once per forward) channel ``2i`` with
    ``2i + 1`` (RoFormer's layout); without, channel ``i`` with ``i + D/2`` (GPT-NeoX's)."""

    cos: Tensor
    sin: Tensor
    turn: Tensor | None = None


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021, *RoFormer*), as in the text backbones of SEDD,
    MDLM, Duo, RDLM and LLaDA. Each channel pair ``(a, b)`` of a head's query and key at position
    ``l`` is the complex number ``a + j b``, multiplied by ``exp(j l base^(-2i/D))`` for the
    ``i``-th pair; a score ``<R_l q, R_m k>`` then depends on the positions only through ``l - m``.
    Pairs are adjacent channels ``(2i, 2i + 1)`` as in RoFormer (one complex product, close to
    the cost of learned positions; ``benchmarks/throughput.py`` times each kind), or with
    ``halves=True`` the channels ``(i, i + D/2)`` (slower on a CPU: the halves are copied; what
    ``"rotary"`` meant in checkpoints before format 2). The two layouts are the same family of
    models up to a fixed permutation of the query and key channels.
    Angles are made in float32 on every call (no buffer: nothing to cast under
    ``model.to(bf16)`` and nothing in the state dict)."""

    def __init__(self, head_dim: int, base: float = 10_000.0, halves: bool = False) -> None:
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"rotary positions need an even head size, got {head_dim}")
        self.head_dim, self.base, self.halves = head_dim, base, halves

    def forward(self, length: int, device: torch.device) -> Rope:
        half = self.head_dim // 2
        inv_freq = self.base ** (-torch.arange(half, device=device, dtype=torch.float32) / half)
        angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq
        cos, sin = angles.cos(), angles.sin()
        return Rope(cos, sin, None if self.halves else torch.complex(cos, sin))


def rotate(x: Tensor, rope: Rope) -> Tensor:
    """Queries or keys ``[..., L, D]`` (e.g. ``[B, H, L, D]``, or both stacked) rotated by
    ``rope``, computed in float32 (or wider) and returned in ``x.dtype``."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    if rope.turn is None:
        x1, x2 = wide.chunk(2, -1)
        turned = torch.cat([x1 * rope.cos - x2 * rope.sin, x2 * rope.cos + x1 * rope.sin], -1)
    else:  # adjacent pairs as complex numbers: one fused product (no copies of the halves)
        pairs = torch.view_as_complex(wide.unflatten(-1, (-1, 2)))
        turned = torch.view_as_real(pairs * rope.turn).flatten(-2)
    return turned.to(x.dtype)


class Block(nn.Module):
    """Attention + MLP, each behind an (optionally modulated) layer norm and a residual; ``dropout``
    acts on each branch's output before it joins the residual (as in MDLM's DiT blocks)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        cond_dim: int | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.causal = n_heads, causal
        self.drop = nn.Dropout(dropout)
        affine = cond_dim is None
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=affine)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=affine)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_ratio * d_model, d_model),
        )
        self.modulation = None
        if cond_dim is not None:
            self.modulation = nn.Linear(cond_dim, 6 * d_model)
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def attention(self, x: Tensor, rope: Rope | None) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.n_heads, d // self.n_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # [3, B, H, L, D]
        # queries and keys rotated in one call: the same numbers as one at a time, half the kernels
        q, k = rotate(qkv[:2], rope) if rope is not None else qkv[:2]
        v = qkv[2]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))

    def forward(self, x: Tensor, cond: Tensor | None = None, rope: Rope | None = None) -> Tensor:
        if self.modulation is None:
            x = x + self.attention(self.norm1(x), rope)
            return x + self.drop(self.mlp(self.norm2(x)))
        b1, s1, g1, b2, s2, g2 = self.modulation(F.silu(cond))[:, None].chunk(6, -1)
        x = x + g1 * self.attention(self.norm1(x) * (1 + s1) + b1, rope)
        return x + g2 * self.drop(self.mlp(self.norm2(x) * (1 + s2) + b2))


class TokenEmbedding(nn.Module):
    """One embedding matrix read two ways: ids ``[B, L]`` (lookup) or simplex points ``[B, L, V]``
    (``p @ E[:V]``). Discrete states are vertices, so both families share it (DESIGN.md, section 2)."""

    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_embeddings, dim) * dim**-0.5)

    def forward(self, inputs: Tensor) -> Tensor:
        if inputs.is_floating_point():
            v = inputs.shape[-1]
            return inputs.to(self.weight.dtype) @ self.weight[:v]
        return F.embedding(inputs, self.weight)


class Readout(nn.Linear):
    """The ``V``-way output layer, ``logits = h W^T + b``: ``W`` its own ``[V, d]`` matrix,
    zero-initialised as in DiT's final layer (every prediction starts uniform), or, tied to a
    ``TokenEmbedding``, that embedding's first ``V`` rows (weight tying, Press & Wolf 2017, as in
    GPT-2). The bias is always its own and starts at zero. Built as ``nn.Linear`` (same parameter
    names, same random draws at construction, so an untied model is built exactly as before the
    option); a tied head stores only ``bias``."""

    def __init__(self, d_model: int, vocab_size: int, tied_to: TokenEmbedding | None = None):
        super().__init__(d_model, vocab_size)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)
        self._tied = (tied_to,)  # in a tuple: not registered twice as a submodule
        if tied_to is not None:
            del self.weight
            self.weight = None

    def forward(self, h: Tensor) -> Tensor:
        tied = self._tied[0]
        weight = self.weight if tied is None else tied.weight[: self.out_features]
        return F.linear(h, weight, self.bias)


class SequenceInput(nn.Module):
    """What both backbones read first: ``TokenEmbedding`` with ``V + 1`` rows (id ``V`` is MASK or
    BOS) and the positions, refusing sequences longer than ``max_len``. ``positions="rotary"``
    (default; ``"rotary_halves"``: half-split channel pairs) returns the rotary angles for the
    attention (``Rotary``) and adds nothing to the input; ``"learned"`` adds learned absolute
    vectors (init std 0.02, parameter ``pos``) and returns no angles. Returns
    ``(embeddings [B, L, d], rope or None)``."""

    def __init__(
        self, vocab_size: int, d_model: int, max_len: int, positions: str, n_heads: int
    ) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ConfigError(f"unknown positions {positions!r}; choose one of {POSITIONS}")
        if d_model % n_heads:
            raise ConfigError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.max_len = max_len
        self.embed = TokenEmbedding(vocab_size + 1, d_model)
        rotary = positions.startswith("rotary")
        halves = positions == "rotary_halves"
        self.rotary = Rotary(d_model // n_heads, halves=halves) if rotary else None
        if positions == "learned":
            self.pos = nn.Parameter(torch.zeros(max_len, d_model))
            nn.init.normal_(self.pos, std=0.02)

    def forward(self, inputs: Tensor) -> tuple[Tensor, Rope | None]:
        length = inputs.shape[1]
        if length > self.max_len:
            raise ConfigError(
                f"sequence length {length} exceeds the model's max_len {self.max_len}"
            )
        x = self.embed(inputs)
        if self.rotary is not None:
            return x, self.rotary(length, x.device)
        return x + self.pos[:length], None
