"""Conditional examples (prompt, response): the chat template and the rows of token ids.

A corpus is *conditional* when its rows have ``prompt`` and ``response`` strings, used as given,
or ``messages``, a dialogue ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``
rendered by the chat template, one line per message::

    System: {content}\\n        (optional)
    User: {content}\\n
    Assistant: {content}\\n

A dialogue with ``n`` assistant turns is ``n`` examples (as LLaDA's SFT treats a multi-turn
dialogue as ``n`` single-turn pairs): the prompt of turn ``i`` is the rendering of every message
before it followed by ``"Assistant: "``, its response the turn's content (without the newline).

Each example is one row of ``seq_len`` ids, ``encode(prompt) + encode(response)`` padded with
``EOS`` to the end, at least one (LLaDA pads the response with EOS; the padding belongs to the
response, is trained and scored, and teaches the model to stop); ``prompt_len`` is the number of
prompt ids (0 for an empty prompt). An example longer than ``seq_len - 1`` ids does not fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from simplexdiff.data.tokenizer import Tokenizer
from simplexdiff.errors import DataError

ROLES = {"system": "System: ", "user": "User: ", "assistant": "Assistant: "}
"""The chat template: each role's line prefix (each message's line ends with a newline)."""

Example = tuple[str, str]
"""``(prompt, response)``."""


def row_format(columns: Sequence[str]) -> str | None:
    """What a corpus with these columns holds: ``"text"`` (documents, whatever else it has),
    ``"prompt"`` (``prompt`` and ``response`` columns), ``"messages"`` or ``None`` (none)."""
    if "text" in columns:
        return "text"
    if "prompt" in columns and "response" in columns:
        return "prompt"
    return "messages" if "messages" in columns else None


def render_messages(messages: Iterable[Mapping[str, str]]) -> str:
    """The chat template's text of ``messages``: ``"{Role}: {content}\\n"`` each."""
    out = []
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise DataError(
                f"a message is {{'role': {' | '.join(map(repr, ROLES))}, 'content': str}}, "
                f"got {dict(m)!r}"
            )
        out.append(f"{ROLES[role]}{content}\n")
    return "".join(out)


def dialogue_examples(messages: Sequence[Mapping[str, str]]) -> list[Example]:
    """One ``(prompt, response)`` per assistant turn: the prompt renders every earlier message
    and ends with ``"Assistant: "``, the response is the turn's content."""
    out, before = [], ""
    for m in messages:
        if m.get("role") == "assistant":
            out.append((before + ROLES["assistant"], m["content"]))
        before += render_messages([m])  # checks the message
    return out


COLUMNS = {"prompt": ["prompt", "response"], "messages": ["messages"]}
"""The columns each conditional format (``row_format``) reads."""


def rows_examples(fmt: str, rows: Mapping[str, Sequence]) -> list[Example]:
    """The examples of a split's columns ``rows`` (``COLUMNS[fmt]``, lists of values) in format
    ``fmt`` (``row_format``): rows whose prompt or response is not a string (a missing value)
    are left out."""
    if fmt == "prompt":
        return [
            (p, r)
            for p, r in zip(rows["prompt"], rows["response"], strict=True)
            if isinstance(p, str) and isinstance(r, str)
        ]
    return [ex for dialogue in rows["messages"] if dialogue for ex in dialogue_examples(dialogue)]


def encode_examples(
    tokenizer: Tokenizer, examples: Sequence[Example], dtype: np.dtype
) -> dict[str, np.ndarray]:
    """``ids``: every example's prompt ids then response ids, concatenated (``dtype``), and
    ``lengths`` ``[N, 2]`` int64: how many prompt and response ids each has."""
    prompts = tokenizer.encode_many([p for p, _ in examples])
    responses = tokenizer.encode_many([r for _, r in examples])
    parts = [ids for pair in zip(prompts, responses, strict=True) for ids in pair]
    lengths = np.array([[len(p), len(r)] for p, r in zip(prompts, responses, strict=True)])
    return {
        "ids": (np.concatenate(parts) if parts else np.zeros(0, np.int64)).astype(dtype),
        "lengths": lengths.reshape(-1, 2).astype(np.int64),
    }


def pack_examples(
    ids: np.ndarray, lengths: np.ndarray, seq_len: int, eos_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``[M, seq_len]`` (``ids``' dtype) of the examples that fit (``encode_examples``'
    output: prompt ids, response ids, ``EOS`` to the end, at least one), their ``prompt_len``
    ``[M]`` int64 and which examples fit, ``[N]`` bool."""
    total = lengths.sum(1)
    fits = total < seq_len
    starts = np.cumsum(total) - total
    rows = np.full((int(fits.sum()), seq_len), eos_id, dtype=ids.dtype)
    for row, start, n in zip(rows, starts[fits], total[fits], strict=True):
        row[:n] = ids[start : start + n]
    return rows, lengths[fits, 0].copy(), fits
