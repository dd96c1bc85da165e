"""Conditional evaluation of a model trained on prompt / response rows (``TextDataModule`` on
conditional data): answers to prompts, exact-match accuracy, multiple choice by likelihood.

Rows are laid out as in training: the prompt's ids, the response's ids, then ``EOS`` to the row's
``length`` (the trained sequence length by default). A response is generated into the positions
after the prompt and read up to its first ``EOS``; a choice is scored as the whole response it
makes, its ids and the ``EOS`` padding (the model's probability that the answer is exactly this
text and then stops), with the path's strongest conditional bound on ``-log p(response | prompt)``
(``simplexdiff.eval.likelihood(..., prompt=...)``; LLaDA scores multiple choice by its
conditional likelihood bound the same way).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from simplexdiff.errors import ConfigError
from simplexdiff.eval.likelihood import likelihood, ratio_of_sums


def _eos(lm: Any) -> int:
    tokenizer = lm.tokenizer
    if tokenizer is None or tokenizer.eos_id is None:
        raise ConfigError("conditional evaluation needs a tokenizer with an end-of-text symbol")
    return tokenizer.eos_id


def complete(
    lm: Any,
    prompts: list[str],
    length: int | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    **options: Any,
) -> list[str]:
    """The response to each prompt: generated after it in rows of ``length`` (default: the
    trained sequence length) with ``steps`` steps (default: one per free position of the longest
    response, what autoregressive sampling needs), decoded up to the first ``EOS``. ``options``
    go to ``generate`` (``cfg``, ``temperature``, ``decode``, the sampler's own)."""
    _eos(lm)
    length = length or lm.trained_length()
    ids = [lm.tokenizer.encode_tensor(p) for p in prompts]
    if ids and max(map(len, ids)) >= length:
        raise ConfigError(f"a prompt of {max(map(len, ids))} tokens leaves no room in {length}")
    answers: list[str] = []
    for start in range(0, len(ids), batch_size):
        rows = ids[start : start + batch_size]
        free = length - min(map(len, rows))
        out = lm.generate(
            len(rows), length, steps or free, sampler, prompt=rows, generator=generator, **options
        )
        answers += [
            lm.tokenizer.decode(row[len(p) :], until_eos=True)
            for row, p in zip(out, rows, strict=True)
        ]
    return answers


def exact_match(lm: Any, examples: list[tuple[str, str]], **options: Any) -> dict[str, Any]:
    """Share of ``(prompt, response)`` examples whose generated response (``complete``) equals
    the reference exactly: ``{"accuracy", "num", "answers"}``."""
    if not examples:
        raise ConfigError("exact match needs at least one example")
    answers = complete(lm, [p for p, _ in examples], **options)
    hits = [a == r for a, (_, r) in zip(answers, examples, strict=True)]
    return {"accuracy": sum(hits) / len(hits), "num": len(hits), "answers": answers}


def response_rows(lm: Any, prompt: Tensor, responses: list[str], length: int) -> Tensor:
    """``[K, length - P]``: each response's ids padded with ``EOS`` (at least one)."""
    eos = _eos(lm)
    room = length - len(prompt)
    rows = torch.full((len(responses), room), eos, dtype=torch.long)
    for row, text in zip(rows, responses, strict=True):
        ids = lm.tokenizer.encode_tensor(text)
        if len(ids) >= room:
            raise ConfigError(
                f"a choice of {len(ids)} tokens does not fit after the prompt of {len(prompt)} "
                f"in rows of {length} (with its end-of-text symbol)"
            )
        row[: len(ids)] = ids
    return rows


def score_choices(
    lm: Any,
    prompt: str,
    choices: list[str],
    length: int | None = None,
    num_t: int = 64,
    generator: torch.Generator | None = None,
    **bound_options: Any,
) -> dict[str, Any]:
    """Multiple choice by likelihood: the bound on ``-log p(choice | prompt)`` (nats, the whole
    response: the choice's ids and its ``EOS`` padding) of each choice, and the most likely.
    Returns ``{"nats": [K], "choice": index, "bound"}``; ``bound_options`` go to
    ``likelihood`` (``ode_steps``, ``decode_time``, ``probes``)."""
    if not choices:
        raise ConfigError("score_choices needs at least one choice")
    length = length or lm.trained_length()
    ids = lm.tokenizer.encode_tensor(prompt)
    rows = response_rows(lm, ids, choices, length)
    stats = likelihood(lm, rows, prompt=ids, num_t=num_t, generator=generator, **bound_options)
    nats = stats["nats"]
    return {
        "nats": nats,
        "choice": min(range(len(nats)), key=nats.__getitem__),
        "bound": stats["bound"],
    }


def response_likelihood(
    lm: Any, rows: Tensor, prompt_len: Tensor, **options: Any
) -> dict[str, Any]:
    """The bound on ``-log p(response | prompt)`` per response token of conditional rows laid
    out as in training (``TextDataModule.compact_split`` and ``prompt_lengths`` of a conditional
    corpus: prompt ids, response ids, ``EOS`` to the row's end): ``likelihood`` of each row's
    positions after its prompt, rows grouped by prompt length, the per-row totals pooled (a
    ratio of sums, with its delta-method standard error). ``options`` go to ``likelihood``.
    Returns ``likelihood``'s keys but the per-byte ones; ``settings`` are the first group's,
    with ``prior_support_violations`` (continuous paths) the share over all rows."""
    rows, prompt_len = rows.long(), prompt_len.long().to(rows.device)
    totals = torch.zeros(len(rows), dtype=torch.float64)
    groups = []
    for p in sorted(set(prompt_len.tolist())):
        if p >= rows.shape[1]:
            raise ConfigError(
                f"a prompt of {p} tokens leaves no response in rows of {rows.shape[1]}"
            )
        index = (prompt_len == p).nonzero().squeeze(1)
        res = likelihood(lm, rows[index, p:], prompt=rows[index, :p] if p else None, **options)
        totals[index.cpu()] = torch.tensor(res["nats"], dtype=torch.float64)
        groups.append((len(index), res))
    counts = (rows.shape[1] - prompt_len).double().cpu()
    nats, stderr = ratio_of_sums(totals, counts)
    settings = dict(groups[0][1]["settings"])
    if "prior_support_violations" in settings:
        share = sum(n * r["settings"]["prior_support_violations"] for n, r in groups) / len(rows)
        settings["prior_support_violations"] = share
    return {
        "nats_per_token": nats,
        "bpc": nats / math.log(2),
        "bound": groups[0][1]["bound"],
        "stderr": stderr,
        "bpc_stderr": stderr / math.log(2),
        "num_t": groups[0][1]["num_t"],
        "num_sequences": len(rows),
        "num_tokens": int(counts.sum()),
        "settings": settings,
        "nats": totals.tolist(),
    }
