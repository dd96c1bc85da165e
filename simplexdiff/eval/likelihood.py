"""Likelihood of token sequences under a trained model: the strongest valid bound each path has.

* autoregressive: the exact NLL (one pass; ``num_t`` does not apply and is reported as 1);
* masked / uniform: the continuous-time NELBO, ``prior term + int_0^1 E_q l(t, z_t) dt``, estimated
  per sequence on a stratified grid of ``num_t`` points ``v_j = (j + u) / num_t`` (one uniform
  ``u`` per sequence, one draw of ``z_t`` per point) mapped to times by the path's ``bound_times``
  (``t = 1 - (1 - v)^2`` with weight ``dt/dv``: the integrand's variance diverges at ``t = 1``
  otherwise): unbiased for the NELBO, and an upper bound on the NLL in expectation;
* continuous paths: the dequantized flow bound of ``simplexdiff.eval.flow_bound`` (the discrete
  model it bounds is written down there): one dequantizing draw per sequence, the ODE integrated
  backwards with ``ode_steps`` midpoint steps from ``decode_time``, the divergence exact for
  ``L * V <= 64`` and by Hutchinson (``probes`` tangent Rademacher probes) above. ``num_t`` does
  not apply (reported as ``None``).

``stderr`` is the standard error of the mean over sequences of the per-sequence estimates: it
covers the Monte-Carlo noise of the times and noisy states *and* the spread of the sequences
themselves (for the exact NLL only the latter), i.e. it is the error bar of the estimate of the
model's expected per-token bound on data like ``tokens``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from simplexdiff.errors import ConfigError
from simplexdiff.eval.flow_bound import flow_bound
from simplexdiff.paths.base import Denoiser, Path
from simplexdiff.paths.continuous import FLOW_BOUND

if TYPE_CHECKING:
    from simplexdiff.data.tokenizer import Tokenizer


@torch.no_grad()
def likelihood(
    model: Any,
    tokens: Tensor,
    path: Path | None = None,
    num_t: int = 32,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    decode_time: float = 0.5,
    ode_steps: int = 32,
    divergence: str = "auto",
    probes: int = 1,
    tokenizer: Tokenizer | None = None,
) -> dict[str, Any]:
    """Per-token likelihood bound of ``tokens`` (LongTensor ``[N, L]``).

    ``model`` is a ``DiffusionLM`` (its ``model`` and ``path`` are used), or a denoiser
    ``(inputs, t) -> logits`` together with ``path``. The denoiser runs in eval mode without
    gradients; sums are float64. ``generator`` (on the model's device) makes the estimate
    reproducible. Returns ``{"nats_per_token", "bpc", "bound", "stderr", "bpc_stderr", "num_t",
    "num_sequences", "num_tokens", "settings"}`` (``bpc = nats_per_token / ln 2``, bits per token:
    per char for the character tokenizers). ``decode_time``, ``ode_steps``, ``divergence`` and
    ``probes`` set the continuous paths' bound and are ignored by the others.

    Bits per byte, ``"bpb"`` (``None`` without a tokenizer): the total bound of ``tokens`` over
    the UTF-8 bytes of their text, ``tokenizer.count_bytes(tokens)`` (``tokenizer`` defaults to
    the model's); ``"bpb_stderr"`` is the ratio estimator's standard error, ``"num_bytes"`` the
    byte count.
    """
    denoiser: Denoiser
    if path is None:
        denoiser, path = model.model, model.path
    else:
        denoiser = model
    if path.bound is None:
        raise ConfigError(f"no likelihood bound for {path.family} path {path.registry_name!r} yet")
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32) or tokens.numel() == 0:
        raise ConfigError(f"tokens must be a non-empty integer tensor [N, L], got {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= path.vocab_size:
        raise ConfigError(f"token ids must lie in [0, {path.vocab_size})")
    if num_t < 1 or batch_size < 1:
        raise ConfigError("num_t and batch_size must be positive")
    num_t = 1 if path.bound == "exact_nll" else int(num_t)
    device = None
    if isinstance(denoiser, nn.Module):
        device = next(denoiser.parameters()).device
    tokens = tokens.long().to(device)

    was_training = getattr(denoiser, "training", None)
    if was_training is not None:
        denoiser.eval()
    try:
        if path.bound == FLOW_BOUND:
            estimates, settings = _flow_estimates(
                denoiser,
                path,
                tokens,
                batch_size,
                generator,
                decode_time,
                ode_steps,
                divergence,
                probes,
            )
        else:
            estimates, settings = _time_integral_estimates(
                denoiser, path, tokens, batch_size, generator, num_t
            )
    finally:
        if was_training is not None:
            denoiser.train(was_training)
    est = torch.cat(estimates)
    n = est.numel()
    nats = float(est.mean())
    stderr = float(est.std() / math.sqrt(n)) if n > 1 else float("nan")
    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    num_bytes = tokenizer.count_bytes(tokens) if tokenizer is not None else None
    per_byte = _per_byte(est.double() * tokens.shape[1], num_bytes)
    return {
        "nats_per_token": nats,
        "bpc": nats / math.log(2),
        "bound": path.bound,
        "stderr": stderr,
        "bpc_stderr": stderr / math.log(2),
        "num_t": settings.get("num_t"),
        "num_sequences": n,
        "num_tokens": int(tokens.numel()),
        "settings": settings,
        **per_byte,
    }


def _per_byte(nats: Tensor, num_bytes: Tensor | None) -> dict[str, Any]:
    """Bits per byte of per-sequence totals ``nats`` ``[N]`` over their bytes ``num_bytes``
    ``[N]``: ``sum(nats) / sum(bytes) / ln 2`` with the delta-method standard error of a ratio of
    means, ``sqrt(var(nats - r bytes) / N) / mean(bytes)``."""
    if num_bytes is None:
        return {"bpb": None, "bpb_stderr": None, "num_bytes": None}
    num_bytes = num_bytes.double().to(nats.device)
    total = float(num_bytes.sum())
    if total == 0:
        return {"bpb": None, "bpb_stderr": None, "num_bytes": 0}
    ratio = float(nats.sum()) / total
    n = nats.numel()
    spread = (nats - ratio * num_bytes).std() if n > 1 else torch.tensor(float("nan"))
    stderr = float(spread / math.sqrt(n) / num_bytes.mean())
    return {
        "bpb": ratio / math.log(2),
        "bpb_stderr": stderr / math.log(2),
        "num_bytes": int(total),
    }


def _time_integral_estimates(
    denoiser: Denoiser,
    path: Path,
    tokens: Tensor,
    batch_size: int,
    generator: torch.Generator | None,
    num_t: int,
) -> tuple[list[Tensor], dict[str, Any]]:
    """Per-sequence bound of a path whose bound is a time integral (``sequence_bound``)."""
    estimates = []
    for x in tokens.split(batch_size):
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64)
        total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for j in range(num_t):
            t, weight = path.bound_times((j + u) / num_t)
            total += weight * path.sequence_bound(denoiser, x, t, generator).double()
        estimates.append(total / num_t)
    return estimates, {"num_t": num_t}


def _flow_estimates(
    denoiser: Denoiser,
    path: Path,
    tokens: Tensor,
    batch_size: int,
    generator: torch.Generator | None,
    decode_time: float,
    ode_steps: int,
    divergence: str,
    probes: int,
) -> tuple[list[Tensor], dict[str, Any]]:
    """Per-sequence dequantized flow bound of a continuous path, per token."""
    estimates, violations = [], 0.0
    for x in tokens.split(batch_size):
        nats, diagnostics = flow_bound(
            denoiser,
            path,  # type: ignore[arg-type]
            x,
            decode_time,
            ode_steps,
            divergence,
            probes,
            generator,
        )
        estimates.append(nats / x.shape[1])
        violations += diagnostics["prior_support_violations"] * x.shape[0]
    return estimates, {
        "decode_time": decode_time,
        "ode_steps": ode_steps,
        "probes": probes,
        "divergence": diagnostics["divergence"],
        "prior_support_violations": violations / tokens.shape[0],
    }
