"""``RunCheckpoint``: a resumable ``last.ckpt`` while training, and a clean stop on a signal.

Lightning's ``ModelCheckpoint`` saves "every n steps" *before* that step's validation, so a run
resumed from it never runs the validation it skipped; and Lightning answers SIGTERM by aborting
whatever runs (a validation included) and exiting with status 0. This callback saves at *safe
points* only: after a step's validation when the step validates, else at the step's end (never
inside gradient accumulation). A run resumed from any of its checkpoints then repeats exactly
what the uninterrupted run did, validations and logged values included (given the deterministic
randomness of ``DiffusionLM`` and ``TextDataModule``).

SIGTERM / SIGINT (a scheduler's preemption, Ctrl-C) finish the current step, its validation and
its logging, save, and stop before the next step (the last step simply ends the fit); with several
processes, a signal to any of them stops all at the same step. SIGTERM as
``SIGTERMException(143)`` (a script that does not catch it exits with 143, not 0), SIGINT as
``KeyboardInterrupt`` (Lightning exits 1; the CLI 130). A second signal stops at once. Files are
written by ``Trainer.save_checkpoint``, atomically (Lightning writes through an ``fsspec``
transaction: a temporary file renamed into place), so ``last.ckpt`` is always complete.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

SIGTERM_STATUS = 128 + signal.SIGTERM


class RunCheckpoint(Checkpoint):
    """``RunCheckpoint(dirpath, every_n_steps=None)``: full checkpoints ``dirpath/last.ckpt``
    every ``every_n_steps`` optimizer steps (``None``: after every validation while fitting),
    and when SIGTERM or SIGINT arrive (then training stops). A ``Checkpoint``, so Lightning runs
    it after the other callbacks (an EMA update of the step is saved with it)."""

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}")
        self.last = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self.received: int | None = None  # the signal that asked to stop
        self._pending = False  # a save is due once this step's validation ends
        self._stop = False  # saved after a signal: stop before the next step

    # --- signals -----------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Replace the SIGTERM / SIGINT handlers for the fit (Lightning restores the ones it
        found when the fit ends)."""
        self.received, self._stop = None, False
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # asked twice: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.received = signum

    # --- safe points -------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.fit_loop._should_accumulate():
            return
        every = self.every_n_steps
        due = every is not None and trainer.global_step % every == 0
        self._pending = due or self._asked(trainer)
        validates = trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)
        if self._pending and not validates:
            self._save_and_stop_if_asked(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if self._pending or self.every_n_steps is None:
            self._save_and_stop_if_asked(trainer)

    def _save_and_stop_if_asked(self, trainer: L.Trainer) -> None:
        self._pending = False
        trainer.save_checkpoint(self.last, weights_only=False)  # full: resumable
        self._stop = self._asked(trainer)

    def _asked(self, trainer: L.Trainer) -> bool:
        """Whether a signal asked to stop, agreed by every process (a scheduler may signal only
        some of them): all save and stop at the same step, or none does."""
        asked = self.received is not None
        if trainer.world_size > 1:
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
            if asked and self.received is None:
                self.received = signal.SIGTERM  # another process was told to stop
        return asked

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        """Stop here, once the previous step's values are logged and its checkpoint saved."""
        if self._stop:
            if self.received == signal.SIGTERM:
                raise SIGTERMException(SIGTERM_STATUS)
            raise KeyboardInterrupt
