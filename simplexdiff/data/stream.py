"""Training batches as an endless, resumable stream of reshuffled passes; evaluation batches
sharded over processes without padding.

Batch ``k`` of rank ``r`` is a pure function of ``(seed, k, r, world)``: pass ``p`` over the ``N``
chunks is the permutation ``numpy.random.default_rng([seed, p]).permutation(N)``, cut into global
batches of ``batch_size * world`` chunks (the ragged tail of a pass is dropped), and rank ``r``
takes the ``r``-th slice of ``batch_size`` of each. Nothing is stateful, so a run resumed at
micro-batch ``k`` (``TrainStream(..., start=k)``) reads exactly the batches the uninterrupted run
read, and ranks of a multi-process run read disjoint chunks without a ``DistributedSampler``.

It is an ``IterableDataset`` yielding whole batches (load it with ``DataLoader(batch_size=None)``);
with ``num_workers = W`` worker ``w`` yields batches ``k = w, w + W, ...`` and the loader's in-order
round robin returns them in order ``k``.

``EvalBatches`` serves a split's first ``num_batches`` batches in order, as ``(k, batch)`` pairs
with the global batch index ``k``; rank ``r`` of ``world`` takes ``k = r, r + world, ...``. Every
batch is scored exactly once whatever the process count (a ``DistributedSampler`` pads ranks with
repeated sequences), and a metric seeded by ``k`` is the same on 1 or ``W`` processes.

Given ``prompt_len`` (a conditional corpus: one prompt length per row), both yield the same rows
as dicts ``{"ids": LongTensor [B, seq_len], "prompt_len": LongTensor [B]}`` instead of tensors.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

Batch = Tensor | dict[str, Tensor]
"""``LongTensor [B, seq_len]``, or ``{"ids": ..., "prompt_len": LongTensor [B]}``."""


def _check_prompt_len(chunks: Tensor, prompt_len: Tensor | None) -> None:
    if prompt_len is not None and prompt_len.shape != (len(chunks),):
        raise ValueError(f"prompt_len {tuple(prompt_len.shape)} does not match {len(chunks)} rows")


def _batch(chunks: Tensor, prompt_len: Tensor | None, rows: Tensor | slice) -> Batch:
    """The ``rows`` of ``chunks`` as int64, with their prompt lengths if there are any."""
    ids = chunks[rows].long()
    return ids if prompt_len is None else {"ids": ids, "prompt_len": prompt_len[rows].long()}


class TrainStream(IterableDataset):
    """Endless batches ``LongTensor [batch_size, seq_len]`` of the rows of ``chunks`` (dicts
    with their ``prompt_len`` if given)."""

    def __init__(
        self,
        chunks: Tensor,
        batch_size: int,
        seed: int = 0,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        prompt_len: Tensor | None = None,
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world} processes")
        self.chunks, self.batch_size, self.seed = chunks, batch_size, seed
        self.start, self.rank, self.world = start, rank, world
        _check_prompt_len(chunks, prompt_len)
        self.prompt_len = prompt_len
        self.batches_per_pass = len(chunks) // (batch_size * world)
        self._pass, self._perm = -1, np.empty(0, dtype=np.int64)
        if self.batches_per_pass == 0:
            raise ValueError(
                f"{len(chunks)} chunks do not fill one batch of {batch_size} x {world} processes"
            )

    def indices(self, k: int) -> np.ndarray:
        """Row indices of this rank's micro-batch ``k``."""
        p, j = divmod(k, self.batches_per_pass)
        if p != self._pass:  # one permutation per pass, not per batch
            self._pass, self._perm = (
                p,
                np.random.default_rng([self.seed, p]).permutation(len(self.chunks)),
            )
        first = (j * self.world + self.rank) * self.batch_size
        return self._perm[first : first + self.batch_size]

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        k = self.start + worker
        while True:
            yield _batch(self.chunks, self.prompt_len, torch.from_numpy(self.indices(k)))
            k += workers


class EvalBatches(IterableDataset):
    """``(k, LongTensor [<= batch_size, seq_len])`` for this rank's global batches ``k`` (dicts
    with their ``prompt_len`` if given)."""

    def __init__(
        self,
        chunks: Tensor,
        batch_size: int,
        num_batches: int | None = None,
        rank: int = 0,
        world: int = 1,
        prompt_len: Tensor | None = None,
    ) -> None:
        _check_prompt_len(chunks, prompt_len)
        total = -(-len(chunks) // batch_size)
        self.chunks, self.batch_size = chunks, batch_size
        self.num_batches = total if num_batches is None else min(num_batches, total)
        self.rank, self.world, self.prompt_len = rank, world, prompt_len

    def __len__(self) -> int:
        return max(len(range(self.rank, self.num_batches, self.world)), self.num_batches > 0)

    def __iter__(self) -> Iterator[tuple[int, Batch]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        ks = range(self.rank, self.num_batches, self.world)
        if not ks and self.num_batches and worker == 0:
            # fewer batches than processes: an empty batch (k = -1) so that this process still
            # runs the evaluation and meets the others where metrics synchronise
            yield -1, _batch(self.chunks, self.prompt_len, slice(0, 0))
        for k in ks[worker::workers]:
            rows = slice(k * self.batch_size, (k + 1) * self.batch_size)
            yield k, _batch(self.chunks, self.prompt_len, rows)
