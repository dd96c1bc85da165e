"""Denoiser backbones, built by name: ``MODELS.build("dit", vocab_size=27, d_model=256, ...)``."""

from __future__ import annotations

from typing import Any

from torch import nn

from simplexdiff.models.causal import CausalTransformer
from simplexdiff.models.dit import DiT
from simplexdiff.models.mlp import MLP
from simplexdiff.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
MODELS.register("dit")(DiT)
MODELS.register("causal")(CausalTransformer)
MODELS.register("mlp")(MLP)


def build(name: str, **kwargs: Any) -> nn.Module:
    return MODELS.build(name, **kwargs)


__all__ = ["MODELS", "MLP", "CausalTransformer", "DiT", "build"]
