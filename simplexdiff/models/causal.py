"""Causal transformer for the autoregressive baseline, built from the DiT's blocks.

``CausalTransformer(vocab_size, ...)(inputs, t) -> logits [B, L, V]``: the same ``Block`` as the DiT
without time conditioning (``cond_dim=None``: plain pre-norm blocks with affine layer norms) and with
causal attention, the same ``V + 1``-row token embedding (id ``V`` is BOS), the same positions
(rotary by default) and the same ``V``-way head (``Readout``: tied to the token embedding by
default; with ``tie_weights=False`` a zero-initialised matrix of its own). ``t`` is accepted and
ignored, so the sampler and the paths call every backbone alike.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from simplexdiff.models.blocks import Block, Readout, SequenceInput


class CausalTransformer(nn.Module):
    """Decoder-only transformer: position ``l`` sees inputs ``<= l`` only."""

    causal = True
    time_conditioned = False  # reads no time: samplers may reuse its predictions

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 4,
        max_len: int = 256,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        positions: str = "rotary",
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        self.options = dict(
            vocab_size=vocab_size,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            max_len=max_len,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            positions=positions,
            tie_weights=tie_weights,
        )
        self.vocab_size, self.max_len = vocab_size, max_len
        self.input = SequenceInput(vocab_size, d_model, max_len, positions, n_heads)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, mlp_ratio, dropout, cond_dim=None, causal=True)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = Readout(d_model, vocab_size, self.input.embed if tie_weights else None)

    def config(self) -> dict[str, Any]:
        return {"name": "causal", **self.options}

    def forward(self, inputs: Tensor, t: Tensor | None = None) -> Tensor:
        x, rope = self.input(inputs)
        for block in self.blocks:
            x = block(x, rope=rope)
        return self.head(self.norm(x))
