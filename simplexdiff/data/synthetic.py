"""Synthetic conditional data, generated deterministically from a seed (nothing stored).

* ``instruction_examples``: tiny instructions on one random lowercase word of 3-6 letters,
  ``{"prompt": "reverse: kbdz\\n", "response": "zdbk"}``; the tasks are ``copy``, ``reverse``,
  ``sort`` (its letters in alphabetical order) and ``upper``. A row (prompt + response) has at
  most 22 characters, and a small transformer learns the tasks in minutes of CPU training.
  ``instruct_splits`` is the bundled corpus ``instruct``: 20,000 training examples and 500 each
  for validation and test, whose words never occur in an earlier split (held-out prompts).
* ``reversal_facts``: the people of a reversal-curse benchmark (Berglund et al. 2023), distinct
  ``(name_a, name_b)`` pairs of capitalised names.

Both use Python's ``random.Random(seed)``, whose draws are the same on every platform and version.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Collection

TASKS: dict[str, Callable[[str], str]] = {
    "copy": lambda w: w,
    "reverse": lambda w: w[::-1],
    "sort": lambda w: "".join(sorted(w)),
    "upper": str.upper,
}
INSTRUCT_SIZES = {"train": 20_000, "validation": 500, "test": 500}


def _word(rng: random.Random, low: int, high: int) -> str:
    """Random lowercase letters, ``low`` to ``high`` of them."""
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(low, high)))


def instruction_examples(
    n: int, seed: int, exclude: Collection[str] = frozenset()
) -> list[dict[str, str]]:
    """``n`` examples ``{"prompt": f"{task}: {word}\\n", "response": TASKS[task](word)}``, task
    and word (3-6 letters, never one of ``exclude``) drawn uniformly from ``seed``."""
    rng = random.Random(seed)
    tasks = sorted(TASKS)
    out = []
    for _ in range(n):
        task, word = rng.choice(tasks), _word(rng, 3, 6)
        while word in exclude:
            word = _word(rng, 3, 6)
        out.append({"prompt": f"{task}: {word}\n", "response": TASKS[task](word)})
    return out


def instruction_word(example: dict[str, str]) -> str:
    """The word an ``instruction_examples`` prompt is about."""
    return example["prompt"].split(": ", 1)[1].rstrip("\n")


def instruct_splits(seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """The bundled ``instruct`` corpus: ``INSTRUCT_SIZES`` examples per split from seeds
    ``seed, seed + 1, seed + 2``; validation words are not training words, test words neither
    training nor validation words."""
    splits: dict[str, list[dict[str, str]]] = {}
    seen: set[str] = set()
    for i, (split, n) in enumerate(INSTRUCT_SIZES.items()):
        splits[split] = instruction_examples(n, seed + i, exclude=seen)
        seen.update(map(instruction_word, splits[split]))
    return splits


def reversal_facts(
    num_people: int, seed: int, letters: tuple[int, int] = (4, 6)
) -> list[tuple[str, str]]:
    """``num_people`` pairs ``(name_a, name_b)`` for a reversal-curse benchmark: a model trained
    on facts "A's counterpart is B" is asked the reverse, "B's counterpart is A". Names are
    capitalised random letter strings of ``letters`` (low, high) letters; all ``2 * num_people``
    names are distinct (so each pair, in either direction, names one fact)."""
    rng = random.Random(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < 2 * num_people:
        name = _word(rng, *letters).capitalize()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return list(zip(names[::2], names[1::2], strict=True))
