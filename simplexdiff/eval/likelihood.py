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
from simplexdiff.paths.base import Condition, Denoiser, Path
from simplexdiff.paths.continuous import FLOW_BOUND
from simplexdiff.samplers.sample import prompt_rows

if TYPE_CHECKING:
    from simplexdiff.data.tokenizer import Tokenizer


Prompt = Tensor | list[Tensor] | None
"""A prompt for every row (``[P]``), one per row (``[N, P]``), or a list of ``N`` prompts of any
lengths."""


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
    prompt: Prompt = None,
    decoder: str = "kernel",
) -> dict[str, Any]:
    """Per-token likelihood bound of ``tokens`` (LongTensor ``[N, L]``); with ``prompt``, of
    ``-log p(tokens | prompt)``: each row is scored as the continuation of its prompt (the prompt
    held clean and not scored, as in conditional training), per token of ``tokens``.

    ``model`` is a ``DiffusionLM`` (its ``model`` and ``path`` are used), or a denoiser
    ``(inputs, t) -> logits`` together with ``path``. The denoiser runs in eval mode without
    gradients; sums are float64. ``generator`` (on the model's device) makes the estimate
    reproducible. Returns ``{"nats_per_token", "bpc", "bound", "stderr", "bpc_stderr", "num_t",
    "num_sequences", "num_tokens", "settings", "nats"}`` (``bpc = nats_per_token / ln 2``, bits per
    token: per char for the character tokenizers; ``nats``: each row's total bound, a list).
    ``decode_time``, ``ode_steps``, ``divergence``, ``probes`` and ``decoder`` set the continuous
    paths' bound (``simplexdiff.eval.flow_bound``) and are ignored by the others.

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
    tokens = _ids(tokens, path, "tokens")
    if tokens.ndim != 2 or tokens.numel() == 0:
        raise ConfigError(f"tokens must be a non-empty integer tensor [N, L], got {tokens.shape}")
    if num_t < 1 or batch_size < 1:
        raise ConfigError("num_t and batch_size must be positive")
    num_t = 1 if path.bound == "exact_nll" else int(num_t)
    device = None
    if isinstance(denoiser, nn.Module):
        device = next(denoiser.parameters()).device
    tokens = tokens.to(device)
    groups = _prompt_groups(tokens, prompt, path)

    was_training = getattr(denoiser, "training", None)
    if was_training is not None:
        denoiser.eval()
    est = torch.zeros(len(tokens), dtype=torch.float64, device=device)
    violations = 0.0
    try:
        for index, rows, prompt_len in groups:
            if path.bound == FLOW_BOUND:
                estimates, settings = _flow_estimates(
                    denoiser, path, rows, prompt_len, batch_size, generator, decode_time,
                    ode_steps, divergence, probes, decoder,
                )  # fmt: skip
            else:
                estimates, settings = _time_integral_estimates(
                    denoiser, path, rows, prompt_len, batch_size, generator, num_t
                )
            est[index] = torch.cat(estimates).double()
            violations += settings.pop("prior_support_violations", 0.0) * len(rows)
    finally:
        if was_training is not None:
            denoiser.train(was_training)
    if path.bound == FLOW_BOUND:
        settings["prior_support_violations"] = violations / len(tokens)
    totals = est * tokens.shape[1]  # each row's bound in nats
    nats, stderr = ratio_of_sums(totals, torch.full_like(totals, tokens.shape[1]))
    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    num_bytes = tokenizer.count_bytes(tokens) if tokenizer is not None else None
    return {
        "nats_per_token": nats,
        "bpc": nats / math.log(2),
        "bound": path.bound,
        "stderr": stderr,
        "bpc_stderr": stderr / math.log(2),
        "num_t": settings.get("num_t"),
        "num_sequences": len(tokens),
        "num_tokens": int(tokens.numel()),
        "settings": settings,
        "nats": totals.tolist(),
        **_per_byte(totals, num_bytes),
    }


def _ids(x: Any, path: Path, what: str) -> Tensor:
    """``x`` as a LongTensor of ids in ``[0, V)``, or a ``ConfigError`` naming ``what``."""
    x = torch.as_tensor(x)
    if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ConfigError(f"{what} must be integer token ids, got {x.dtype}")
    if x.numel() and (x.min() < 0 or x.max() >= path.vocab_size):
        raise ConfigError(f"{what}: token ids must lie in [0, {path.vocab_size})")
    return x.long()


def _prompt_groups(tokens: Tensor, prompt: Prompt, path: Path) -> list[tuple[Tensor, Tensor, int]]:
    """``(row indices, prompt + tokens rows, prompt length)`` for each prompt length."""
    n = len(tokens)
    if prompt is None:
        return [(torch.arange(n, device=tokens.device), tokens, 0)]
    rows = [_ids(r, path, "prompt") for r in prompt_rows(prompt, n, tokens.device)]
    groups = []
    for length in sorted({len(r) for r in rows}):
        index = torch.tensor([i for i, r in enumerate(rows) if len(r) == length], dtype=torch.long)
        index = index.to(tokens.device)
        prefix = torch.stack([rows[i] for i in index.tolist()])
        groups.append((index, torch.cat([prefix, tokens[index]], 1), length))
    return groups


def ratio_of_sums(totals: Tensor, counts: Tensor) -> tuple[float, float]:
    """``sum(totals) / sum(counts)`` over rows and its delta-method standard error (a ratio of
    means), ``sqrt(var(totals - r counts) / N) / mean(counts)`` (``nan`` for one row)."""
    counts = counts.double().to(totals.device)
    ratio = float(totals.sum() / counts.sum())
    n = totals.numel()
    spread = (totals - ratio * counts).std() if n > 1 else torch.tensor(float("nan"))
    return ratio, float(spread / math.sqrt(n) / counts.mean())


def _per_byte(nats: Tensor, num_bytes: Tensor | None) -> dict[str, Any]:
    """Bits per byte of per-sequence totals ``nats`` ``[N]`` over their bytes ``num_bytes [N]``."""
    if num_bytes is None:
        return {"bpb": None, "bpb_stderr": None, "num_bytes": None}
    total = int(num_bytes.sum())
    if total == 0:
        return {"bpb": None, "bpb_stderr": None, "num_bytes": 0}
    ratio, stderr = ratio_of_sums(nats, num_bytes)
    return {"bpb": ratio / math.log(2), "bpb_stderr": stderr / math.log(2), "num_bytes": total}


def _prefix(rows: Tensor, prompt_len: int) -> Condition | None:
    """The prompt of ``rows`` as a condition (``None`` without one)."""
    if prompt_len == 0:
        return None
    return Condition.prefix(rows.new_full((len(rows),), prompt_len), rows.shape[1])


def _time_integral_estimates(
    denoiser: Denoiser,
    path: Path,
    tokens: Tensor,
    prompt_len: int,
    batch_size: int,
    generator: torch.Generator | None,
    num_t: int,
) -> tuple[list[Tensor], dict[str, Any]]:
    """Per-sequence bound per free token of a path whose bound is a time integral
    (``sequence_bound``), the first ``prompt_len`` positions held as a prompt."""
    estimates = []
    for x in tokens.split(batch_size):
        cond = _prefix(x, prompt_len)
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64)
        total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for j in range(num_t):
            t, weight = path.bound_times((j + u) / num_t)
            total += weight * path.sequence_bound(denoiser, x, t, generator, cond).double()
        estimates.append(total / num_t)
    return estimates, {"num_t": num_t}


def _flow_estimates(
    denoiser: Denoiser,
    path: Path,
    tokens: Tensor,
    prompt_len: int,
    batch_size: int,
    generator: torch.Generator | None,
    decode_time: float,
    ode_steps: int,
    divergence: str,
    probes: int,
    decoder: str,
) -> tuple[list[Tensor], dict[str, Any]]:
    """Per-sequence dequantized flow bound of a continuous path, per free token."""
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
            _prefix(x, prompt_len),
            decoder,
        )
        estimates.append(nats / (x.shape[1] - prompt_len))
        violations += diagnostics["prior_support_violations"] * x.shape[0]
    return estimates, {
        "decode_time": decode_time,
        "decoder": decoder,
        "ode_steps": ode_steps,
        "probes": probes,
        "divergence": diagnostics["divergence"],
        "prior_support_violations": violations / tokens.shape[0],
    }
