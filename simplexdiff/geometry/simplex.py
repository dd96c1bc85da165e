"""Helpers for the flat probability simplex ``{p : p_i >= 0, sum_i p_i = 1}``."""

from __future__ import annotations

import torch
from torch import Tensor


def one_hot(ids: Tensor, vocab_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Vertex ``e_k`` of the simplex for each id."""
    return torch.nn.functional.one_hot(ids, vocab_size).to(dtype)


def dirichlet_ones(
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniform draw on the simplex, ``Dirichlet(1, ..., 1)``: normalised standard exponentials."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    e = -torch.log1p(-u)  # Exp(1), finite since u < 1
    return (e / e.sum(-1, keepdim=True)).to(dtype)


def project_to_simplex(p: Tensor) -> Tensor:
    """Clip rounding drift below zero and renormalise."""
    p = p.clamp_min(0)
    return p / p.sum(-1, keepdim=True)
